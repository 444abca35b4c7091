//! The plugin's CNI operations through the protocol itself (env + stdin of the real binary,
//! prevResult from the real `bridge`), checked against the kernel's and the bpffs' view.
//!
//! Each pod is made by the bridge-only chain; meshaccel is then called on its own as the
//! accelerated chain would call it, so every test sees exactly what bridge handed over.
use std::fs;

use meshaccel_node::bpf;
use meshaccel_node::pins::AttachmentId;
use meshaccel_node::sockmap;
use meshaccel_tests::cni::{invoke, without_empty_dns, Invocation, NetworkList, RuntimeConf};
use meshaccel_tests::{binaries, run, Chain, Pod, TestNode};
use serde_json::{json, Value};

/// The plugin-specific code CHECK answers with when the attachment is not what ADD set up.
const CHECK_FAILED: u32 = 102;

fn bridged_pod(node: &TestNode, name: &str) -> Pod {
    node.pod(name).chain(Chain::BridgeOnly).start().unwrap()
}

fn attachment(pod: &Pod) -> AttachmentId {
    AttachmentId::new(&pod.runtime_conf().container_id, &pod.runtime_conf().ifname).unwrap()
}

fn call(node: &TestNode, command: &str, pod: &Pod, prev: Option<&Value>) -> Invocation {
    node.call_meshaccel(command, &node.meshaccel_conf(), pod.runtime_conf(), prev).unwrap()
}

fn ok(inv: Invocation, what: &str) -> Invocation {
    assert!(inv.success(), "{what} failed ({}): stdout {} stderr {}", inv.status, inv.stdout, inv.stderr);
    inv
}

/// ADD of meshaccel after bridge; its result.
fn add(node: &TestNode, pod: &Pod) -> Value {
    ok(call(node, "ADD", pod, Some(pod.result())), "ADD").json().unwrap()
}

fn refused(inv: &Invocation, code: u32, says: &str) {
    inv.expect_error(code, says).unwrap();
}

/// `meshaccel status --json` of the node.
fn status(node: &TestNode) -> Value {
    let out = run(
        binaries::meshaccel().to_str().unwrap(),
        &[
            "status",
            "--json",
            "--bpffs-root",
            node.pins().root().to_str().unwrap(),
            "--state-dir",
            node.state_dir().to_str().unwrap(),
        ],
    )
    .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Everything meshaccel keeps for `id`: link pin, pin directory, record, `status` entry.
fn assert_attached(node: &TestNode, pod: &Pod) {
    let id = attachment(pod);
    let pins = node.pins();
    let link = bpf::pod_link(pins, &id).unwrap().unwrap_or_else(|| panic!("no link pinned for {id}"));
    assert_eq!(link.cgroup_id, bpf::cgroup_id(pod.cgroup()).unwrap(), "link on the pod cgroup");
    assert_eq!(link.prog_id, bpf::sockops_prog_id(pins).unwrap(), "link runs the pinned sock_ops");
    let st = sockmap::records(node.state_dir()).load(&id).unwrap().unwrap_or_else(|| panic!("no record for {id}"));
    assert_eq!((st.cgroup.as_path(), st.pod_uid.as_str()), (pod.cgroup(), pod.uid()));
    assert_eq!(st.network, node.network(Chain::Accelerated).name);
    let status = status(node);
    let entry = status["attachments"].as_array().unwrap().iter().find(|a| a["attachment"] == id.as_str());
    let entry = entry.unwrap_or_else(|| panic!("{id} not in meshaccel status: {status}"));
    assert_eq!(entry["linked"], json!(true), "{entry}");
    assert_eq!(entry["state"]["podUid"], json!(pod.uid()), "{entry}");
}

/// No link, no pin directory and no record of `pod`'s attachment.
fn assert_released(node: &TestNode, pod: &Pod) {
    let id = attachment(pod);
    assert!(bpf::pod_link(node.pins(), &id).unwrap().is_none(), "{id}: link still pinned");
    assert!(!node.pins().pod_dir(&id).exists(), "{id}: pin directory left behind");
    assert_eq!(sockmap::records(node.state_dir()).load(&id).unwrap(), None, "{id}: record left behind");
    assert!(!status(node)["attachments"].as_array().unwrap().iter().any(|a| a["attachment"] == id.as_str()));
}

#[test]
fn add_pins_a_link_on_the_pod_cgroup_and_passes_the_bridge_result_through() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "add");
    let out = add(&node, &pod);
    assert_eq!(without_empty_dns(&out), without_empty_dns(pod.result()), "meshaccel changed bridge's result");
    assert_eq!(bpf::list_pods(node.pins()).unwrap(), vec![attachment(&pod)]);
    assert_attached(&node, &pod);
    assert_eq!(status(&node)["loaded"], json!(true));
    // CHECK gets the cached result, which is meshaccel's output.
    let check = ok(call(&node, "CHECK", &pod, Some(&out)), "CHECK after ADD");
    assert_eq!(check.stdout.trim(), "", "CHECK prints nothing on success");
}

