//! Loopback inside a pod is accelerated where that pays (request/response), streams move
//! to plain TCP intact, and every pod's `127.0.0.1` stays its own: the same loopback
//! 4-tuple in two pods at once never delivers one pod's data into the other.
use meshaccel_tests::scenario::{self, clean, client, echo_traffic, server, TIMEOUT};
use meshaccel_tests::TestNode;

#[test]
fn loopback_request_response_is_redirected_and_intact() {
    scenario::loopback_request_response_is_redirected(&TestNode::new().unwrap(), "127.0.0.1:6000");
}

/// A bulk stream over loopback, where plain TCP is faster, moves to plain TCP after a few
/// redirected sends: bytes intact and in order across the switch, and the sender, into
/// which nothing was redirected, leaves the sockmap.
#[test]
fn loopback_stream_moves_to_plain_tcp_intact() {
    let node = TestNode::new().unwrap();
    let pod = node.accelerated_pod("lo-stream").unwrap();
    let before = node.stats().unwrap();
    let conns = 4;
    let srv = server(&pod, "127.0.0.1:6001", "sink", &["--conns", "4", "--seed", "9", "--io", "poll"]).unwrap();
    let cli =
        client(&pod, "127.0.0.1:6001", "send", &["--conns", "4", "--bytes", "8388608", "--seed", "9", "--io", "poll"])
            .unwrap();
    clean(cli.finish(TIMEOUT).unwrap()).unwrap();
    let served = clean(srv.finish(TIMEOUT).unwrap()).unwrap();
    let received: u64 = served["conns"].as_array().unwrap().iter().map(|c| c["received"].as_u64().unwrap()).sum();
    assert_eq!(received, conns * (8 << 20));
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.sockets_inserted, 2 * conns, "{d:?}");
    assert_eq!(d.streaming_fallbacks, conns, "one switch per sending end: {d:?}");
    assert_eq!(d.left_sockmap, conns, "{d:?}");
    assert!(d.bytes_redirected > 0, "the first sends were redirected: {d:?}");
}

/// Full-duplex bulk echo over loopback: whatever each end decides, every byte comes back.
#[test]
fn loopback_echo_is_intact() {
    let node = TestNode::new().unwrap();
    let pod = node.accelerated_pod("lo").unwrap();
    let before = node.stats().unwrap();
    let (conns, bytes) = (8, 2 << 20);
    echo_traffic(&pod, "127.0.0.1:6000", &pod, "127.0.0.1:6000", conns, bytes, "poll").unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.sockets_inserted, 2 * u64::from(conns), "{d:?}");
    assert!(d.bytes_redirected > 0, "{d:?}");
}

#[test]
fn identical_loopback_tuples_in_two_pods_never_cross_deliver() {
    const CONNS: u64 = 8;
    let node = TestNode::new().unwrap();
    let pods = [node.accelerated_pod("lo-a").unwrap(), node.accelerated_pod("lo-b").unwrap()];
    let before = node.stats().unwrap();
    // Same server port and same client ports in both pods: identical 4-tuples, all
    // established (and in the sockhash) before either pod sends.
    let pairs = pods
        .iter()
        .zip([1000u64, 2000])
        .map(|(pod, tags)| {
            let srv = scenario::tagged_echo(pod, "127.0.0.1:6000", tags, CONNS);
            (srv, scenario::waiting_verifier(pod, "127.0.0.1:6000", CONNS, 1 << 20, tags, 40000))
        })
        .collect();
    scenario::go_and_check(pairs);
    let d = node.stats().unwrap().since(&before);
    assert!(
        d.bytes_redirected >= 2 * 2 * CONNS * (1 << 20),
        "the traffic must have been redirected to prove anything: {d:?}"
    );
}
