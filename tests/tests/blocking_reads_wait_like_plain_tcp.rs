//! Blocking sockets used full duplex (one thread reading, another writing the same socket,
//! as thread-per-connection programs do): a blocking read() waits for data or EOF and never
//! fails with EAGAIN before SO_RCVTIMEO (30 s here). The event-driven variant of the same
//! traffic is in `pod_to_pod_traffic_is_redirected_intact`.
use meshaccel_tests::scenario::{echo_traffic, pod_pair};
use meshaccel_tests::TestNode;

/// Redirected, such reads fail with EAGAIN (~100 ms in, 1-3 of 16 connections) when woken
/// without data (kernel tcp_bpf_recvmsg): meshaccel keeps blocking ends on plain TCP, so on
/// accelerated pods they are plain and wait as they should.
fn full_duplex_blocking_echo(accelerated: bool) {
    let node = TestNode::new().unwrap();
    let (server, client) = pod_pair(&node, accelerated).unwrap();
    let before = node.stats().unwrap();
    let connect = format!("{}:5400", server.ip());
    echo_traffic(&server, "0.0.0.0:5400", &client, &connect, 16, 4 << 20, "blocking").unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.bytes_redirected, 0, "{d:?}");
    // Each of the 16 clients is refused pairing at its establishment.
    assert_eq!(d.blocking_plain, if accelerated { 16 } else { 0 }, "{d:?}");
}

#[test]
fn blocking_full_duplex_reads_wait_on_plain_tcp() {
    full_duplex_blocking_echo(false);
}

#[test]
fn blocking_full_duplex_reads_wait_on_accelerated_pods() {
    full_duplex_blocking_echo(true);
}
