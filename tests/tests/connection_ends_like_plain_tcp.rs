//! How connections end, accelerated pods versus plain TCP (opted-out pods): half-close and
//! reset must look exactly the same to both ends, whether the program's I/O is event-driven
//! (`--io poll`: redirected) or blocking (kept on plain TCP by meshaccel, which is what
//! makes it look the same: docs/design.md, "Only non-blocking ends are redirected").
use meshaccel_tests::scenario::{client, only_conn, pod_pair, server, TIMEOUT};
use meshaccel_tests::{Counters, TestNode};
use serde_json::{json, Value};

/// Runs one server/client scenario; returns what both ends observed (errors included) and
/// meshaccel's counters over it.
fn observe(accelerated: bool, mode: &str, server_args: &[&str], client_args: &[&str]) -> (Value, Counters) {
    let node = TestNode::new().unwrap();
    let (srv_pod, cli_pod) = pod_pair(&node, accelerated).unwrap();
    let before = node.stats().unwrap();
    let srv = server(&srv_pod, "0.0.0.0:7100", mode, server_args).unwrap();
    let cli = client(&cli_pod, &format!("{}:7100", srv_pod.ip()), mode, client_args).unwrap();
    let (c, s) = (cli.finish(TIMEOUT).unwrap(), srv.finish(TIMEOUT).unwrap());
    let seen = json!({"server": only_conn(&s), "server_errors": s["errors"], "client": only_conn(&c), "client_errors": c["errors"]});
    (seen, node.stats().unwrap().since(&before))
}

/// The scenario plain, then redirected: plain must show `expected` (so the test itself is
/// right), redirected must show the same. Fields named in `timing` (per end) are left out of
/// both: they measure buffer timing, not the behaviour under test.
fn same_as_plain_tcp(
    mode: &str,
    server_args: &[&str],
    client_args: &[&str],
    timing: &[&str],
    (server, client): (Value, Value),
) {
    let strip = |mut v: Value| {
        for end in ["server", "client"] {
            if let Some(o) = v[end].as_object_mut() {
                timing.iter().for_each(|k| drop(o.remove(*k)));
            }
        }
        v
    };
    let expected = json!({"server": server, "server_errors": [], "client": client, "client_errors": []});
    let (plain, d) = observe(false, mode, server_args, client_args);
    let plain = strip(plain);
    assert_eq!(plain, expected, "plain TCP itself");
    assert_eq!(d.bytes_redirected, 0, "opted-out pods were redirected: {d:?}");
    let (accel, d) = observe(true, mode, server_args, client_args);
    if client_args.windows(2).any(|w| w == ["--io", "poll"]) {
        assert!(d.bytes_redirected > 0, "event-driven ends were not redirected: {d:?}");
    } else {
        assert_eq!(d.bytes_redirected, 0, "blocking ends were redirected: {d:?}");
        assert!(d.blocking_plain > 0, "blocking ends not counted: {d:?}");
    }
    assert_eq!(strip(accel), plain, "accelerated pods (left) vs plain TCP (right)");
}

/// shutdown(SHUT_WR): the peer reads everything then EOF, and can still answer; the
/// half-closed side cannot write any more but reads the answer to EOF.
fn half_close(io: &str) {
    let n = 1u64 << 20;
    let args = ["--bytes", "1048576", "--seed", "3", "--io", io];
    same_as_plain_tcp(
        "halfclose",
        &args,
        &args,
        &["eagains"],
        (
            json!({"received": n, "read_end": "eof", "answered": n}),
            json!({"written": n, "write_after_shutdown": "EPIPE", "answer_received": n, "answer_end": "eof"}),
        ),
    );
}

/// Event-driven I/O (as Envoy, Go, Java NIO use): redirected.
#[test]
fn half_close_behaves_as_on_plain_tcp() {
    half_close("poll");
}

/// Blocking I/O: a blocking reader in the sockmap would get EAGAIN when its own FIN is
/// acknowledged (tcp_bpf_recvmsg); meshaccel keeps blocking ends plain. Repeated: the
/// kernel behaviour it avoids hit about 1 run in 8.
#[test]
fn half_close_with_blocking_reads_behaves_as_on_plain_tcp() {
    for _ in 0..3 {
        half_close("blocking");
    }
}

/// Close with SO_LINGER 0 while the peer, having read (and acknowledged) the data, waits
/// in read() (blocking) or poll(): that read fails with ECONNRESET, then writes fail with
/// EPIPE and reads see EOF. A blocking read in the sockmap would return EAGAIN instead
/// (tcp_bpf_recvmsg, 6.18): blocking ends are kept plain.
fn reset_while_peer_waits_in_read(io: &str) {
    let common = ["--bytes", "65536", "--seed", "5", "--ack-after", "65536", "--io", io];
    let client_args = [&common[..], &["--delay-ms", "300"]].concat();
    same_as_plain_tcp("rst", &common, &client_args, &[], reset_expectation(65536));
}

#[test]
fn reset_while_peer_blocks_in_read_behaves_as_on_plain_tcp() {
    reset_while_peer_waits_in_read("blocking");
}

#[test]
fn reset_while_peer_polls_behaves_as_on_plain_tcp() {
    reset_while_peer_waits_in_read("poll");
}

/// Close with SO_LINGER 0 while the data still sits unread at the peer: on TCP the peer
/// still reads all of it, then gets ECONNRESET.
fn reset_with_data_unread(io: &str) {
    let common = ["--bytes", "1000", "--seed", "5", "--io", io];
    let server_args = [&common[..], &["--delay-ms", "300"]].concat();
    same_as_plain_tcp("rst", &server_args, &common, &[], reset_expectation(1000));
}

#[test]
fn reset_with_data_unread_behaves_as_on_plain_tcp() {
    reset_with_data_unread("blocking");
}

#[test]
fn reset_with_data_unread_when_event_driven_behaves_as_on_plain_tcp() {
    reset_with_data_unread("poll");
}

fn reset_expectation(n: u64) -> (Value, Value) {
    (
        json!({"received": n, "read_end": "ECONNRESET", "write_after": "EPIPE", "read_again": "eof"}),
        json!({"written": n, "eagains": 0}),
    )
}
