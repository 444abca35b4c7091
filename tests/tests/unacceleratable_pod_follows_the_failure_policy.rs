//! A pod meshaccel cannot accelerate: with `failurePolicy: open` ADD still succeeds with
//! bridge's result and the log says why; with `closed` ADD fails with code 100. Either way
//! nothing of the attachment is left (no link, no pin directory, no record).
use std::fs;

use meshaccel_node::bpf;
use meshaccel_node::pins::AttachmentId;
use meshaccel_node::sockmap;
use meshaccel_tests::cni::{without_empty_dns, Invocation, RuntimeConf};
use meshaccel_tests::{Chain, Pod, TestNode};
use serde_json::{json, Value};

const SETUP_FAILED: u32 = 100;

fn conf(node: &TestNode, policy: &str) -> Value {
    let mut c = node.meshaccel_conf();
    c["failurePolicy"] = json!(policy);
    c
}

fn add(node: &TestNode, conf: &Value, rt: &RuntimeConf, pod: &Pod) -> Invocation {
    node.call_meshaccel("ADD", conf, rt, Some(pod.result())).unwrap()
}

/// The runtime conf of a bridged pod, with a UID kubelet made no cgroup for.
fn without_cgroup(pod: &Pod) -> RuntimeConf {
    let mut rt = pod.runtime_conf().clone();
    for (_, uid) in rt.args.iter_mut().filter(|(k, _)| k == "K8S_POD_UID") {
        uid.replace_range(..8, "00000000");
    }
    rt
}

/// `K8S_POD_UID` left out of `CNI_ARGS` (a runtime other than kubelet's).
fn without_uid(pod: &Pod) -> RuntimeConf {
    let mut rt = pod.runtime_conf().clone();
    rt.args.retain(|(k, _)| k != "K8S_POD_UID");
    rt
}

fn assert_nothing_attached(node: &TestNode, rt: &RuntimeConf) {
    let id = AttachmentId::new(&rt.container_id, &rt.ifname).unwrap();
    assert!(bpf::pod_link(node.pins(), &id).unwrap().is_none(), "link pinned");
    assert!(bpf::list_pods(node.pins()).unwrap().is_empty(), "pin directories: {:?}", bpf::list_pods(node.pins()));
    assert_eq!(sockmap::records(node.state_dir()).list().unwrap(), vec![], "records left");
    let files: Vec<_> = node.plugin_footprint().into_iter().filter(|p| p.starts_with(node.state_dir())).collect();
    assert!(files.iter().all(|p| p.is_dir()), "files in the state dir: {files:?}");
}

fn passes_through(node: &TestNode, pod: &Pod, rt: &RuntimeConf, why: &str) {
    let inv = add(node, &conf(node, "open"), rt, pod);
    assert!(inv.success(), "{inv:?}");
    assert_eq!(inv.json().unwrap(), without_empty_dns(pod.result()), "prevResult must pass through");
    let log = node.plugin_log();
    let line =
        log.lines().find(|l| l.contains("cannot accelerate this pod")).unwrap_or_else(|| panic!("no log line: {log}"));
    assert!(line.contains(why), "the log line should say {why:?}: {line}");
    assert_nothing_attached(node, rt);
}

fn fails_closed(node: &TestNode, pod: &Pod, rt: &RuntimeConf, why: &str) {
    add(node, &conf(node, "closed"), rt, pod).expect_error(SETUP_FAILED, why).unwrap();
    assert_nothing_attached(node, rt);
}

#[test]
fn open_policy_passes_a_pod_without_cgroup_through() {
    let node = TestNode::new().unwrap();
    let pod = node.pod("nocg").chain(Chain::BridgeOnly).start().unwrap();
    let rt = without_cgroup(&pod);
    passes_through(&node, &pod, &rt, "no cgroup for pod 00000000-");
}

#[test]
fn open_policy_passes_a_pod_without_uid_through() {
    let node = TestNode::new().unwrap();
    let pod = node.pod("nouid").chain(Chain::BridgeOnly).start().unwrap();
    passes_through(&node, &pod, &without_uid(&pod), "no K8S_POD_UID");
}

#[test]
fn closed_policy_fails_a_pod_without_cgroup() {
    let node = TestNode::new().unwrap();
    let pod = node.pod("nocg").chain(Chain::BridgeOnly).start().unwrap();
    fails_closed(&node, &pod, &without_cgroup(&pod), "no cgroup for pod 00000000-");
}

#[test]
fn closed_policy_fails_a_pod_without_uid() {
    let node = TestNode::new().unwrap();
    let pod = node.pod("nouid").chain(Chain::BridgeOnly).start().unwrap();
    fails_closed(&node, &pod, &without_uid(&pod), "no K8S_POD_UID");
}

/// The link is attached before the record is written; when the record cannot be written,
/// ADD takes the link back, whatever the policy.
#[test]
fn a_link_whose_record_cannot_be_written_is_rolled_back() {
    let node = TestNode::new().unwrap();
    let pod = node.pod("norecord").chain(Chain::BridgeOnly).start().unwrap();
    let blocker = node.scratch_dir().unwrap().join("a-file");
    fs::write(&blocker, "not a directory").unwrap();
    for policy in ["closed", "open"] {
        let mut c = conf(&node, policy);
        c["stateDir"] = json!(blocker.join("state"));
        let inv = add(&node, &c, pod.runtime_conf(), &pod);
        match policy {
            "closed" => drop(inv.expect_error(SETUP_FAILED, "save attachment state").unwrap()),
            _ => assert_eq!(inv.json().unwrap(), without_empty_dns(pod.result()), "{inv:?}"),
        }
        assert!(bpf::is_loaded(node.pins()), "the programs loaded: ADD got as far as attaching");
        assert_nothing_attached(&node, pod.runtime_conf());
    }
    assert!(node.plugin_log().contains("save attachment state"), "{}", node.plugin_log());
}