/// bridge's result in each layout the spec has had since 0.3.0 comes out of meshaccel with
/// the same meaning. Debian's bridge speaks up to 1.0.0; 1.1.0 results have 1.0.0's layout.
#[test]
fn prev_result_passes_through_in_every_supported_version() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "vers");
    let bridge = node.network(Chain::BridgeOnly).plugins[0].clone();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let net = NetworkList { cni_version: version.into(), ..node.network(Chain::Accelerated).clone() };
        let bridge_net = NetworkList { cni_version: version.min("1.0.0").into(), ..net.clone() };
        let rt = RuntimeConf { ifname: format!("ev{i}"), ..pod.runtime_conf().clone() };
        let mut prev = ok(bridge_net.call("ADD", &bridge, &rt, None).unwrap(), "bridge ADD").json().unwrap();
        prev["cniVersion"] = json!(version);
        let out = ok(net.call("ADD", &node.meshaccel_conf(), &rt, Some(&prev)).unwrap(), version).json().unwrap();
        assert_eq!(without_empty_dns(&out), without_empty_dns(&prev), "cniVersion {version}");
        ok(net.call("DEL", &node.meshaccel_conf(), &rt, Some(&prev)).unwrap(), "meshaccel DEL");
        ok(bridge_net.call("DEL", &bridge, &rt, None).unwrap(), "bridge DEL");
    }
}

#[test]
fn check_fails_when_the_link_was_unpinned() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "unpin");
    let cached = add(&node, &pod);
    fs::remove_file(node.pins().pod_link(&attachment(&pod))).unwrap();
    refused(&call(&node, "CHECK", &pod, Some(&cached)), CHECK_FAILED, "sock_ops link is not pinned");
    ok(call(&node, "DEL", &pod, Some(&cached)), "DEL after drift");
    assert_released(&node, &pod);
}

#[test]
fn check_fails_when_the_pod_cgroup_was_recreated() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "recreate");
    let cached = add(&node, &pod);
    fs::remove_dir(pod.cgroup()).unwrap();
    fs::create_dir(pod.cgroup()).unwrap();
    refused(&call(&node, "CHECK", &pod, Some(&cached)), CHECK_FAILED, "was recreated");
}

#[test]
fn del_twice_leaves_nothing() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "deltwice");
    let cached = add(&node, &pod);
    assert_attached(&node, &pod);
    for round in ["first", "second"] {
        let del = ok(call(&node, "DEL", &pod, Some(&cached)), &format!("{round} DEL"));
        assert_eq!(del.stdout.trim(), "", "DEL prints nothing on success");
        assert_released(&node, &pod);
    }
    assert!(bpf::list_pods(node.pins()).unwrap().is_empty());
    assert!(sockmap::records(node.state_dir()).list().unwrap().is_empty());
}

