//! How connections end, redirected versus plain TCP (opted-out pods): half-close and reset
//! must look exactly the same to both ends.
use meshaccel_tests::scenario::{clean, client, only_conn, pod_pair, server, TIMEOUT};
use meshaccel_tests::TestNode;
use serde_json::{json, Value};

/// Runs one server/client scenario; returns what both ends observed and whether the data
/// went by redirect.
fn observe(accelerated: bool, mode: &str, server_args: &[&str], client_args: &[&str]) -> (Value, Value, bool) {
    let node = TestNode::new().unwrap();
    let (srv_pod, cli_pod) = pod_pair(&node, accelerated).unwrap();
    let before = node.stats().unwrap();
    let srv = server(&srv_pod, "0.0.0.0:7100", mode, server_args).unwrap();
    let cli = client(&cli_pod, &format!("{}:7100", srv_pod.ip()), mode, client_args).unwrap();
    let c = only_conn(&clean(cli.finish(TIMEOUT).unwrap()).unwrap());
    let s = only_conn(&clean(srv.finish(TIMEOUT).unwrap()).unwrap());
    let redirected = node.stats().unwrap().since(&before).bytes_redirected > 0;
    (s, c, redirected)
}

/// The scenario plain, then redirected: plain must show `expected` (so the test itself is
/// right), redirected must show the same.
fn same_as_plain_tcp(mode: &str, server_args: &[&str], client_args: &[&str], expected: (Value, Value)) {
    let plain = observe(false, mode, server_args, client_args);
    assert_eq!((&plain.0, &plain.1), (&expected.0, &expected.1), "plain TCP itself (server, client)");
    assert!(!plain.2, "opted-out pods were redirected");
    let accel = observe(true, mode, server_args, client_args);
    assert!(accel.2, "accelerated pods were not redirected");
    assert_eq!((&accel.0, &accel.1), (&plain.0, &plain.1), "redirected (left) vs plain TCP (right): (server, client)");
}

/// shutdown(SHUT_WR): the peer reads everything then EOF, and can still answer; the
/// half-closed side cannot write any more but reads the answer to EOF.
#[test]
fn half_close_behaves_as_on_plain_tcp() {
    let n = 1u64 << 20;
    let args = ["--bytes", "1048576", "--seed", "3"];
    same_as_plain_tcp(
        "halfclose",
        &args,
        &args,
        (
            json!({"received": n, "read_end": "eof", "answered": n}),
            json!({"written": n, "eagains": 0, "write_after_shutdown": "EPIPE", "answer_received": n, "answer_end": "eof"}),
        ),
    );
}

/// Close with SO_LINGER 0 after the peer has read (and acknowledged) the data: the peer's
/// next read fails with ECONNRESET, then writes fail with EPIPE and reads see EOF.
#[test]
fn reset_after_data_was_read_behaves_as_on_plain_tcp() {
    let common = ["--bytes", "65536", "--seed", "5", "--ack-after", "65536"];
    same_as_plain_tcp("rst", &common, &common, reset_expectation(65536));
}

/// Close with SO_LINGER 0 while the data still sits unread at the peer: on TCP the peer
/// still reads all of it, then gets ECONNRESET.
#[test]
fn reset_with_data_unread_behaves_as_on_plain_tcp() {
    let common = ["--bytes", "1000", "--seed", "5"];
    let server_args = [&common[..], &["--delay-ms", "300"]].concat();
    same_as_plain_tcp("rst", &server_args, &common, reset_expectation(1000));
}

fn reset_expectation(n: u64) -> (Value, Value) {
    (
        json!({"received": n, "read_end": "ECONNRESET", "write_after": "EPIPE", "read_again": "eof"}),
        json!({"written": n, "eagains": 0}),
    )
}
