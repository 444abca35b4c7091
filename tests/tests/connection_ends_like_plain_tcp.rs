//! How connections end, redirected versus plain TCP (opted-out pods): half-close and reset
//! must look exactly the same to both ends.
use meshaccel_tests::scenario::{client, only_conn, pod_pair, server, TIMEOUT};
use meshaccel_tests::TestNode;
use serde_json::{json, Value};

/// Runs one server/client scenario; returns what both ends observed (errors included) and
/// whether the data went by redirect.
fn observe(accelerated: bool, mode: &str, server_args: &[&str], client_args: &[&str]) -> (Value, bool) {
    let node = TestNode::new().unwrap();
    let (srv_pod, cli_pod) = pod_pair(&node, accelerated).unwrap();
    let before = node.stats().unwrap();
    let srv = server(&srv_pod, "0.0.0.0:7100", mode, server_args).unwrap();
    let cli = client(&cli_pod, &format!("{}:7100", srv_pod.ip()), mode, client_args).unwrap();
    let (c, s) = (cli.finish(TIMEOUT).unwrap(), srv.finish(TIMEOUT).unwrap());
    let seen = json!({"server": only_conn(&s), "server_errors": s["errors"], "client": only_conn(&c), "client_errors": c["errors"]});
    (seen, node.stats().unwrap().since(&before).bytes_redirected > 0)
}

/// The scenario plain, then redirected: plain must show `expected` (so the test itself is
/// right), redirected must show the same. Fields named in `timing` (per end) are left out of
/// both: they measure buffer timing, not the behaviour under test.
fn same_as_plain_tcp(mode: &str, server_args: &[&str], client_args: &[&str], timing: &[&str], (server, client): (Value, Value)) {
    let strip = |mut v: Value| {
        for end in ["server", "client"] {
            if let Some(o) = v[end].as_object_mut() {
                timing.iter().for_each(|k| drop(o.remove(*k)));
            }
        }
        v
    };
    let expected = json!({"server": server, "server_errors": [], "client": client, "client_errors": []});
    let (plain, redirected) = observe(false, mode, server_args, client_args);
    let plain = strip(plain);
    assert_eq!(plain, expected, "plain TCP itself");
    assert!(!redirected, "opted-out pods were redirected");
    let (accel, redirected) = observe(true, mode, server_args, client_args);
    assert!(redirected, "accelerated pods were not redirected");
    assert_eq!(strip(accel), plain, "redirected (left) vs plain TCP (right)");
}

/// shutdown(SHUT_WR): the peer reads everything then EOF, and can still answer; the
/// half-closed side cannot write any more but reads the answer to EOF. Event-driven I/O (as
/// Envoy, Go, Java NIO use): a blocking reader would hit the kernel's spurious EAGAIN when its
/// FIN is acknowledged (tcp_bpf_recvmsg, see blocking_reads_wait_like_plain_tcp), about 1 run in
/// 8 here.
#[test]
fn half_close_behaves_as_on_plain_tcp() {
    let n = 1u64 << 20;
    let args = ["--bytes", "1048576", "--seed", "3", "--io", "poll"];
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

/// Close with SO_LINGER 0 while the peer, having read (and acknowledged) the data, is
/// blocked in read(): that read fails with ECONNRESET, then writes fail with EPIPE and reads
/// see EOF.
#[test]
#[ignore = "kernel tcp_bpf_recvmsg (6.18): a read() blocked when the peer resets returns EAGAIN instead of ECONNRESET; then write ECONNRESET (plain EPIPE), read ECONNRESET (plain EOF)"]
fn reset_while_peer_blocks_in_read_behaves_as_on_plain_tcp() {
    let common = ["--bytes", "65536", "--seed", "5", "--ack-after", "65536"];
    let client_args = [&common[..], &["--delay-ms", "300"]].concat();
    same_as_plain_tcp("rst", &common, &client_args, &[], reset_expectation(65536));
}

/// Close with SO_LINGER 0 while the data still sits unread at the peer: on TCP the peer
/// still reads all of it, then gets ECONNRESET.
#[test]
fn reset_with_data_unread_behaves_as_on_plain_tcp() {
    let common = ["--bytes", "1000", "--seed", "5"];
    let server_args = [&common[..], &["--delay-ms", "300"]].concat();
    same_as_plain_tcp("rst", &server_args, &common, &[], reset_expectation(1000));
}

fn reset_expectation(n: u64) -> (Value, Value) {
    (
        json!({"received": n, "read_end": "ECONNRESET", "write_after": "EPIPE", "read_again": "eof"}),
        json!({"written": n, "eagains": 0}),
    )
}
