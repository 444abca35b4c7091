//! A server whose listening socket is non-blocking but whose accepted sockets read in
//! blocking mode (gunicorn's sync worker; a Python listener with a timeout): its first
//! connection is paired (at establishment only the listener's mode is known), its server end
//! shows itself blocking at its first send and marks the listener, and every later
//! connection to that listener stays plain TCP from its handshake. Both runs, accelerated
//! and opted out, answer exactly the same.
use std::path::Path;

use meshaccel_tests::scenario::{pod_pair, TIMEOUT};
use meshaccel_tests::{Counters, Proc, TestNode};
use serde_json::Value;

const CONNS: &str = "6";
const PROGRAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/programs/accept_blocking.py");

fn run(accelerated: bool) -> (Value, Value, Counters) {
    let node = TestNode::new().unwrap();
    let (srv_pod, cli_pod) = pod_pair(&node, accelerated).unwrap();
    let before = node.stats().unwrap();
    let python = Path::new("/usr/bin/python3");
    let mut srv = Proc::spawn("server", srv_pod.command(python, &[PROGRAM, "server", "7300", CONNS]).unwrap()).unwrap();
    srv.expect_event("listening", TIMEOUT).unwrap();
    let ip = srv_pod.ip().to_string();
    let cli =
        Proc::spawn("client", cli_pod.command(python, &[PROGRAM, "client", &ip, "7300", CONNS]).unwrap()).unwrap();
    let (c, s) = (cli.finish(TIMEOUT).unwrap(), srv.finish(TIMEOUT).unwrap());
    (c, s, node.stats().unwrap().since(&before))
}

#[test]
fn later_connections_to_a_listener_that_accepts_blocking_sockets_stay_plain() {
    let (plain_c, plain_s, d) = run(false);
    assert_eq!(d.bytes_redirected, 0, "{d:?}");
    let (c, s, d) = run(true);
    assert_eq!((c, s), (plain_c, plain_s), "accelerated (left) vs plain TCP (right)");
    // The first connection: request and answer redirected, its server end counted blocking.
    assert!(d.bytes_redirected > 4096, "{d:?}");
    assert_eq!(d.msgs_redirected, 2, "one request, one answer: {d:?}");
    // Its server end, then each later connection at its handshake.
    assert_eq!(d.blocking_plain, CONNS.parse::<u64>().unwrap(), "{d:?}");
}
