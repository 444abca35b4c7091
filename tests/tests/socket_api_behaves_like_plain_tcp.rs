//! The socket API on a connection between two pods, accelerated versus plain TCP (opted-out
//! pods): every case of `tests/programs/socket_api.py` must show the same observations on
//! both. Each case runs in two modes:
//!
//! * `nonblocking`: sockets `O_NONBLOCK` from creation (the listener from `listen()`), waiting
//!   with poll/epoll, as event-driven programs do. meshaccel redirects these connections, so
//!   the case must have moved payload by redirect (`bytes_redirected > 0`): otherwise it would
//!   compare plain TCP with itself.
//! * `blocking`: plain blocking sockets. meshaccel keeps these on plain TCP
//!   (`bytes_redirected == 0`, `blocking_plain > 0`; docs/design.md).
//!
//! Every case also runs over IPv6 between the pods of a dual-stack node (`<case>::ipv6::<mode>`).
//!
//! The script runs as server in one pod and as client in the other; they synchronise through
//! barriers relayed here over stdin/stdout (no second connection that would touch the
//! counters), so every observation happens at a defined point of the conversation.
use std::path::Path;

use meshaccel_tests::scenario::{pod_pair, TIMEOUT};
use meshaccel_tests::{Counters, Pod, Proc, TestNode};
use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/programs/socket_api.py");
const PORT: u16 = 7300;

fn script(pod: &Pod, role: &str, case: &str, mode: &str, addr: &str) -> Proc {
    let cmd = pod.command(Path::new("/usr/bin/python3"), &["-u", SCRIPT, role, case, mode, addr]).unwrap();
    Proc::spawn(&format!("{}: socket_api.py {role} {case} {mode}", pod.name()), cmd).unwrap()
}

/// An end that is at a barrier its peer never reaches (the peer finished, hung or diverged)
/// is told to abort, and reports what it observed so far (`aborted_at`).
fn result_of(p: &mut Proc, event: Value) -> Value {
    if event["event"] == "sync" {
        p.send("abort").unwrap();
        return p.expect_event("result", TIMEOUT).unwrap();
    }
    event
}

/// Runs one case between a fresh server pod and client pod (over IPv6 between dual-stack
/// pods if `ipv6`); returns both ends' observations and meshaccel's counters over the case
/// (the only TCP connection).
fn observe(accelerated: bool, case: &str, mode: &str, ipv6: bool) -> (Value, Counters) {
    let node = if ipv6 { TestNode::dual_stack() } else { TestNode::new() }.unwrap();
    let (srv_pod, cli_pod) = pod_pair(&node, accelerated).unwrap();
    let before = node.stats().unwrap();
    let (listen, connect) = if ipv6 {
        (format!("[::]:{PORT}"), format!("[{}]:{PORT}", srv_pod.ip6()))
    } else {
        (format!("0.0.0.0:{PORT}"), format!("{}:{PORT}", srv_pod.ip()))
    };
    let mut srv = script(&srv_pod, "server", case, mode, &listen);
    srv.expect_event("listening", TIMEOUT).unwrap();
    let mut cli = script(&cli_pod, "client", case, mode, &connect);
    let (s, c) = loop {
        let s = srv.expect_one_of(&["sync", "result"], TIMEOUT).unwrap();
        let c = cli.expect_one_of(&["sync", "result"], TIMEOUT).unwrap();
        if s["event"] == "sync" && c["event"] == "sync" && s["tag"] == c["tag"] {
            srv.send("go").unwrap();
            cli.send("go").unwrap();
            continue;
        }
        break (result_of(&mut srv, s), result_of(&mut cli, c));
    };
    srv.finish(TIMEOUT).unwrap();
    cli.finish(TIMEOUT).unwrap();
    let d = node.stats().unwrap().since(&before);
    (json!({"server": s["obs"], "client": c["obs"]}), d)
}

/// Where `a` and `b` differ, one line per leaf.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (u, v) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                differences(u, v, &format!("{path}.{k}"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: accelerated {a}, plain {b}")),
        _ => {}
    }
}

