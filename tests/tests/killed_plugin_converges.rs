//! The plugin killed (SIGKILL) at each step of ADD and DEL, as an OOM kill or a crash
//! would: the runtime's next calls — the DELs it sends after a failed ADD, a DEL retried —
//! and the next pod's ADD converge to exactly what a clean run leaves: no link, no pin
//! directory, no record, programs loaded whole. (GC of what a kill leaves when no DEL
//! follows: cni_lifecycle_follows_the_spec.rs.)
//!
//! One test in this binary: the fault point is chosen through the environment, which the
//! plugin processes inherit.
use std::os::unix::process::ExitStatusExt;

use meshaccel_node::pins::AttachmentId;
use meshaccel_node::{bpf, fault, sockmap};
use meshaccel_tests::cni::{Invocation, RuntimeConf};
use meshaccel_tests::{Chain, Pod, TestNode};

fn attachment(pod: &Pod) -> AttachmentId {
    AttachmentId::new(&pod.runtime_conf().container_id, &pod.runtime_conf().ifname).unwrap()
}

fn meshaccel(node: &TestNode, command: &str, rt: &RuntimeConf, pod: &Pod, fault: Option<&str>) -> Invocation {
    match fault {
        Some(point) => std::env::set_var("MESHACCEL_FAULT", point),
        None => std::env::remove_var("MESHACCEL_FAULT"),
    }
    let prev = (command != "DEL" || !rt.netns.is_empty()).then(|| pod.result());
    let inv = node.call_meshaccel(command, &node.meshaccel_conf(), rt, prev);
    std::env::remove_var("MESHACCEL_FAULT");
    inv.unwrap()
}

fn killed(inv: &Invocation, point: &str) {
    assert_eq!(inv.status.signal(), Some(libc::SIGKILL), "{point}: the plugin was not killed there: {inv:?}");
}

fn ok(inv: Invocation, what: &str) {
    assert!(inv.success(), "{what}: {inv:?}");
}

/// What containerd does after a failed ADD or at StopPodSandbox: DEL with the netns, then
/// DEL without it.
fn runtime_dels(node: &TestNode, pod: &Pod, what: &str) {
    ok(meshaccel(node, "DEL", pod.runtime_conf(), pod, None), &format!("{what}: DEL"));
    let gone = RuntimeConf { netns: String::new(), ..pod.runtime_conf().clone() };
    ok(meshaccel(node, "DEL", &gone, pod, None), &format!("{what}: DEL without netns"));
}

fn assert_clean(node: &TestNode, pod: &Pod, what: &str) {
    let id = attachment(pod);
    assert!(bpf::pod_link(node.pins(), &id).unwrap().is_none(), "{what}: link left");
    assert!(!node.pins().pod_dir(&id).exists(), "{what}: pin directory left");
    assert_eq!(sockmap::records(node.state_dir()).load(&id).unwrap(), None, "{what}: record left");
}

/// After the kill, a new pod is accelerated as on a node that never saw it.
fn next_pod_is_accelerated(node: &TestNode, what: &str) {
    let pod = node.pod("next").chain(Chain::BridgeOnly).start().unwrap();
    ok(meshaccel(node, "ADD", pod.runtime_conf(), &pod, None), &format!("{what}: next ADD"));
    assert!(bpf::is_loaded(node.pins()), "{what}: programs not loaded whole");
    ok(meshaccel(node, "CHECK", pod.runtime_conf(), &pod, None), &format!("{what}: next CHECK"));
    runtime_dels(node, &pod, what);
    assert_clean(node, &pod, what);
}

#[test]
fn every_kill_point_of_add_and_del_converges() {
    for &point in fault::POINTS {
        // A fresh node each time: its first ADD loads the programs, so the load's point is on
        // the path too.
        let node = TestNode::new().unwrap();
        let pod = node.pod("killed").chain(Chain::BridgeOnly).start().unwrap();
        if point == fault::DEL_UNPINNED {
            ok(meshaccel(&node, "ADD", pod.runtime_conf(), &pod, None), point);
            killed(&meshaccel(&node, "DEL", pod.runtime_conf(), &pod, Some(point)), point);
        } else {
            killed(&meshaccel(&node, "ADD", pod.runtime_conf(), &pod, Some(point)), point);
        }
        runtime_dels(&node, &pod, point);
        assert_clean(&node, &pod, point);
        next_pod_is_accelerated(&node, point);
        assert!(bpf::list_pods(node.pins()).unwrap().is_empty(), "{point}: pod links left");
        assert!(sockmap::records(node.state_dir()).list().unwrap().is_empty(), "{point}: records left");
    }
}