/// containerd's DEL after the sandbox is gone: no netns, no cached result.
#[test]
fn del_without_netns_or_prev_result_releases_the_attachment() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "nonetns");
    add(&node, &pod);
    let gone = RuntimeConf { netns: String::new(), ..pod.runtime_conf().clone() };
    ok(node.call_meshaccel("DEL", &node.meshaccel_conf(), &gone, None).unwrap(), "DEL without netns");
    assert_released(&node, &pod);
}

/// DEL needs no pod identity: a CNI_ARGS that ADD would refuse must not block teardown
/// (the runtime would retry that DEL for ever).
#[test]
fn del_ignores_malformed_cni_args_and_releases_the_attachment() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "badargs");
    add(&node, &pod);
    let mut args = pod.runtime_conf().clone();
    args.args = vec![("K8S_POD_UID".into(), "../../etc".into()), ("garbage".into(), String::new())];
    ok(node.call_meshaccel("DEL", &node.meshaccel_conf(), &args, None).unwrap(), "DEL with malformed CNI_ARGS");
    assert_released(&node, &pod);
}

#[test]
fn del_of_an_unknown_attachment_succeeds_and_touches_nothing() {
    let node = TestNode::new().unwrap();
    let known = bridged_pod(&node, "known");
    let unknown = bridged_pod(&node, "unknown");
    // Before anything was ever loaded on the node: creates nothing.
    let before = node.plugin_footprint();
    ok(call(&node, "DEL", &unknown, None), "DEL on an empty node");
    assert_eq!(node.plugin_footprint(), before, "DEL of an unknown attachment created files");
    // Next to a live attachment: leaves it alone.
    add(&node, &known);
    let before = node.plugin_footprint();
    ok(call(&node, "DEL", &unknown, Some(unknown.result())), "DEL of an unknown attachment");
    assert_eq!(node.plugin_footprint(), before);
    assert_attached(&node, &known);
}

/// The spec forbids runtimes to CHECK after DEL; when one does, the attachment is gone and
/// CHECK says so (102) — as far as the plugin can tell: under `failurePolicy: open` an
/// absent attachment is also what ADD leaves when it falls back to plain TCP, so CHECK
/// passes there (the pod's network is as meshaccel left it).
#[test]
fn check_after_del_reports_the_missing_attachment() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "chkdel");
    let cached = add(&node, &pod);
    ok(call(&node, "DEL", &pod, Some(&cached)), "DEL");
    refused(&call(&node, "CHECK", &pod, Some(&cached)), CHECK_FAILED, "has no attachment");
    assert_released(&node, &pod);

    let mut open = node.meshaccel_conf();
    open["failurePolicy"] = json!("open");
    ok(node.call_meshaccel("CHECK", &open, pod.runtime_conf(), Some(&cached)).unwrap(), "CHECK under open policy");
    assert!(node.plugin_log().contains("ADD fell back to plain TCP"), "CHECK should log why it passes");
}

#[test]
fn version_lists_0_3_0_through_1_1_0() {
    let env = [("CNI_COMMAND".to_string(), "VERSION".to_string())];
    let inv = ok(invoke(binaries::meshaccel(), &env, br#"{"cniVersion":"1.1.0"}"#).unwrap(), "VERSION");
    let v = inv.json().unwrap();
    assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]), "{v}");
    assert_eq!(v["cniVersion"], json!("1.1.0"), "{v}");
}

/// STATUS of a 1.1.0 conf, as libcni sends it: the plugin's entry, no container.
fn status_call(node: &TestNode, conf: &Value, version: &str) -> Invocation {
    let net = NetworkList { cni_version: version.into(), ..node.network(Chain::Accelerated).clone() };
    net.call("STATUS", conf, &RuntimeConf::default(), None).unwrap()
}