fn same_as_plain_tcp(case: &str, mode: &str, ipv6: bool) {
    let (plain, d) = observe(false, case, mode, ipv6);
    for end in ["server", "client"] {
        let o = &plain[end];
        assert!(o.get("hung").is_none() && o.get("aborted_at").is_none(), "the case itself, on plain TCP: {plain:#}");
    }
    assert_eq!(d.bytes_redirected, 0, "opted-out pods were redirected: {d:?}");

    let (accel, d) = observe(true, case, mode, ipv6);
    let mut problems = vec![];
    differences(&accel, &plain, case, &mut problems);
    if mode == "nonblocking" {
        if d.bytes_redirected == 0 {
            problems.push(format!("non-blocking ends were not redirected: {d:?}"));
        }
    } else if d.bytes_redirected != 0 || d.blocking_plain == 0 {
        problems.push(format!("blocking ends were redirected or not counted: {d:?}"));
    }
    assert!(
        problems.is_empty(),
        "{case} ({mode}), accelerated pods vs plain TCP:\n  {}\naccelerated: {accel}\nplain:       {plain}",
        problems.join("\n  ")
    );
}

/// One module per case, one test per mode: `peek::nonblocking`, `peek::blocking`, …, and
/// the same over IPv6: `peek::ipv6::nonblocking`, …
macro_rules! cases {
    ($($case:ident: [$($(#[$attr:meta])* $mode:ident),+];)*) => {$(
        mod $case {
            $(
                #[test]
                $(#[$attr])*
                fn $mode() {
                    super::same_as_plain_tcp(stringify!($case), stringify!($mode), false);
                }
            )+
            mod ipv6 {
                $(
                    #[test]
                    $(#[$attr])*
                    fn $mode() {
                        super::super::same_as_plain_tcp(stringify!($case), stringify!($mode), true);
                    }
                )+
            }
        }
    )*};
}

cases! {
    // recv(MSG_PEEK) then recv: the same bytes; a partial peek.
    peek: [nonblocking, blocking];
    // recv(MSG_WAITALL): non-blocking returns what is there (EAGAIN if nothing);
    // blocking waits for all of it across the peer's delayed sends.
    waitall: [nonblocking, blocking];
    // recv(MSG_DONTWAIT) with nothing, then with data; send(MSG_DONTWAIT).
    dontwait: [nonblocking, blocking];
    // FIONREAD (= SIOCINQ) after the peer sent 1234 bytes in two sends, after a partial
    // read and once drained.
    fionread: [nonblocking, blocking];
    // SIOCOUTQ / SIOCOUTQNSD of the sender once its 5000 bytes are delivered.
    siocoutq: [nonblocking, blocking];
    // "abc", 1 urgent byte "!", "def": POLLPRI, recv(MSG_OOB), SIOCATMARK, inline reads.
    oob: [#[ignore = "known difference on the redirect path (6.18), listed in README limits: the urgent byte arrives inline (bpf_tcp_ingress ignores MSG_OOB; no POLLPRI, recv(MSG_OOB) consumes normal data)"] nonblocking, blocking];
    // shutdown(SHUT_RD): readiness, local reads, the peer's writes, writing on.
    shutdown_rd: [nonblocking, blocking];
    // The peer closes with SO_LINGER {1, 0}: readiness, ECONNRESET, then EOF and EPIPE.
    linger_rst: [nonblocking, blocking];
    // os.sendfile of a 300 kB file: intact.
    sendfile: [nonblocking, blocking];
    // os.splice socket -> pipe on the receiver of 100 kB: intact.
    splice: [#[ignore = "known difference on the redirect path (6.18), listed in README limits: tcp_splice_read reads only TCP's queue: splice sees EAGAIN, then the FIN, with the redirected bytes still queued"] nonblocking, blocking];
    // epoll (server) and poll (client): EPOLLOUT, EPOLLIN at data, EPOLLRDHUP at the
    // peer's SHUT_WR, EPOLLHUP once both directions are shut.
    poll_epoll: [nonblocking, blocking];
    // EPOLLET: one event per burst of sends, none while unread data just sits.
    epollet: [nonblocking, blocking];
    // close() with 100 bytes unread: the peer sees RST (ECONNRESET).
    close_unread: [#[ignore = "known difference on the redirect path (6.18), listed in README limits: tcp_close sees no unread data in its own queue: the peer gets FIN, not RST"] nonblocking, blocking];
    // close() after reading everything: the peer sees FIN (EOF).
    close_after_read: [nonblocking, blocking];
    // SO_RCVTIMEO / SO_SNDTIMEO expiry: EAGAIN after the timeout (only blocking calls wait).
    rcvtimeo: [blocking];
    sndtimeo: [blocking];
}
