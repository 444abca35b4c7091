//! A pod without meshaccel (set up by a chain without it, or opted out by annotation) talks
//! to an accelerated pod normally, in both directions, and none of that traffic is
//! redirected. None of those sockets even enters the sockhash (the handshake tag tells the
//! accelerated end that its peer is not accelerated), so they keep the kernel's stock TCP
//! receive path; the accelerated server end counts each such connection as a miss.
use meshaccel_tests::scenario;
use meshaccel_tests::{Chain, Pod, TestNode};

fn talks_plainly(node: &TestNode, accelerated: &Pod, plain: &Pod) {
    scenario::talks_plainly(node, "0.0.0.0", |p| p.ip().into(), accelerated, plain);
}

#[test]
fn pod_of_a_chain_without_meshaccel_is_not_redirected() {
    let node = TestNode::new().unwrap();
    let accelerated = node.accelerated_pod("fast").unwrap();
    let plain = node.pod("plain").chain(Chain::BridgeOnly).start().unwrap();
    talks_plainly(&node, &accelerated, &plain);
}

#[test]
fn pod_opted_out_by_annotation_is_not_redirected() {
    let node = TestNode::new().unwrap();
    let accelerated = node.accelerated_pod("fast").unwrap();
    let plain = node.opted_out_pod("optout").unwrap();
    talks_plainly(&node, &accelerated, &plain);
}