#[test]
fn status_is_ready_when_the_programs_load() {
    let node = TestNode::new().unwrap();
    let inv = ok(status_call(&node, &node.meshaccel_conf(), "1.1.0"), "STATUS");
    assert_eq!(inv.stdout.trim(), "");
    assert!(bpf::is_loaded(node.pins()), "STATUS proves loadability by loading");
    // STATUS does not exist before 1.1.0 (the spec's code 1, from version negotiation).
    refused(&status_call(&node, &node.meshaccel_conf(), "1.0.0"), 1, "does not allow STATUS");
}

#[test]
fn status_is_unavailable_when_the_bpffs_root_is_not_bpf() {
    let node = TestNode::new().unwrap();
    let tmpfs_root = node.scratch_dir().unwrap().join("not-bpf");
    let mut conf = node.meshaccel_conf();
    conf["bpffsRoot"] = json!(tmpfs_root);
    refused(&status_call(&node, &conf, "1.1.0"), 50, "not on a bpf filesystem");

    // Open: ADD would pass pods through, so the network is ready; the log says why not fast.
    conf["failurePolicy"] = json!("open");
    ok(status_call(&node, &conf, "1.1.0"), "STATUS under open policy");
    assert!(node.plugin_log().contains("BPF programs not loadable"), "{}", node.plugin_log());
}

/// Three attachments of this network (two still valid) and one of another network on the
/// same bpffs root and state dir: GC collects exactly the stale one of its own network.
#[test]
fn gc_removes_only_this_networks_stale_attachments() {
    let node = TestNode::new().unwrap();
    let pods: Vec<Pod> = ["gc-a", "gc-b", "gc-stale", "gc-other"].iter().map(|n| bridged_pod(&node, n)).collect();
    let ours = node.network(Chain::Accelerated).clone();
    let other = NetworkList { name: format!("{}-other", ours.name), ..ours.clone() };
    for pod in &pods[..3] {
        add(&node, pod);
    }
    ok(other.call("ADD", &node.meshaccel_conf(), pods[3].runtime_conf(), Some(pods[3].result())).unwrap(), "ADD other");
    pods.iter().for_each(|p| assert!(bpf::pod_link(node.pins(), &attachment(p)).unwrap().is_some()));

    let valid: Vec<Value> = pods[..2]
        .iter()
        .map(|p| json!({"containerID": p.runtime_conf().container_id, "ifname": p.runtime_conf().ifname}))
        .chain([json!({"containerID": "../escape", "ifname": "eth0"})]) // ignored, not fatal
        .collect();
    let mut conf = node.meshaccel_conf();
    conf["cni.dev/valid-attachments"] = json!(valid);
    let gc = NetworkList { cni_version: "1.1.0".into(), ..ours };
    for round in ["first", "second"] {
        ok(gc.call("GC", &conf, &RuntimeConf::default(), None).unwrap(), &format!("{round} GC"));
        assert_released(&node, &pods[2]);
        for pod in [&pods[0], &pods[1]] {
            assert_attached(&node, pod);
        }
        let id = attachment(&pods[3]);
        assert!(bpf::pod_link(node.pins(), &id).unwrap().is_some(), "GC removed another network's link");
        assert!(sockmap::records(node.state_dir()).load(&id).unwrap().is_some(), "GC removed another network's record");
    }
}

/// An ADD killed between attaching and recording leaves a pinned link no record claims.
/// GC takes it once it is older than an ADD can take (so an ADD in flight keeps its link),
/// whatever the network and whether or not the runtime still lists it as valid.
#[test]
fn gc_collects_links_that_a_killed_add_left_without_a_record() {
    let node = TestNode::new().unwrap();
    let (crashed, in_flight) = (bridged_pod(&node, "gc-crashed"), bridged_pod(&node, "gc-inflight"));
    for pod in [&crashed, &in_flight] {
        add(&node, pod);
        // What the killed ADD had not done yet.
        sockmap::records(node.state_dir()).remove(&attachment(pod)).unwrap();
    }
    let stamp = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(node.pins().pod_dir(&attachment(&crashed)))
        .status()
        .unwrap();
    assert!(stamp.success());
    let mut conf = node.meshaccel_conf();
    conf["cni.dev/valid-attachments"] = json!([]);
    let gc = NetworkList { cni_version: "1.1.0".into(), ..node.network(Chain::Accelerated).clone() };
    ok(gc.call("GC", &conf, &RuntimeConf::default(), None).unwrap(), "GC");
    assert_released(&node, &crashed);
    let id = attachment(&in_flight);
    assert!(bpf::pod_link(node.pins(), &id).unwrap().is_some(), "GC took the link of an ADD that may be in flight");
    ok(call(&node, "DEL", &in_flight, None), "DEL");
    assert!(bpf::list_pods(node.pins()).unwrap().is_empty());
}

