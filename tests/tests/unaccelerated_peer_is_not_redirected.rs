//! A pod without meshaccel (set up by a chain without it, or opted out by annotation) talks
//! to an accelerated pod normally, in both directions, and none of that traffic is
//! redirected. None of those sockets even enters the sockhash (the handshake tag tells the
//! accelerated end that its peer is not accelerated), so they keep the kernel's stock TCP
//! receive path; the accelerated server end counts each such connection as a miss.
use meshaccel_tests::scenario::echo_traffic;
use meshaccel_tests::{Chain, Pod, TestNode};

const CONNS: u32 = 4;

fn talks_plainly(node: &TestNode, accelerated: &Pod, plain: &Pod) {
    let before = node.stats().unwrap();
    let (a, p) = (format!("{}:5300", accelerated.ip()), format!("{}:5300", plain.ip()));
    echo_traffic(accelerated, "0.0.0.0:5300", plain, &a, CONNS, 1 << 20, "poll").unwrap();
    echo_traffic(plain, "0.0.0.0:5300", accelerated, &p, CONNS, 1 << 20, "poll").unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!((d.msgs_redirected, d.bytes_redirected), (0, 0), "{d:?}");
    assert_eq!(d.sockets_inserted, 0, "no socket of an unpaired connection enters the sockhash: {d:?}");
    assert_eq!(d.redirect_misses, u64::from(CONNS), "the accelerated server end saw its unaccelerated clients: {d:?}");
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
