//! The streaming rule between two pods: a connection end that streams small writes (which
//! TCP batches and redirect delivers one by one) or 64 KiB writes (where TCP's GSO/GRO is as
//! cheap) moves to plain TCP for good, bytes intact and in order across the switch; an end
//! into which nothing was redirected then leaves the sockmap; mid-size writes (512 B to
//! 32 KiB) stay redirected.
use meshaccel_tests::scenario::{clean, client, server, TIMEOUT};
use meshaccel_tests::{Counters, TestNode};

const CONNS: u64 = 4;

/// `mode` traffic from a client pod to a server pod, writes of `write_size` bytes.
fn run(
    server_mode: &str,
    client_mode: &str,
    write_size: u64,
    bytes: u64,
) -> (serde_json::Value, serde_json::Value, Counters) {
    let node = TestNode::new().unwrap();
    let (srv_pod, cli_pod) = (node.accelerated_pod("server").unwrap(), node.accelerated_pod("client").unwrap());
    let before = node.stats().unwrap();
    let (conns, size, bytes) = (CONNS.to_string(), write_size.to_string(), bytes.to_string());
    let common = ["--conns", &conns, "--seed", "5", "--io", "poll", "--write-size", &size, "--bytes", &bytes];
    let srv = server(&srv_pod, "0.0.0.0:7100", server_mode, &common).unwrap();
    let cli = client(&cli_pod, &format!("{}:7100", srv_pod.ip()), client_mode, &common).unwrap();
    let c = clean(cli.finish(TIMEOUT).unwrap()).unwrap();
    let s = clean(srv.finish(TIMEOUT).unwrap()).unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.sockets_inserted, 2 * CONNS, "every connection paired: {d:?}");
    (c, s, d)
}

fn received(report: &serde_json::Value, field: &str) -> u64 {
    report["conns"].as_array().unwrap().iter().map(|c| c[field].as_u64().unwrap()).sum()
}

#[test]
fn a_stream_of_small_writes_moves_to_plain_tcp_and_its_sender_leaves_the_sockmap() {
    let (_, s, d) = run("sink", "send", 16, 1 << 20);
    assert_eq!(received(&s, "received"), CONNS << 20);
    assert_eq!(d.streaming_fallbacks, CONNS, "{d:?}");
    assert_eq!(d.left_sockmap, CONNS, "nothing was redirected into the senders: {d:?}");
    // The run that proves streaming was redirected, the rest went by TCP.
    assert!(d.bytes_redirected > 0 && d.bytes_redirected < CONNS << 16, "{d:?}");
}

#[test]
fn a_stream_of_mid_size_writes_stays_redirected() {
    let (_, s, d) = run("sink", "send", 4096, 4 << 20);
    assert_eq!(received(&s, "received"), CONNS * (4 << 20));
    assert_eq!((d.streaming_fallbacks, d.left_sockmap), (0, 0), "{d:?}");
    assert!(d.bytes_redirected >= CONNS * (4 << 20), "{d:?}");
}

#[test]
fn a_stream_of_64_kib_writes_moves_to_plain_tcp() {
    let (_, s, d) = run("sink", "send", 64 << 10, 8 << 20);
    assert_eq!(received(&s, "received"), CONNS * (8 << 20));
    assert_eq!((d.streaming_fallbacks, d.left_sockmap), (CONNS, CONNS), "{d:?}");
}

/// The client streams small writes and leaves; the server, whose answer could no longer
/// be redirected into a socket that left, answers on TCP; it cannot leave itself (the
/// client's first sends were redirected into it). Both directions arrive intact.
#[test]
fn after_the_sender_left_its_peer_answers_on_plain_tcp() {
    let (c, s, d) = run("halfclose", "halfclose", 16, 256 << 10);
    assert_eq!(received(&s, "received"), CONNS * (256 << 10));
    assert_eq!(received(&c, "answer_received"), CONNS * (256 << 10));
    assert_eq!(d.streaming_fallbacks, CONNS, "the clients: {d:?}");
    assert_eq!(d.left_sockmap, CONNS, "the clients only: {d:?}");
}