/// A pod on two meshaccel networks (a second interface, as Multus adds one): both ADDs
/// succeed, and the pod stays accelerated until its last attachment is deleted.
#[test]
fn a_pod_with_two_accelerated_interfaces_stays_accelerated_until_its_last_del() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "twoifs");
    let first = add(&node, &pod);
    let second_rt = RuntimeConf { ifname: "net1".into(), ..pod.runtime_conf().clone() };
    let second = node.call_meshaccel("ADD", &node.meshaccel_conf(), &second_rt, Some(pod.result())).unwrap();
    let second = ok(second, "ADD of the second interface").json().unwrap();
    ok(node.call_meshaccel("CHECK", &node.meshaccel_conf(), &second_rt, Some(&second)).unwrap(), "CHECK net1");
    ok(call(&node, "CHECK", &pod, Some(&first)), "CHECK eth0");
    ok(call(&node, "DEL", &pod, Some(&first)), "DEL eth0");
    ok(
        node.call_meshaccel("CHECK", &node.meshaccel_conf(), &second_rt, Some(&second)).unwrap(),
        "CHECK net1 after DEL eth0",
    );
    ok(node.call_meshaccel("DEL", &node.meshaccel_conf(), &second_rt, Some(&second)).unwrap(), "DEL net1");
    assert!(bpf::list_pods(node.pins()).unwrap().is_empty());
    assert!(sockmap::records(node.state_dir()).list().unwrap().is_empty());
}

/// Container id and ifname together name an attachment's pins and record; two attachments
/// that differ only in where a `_` falls (`c_x`+`eth0`, `c`+`x_eth0`) must stay apart.
#[test]
fn attachments_that_differ_only_around_an_underscore_stay_apart() {
    let node = TestNode::new().unwrap();
    let pod = bridged_pod(&node, "underscore");
    let base = pod.runtime_conf();
    let a = RuntimeConf { container_id: format!("{}_x", base.container_id), ..base.clone() };
    let b = RuntimeConf { ifname: format!("x_{}", base.ifname), ..base.clone() };
    let id = |rt: &RuntimeConf| AttachmentId::new(&rt.container_id, &rt.ifname).unwrap();
    let linked = |rt: &RuntimeConf| bpf::pod_link(node.pins(), &id(rt)).unwrap().is_some();
    let mesh = |cmd: &str, rt: &RuntimeConf| {
        ok(
            node.call_meshaccel(cmd, &node.meshaccel_conf(), rt, Some(pod.result())).unwrap(),
            &format!("{cmd} {}", rt.ifname),
        )
    };
    mesh("ADD", &a);
    mesh("DEL", &b); // never added: must not touch a
    assert!(linked(&a), "DEL of {} removed {}", id(&b), id(&a));
    mesh("CHECK", &a);
    mesh("ADD", &b);
    let records: Vec<(String, String)> = sockmap::records(node.state_dir())
        .list()
        .unwrap()
        .into_iter()
        .map(|(_, st)| (st.container_id, st.ifname))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    for rt in [&a, &b] {
        assert!(records.contains(&(rt.container_id.clone(), rt.ifname.clone())), "{records:?}");
    }
    mesh("DEL", &a);
    assert!(linked(&b) && !linked(&a));
    mesh("CHECK", &b);
}
