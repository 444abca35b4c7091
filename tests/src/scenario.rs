//! Traffic scenarios shared by the tests, run with `meshaccel-testkit` inside pods.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;

use crate::node::TestNode;
use crate::pod::Pod;
use crate::process::Proc;

/// Generous: debug builds on 2 cores with other tests running in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A `done` report without errors, or an error quoting it.
pub fn clean(done: Value) -> Result<Value> {
    ensure!(done["errors"].as_array().is_some_and(|e| e.is_empty()), "errors reported: {done:#}");
    Ok(done)
}

/// Starts a `serve` in `pod` and waits until it listens.
pub fn server(pod: &Pod, listen: &str, mode: &str, extra: &[&str]) -> Result<Proc> {
    let mut args = vec!["serve", "--listen", listen, "--mode", mode];
    args.extend_from_slice(extra);
    let mut p = pod.testkit(&args)?;
    p.expect_event("listening", TIMEOUT)?;
    Ok(p)
}

/// Starts a `client` in `pod`.
pub fn client(pod: &Pod, connect: &str, mode: &str, extra: &[&str]) -> Result<Proc> {
    let mut args = vec!["client", "--connect", connect, "--mode", mode];
    args.extend_from_slice(extra);
    pod.testkit(&args)
}

/// `conns` parallel connections from `from` to an echo server in `to`, each sending
/// `bytes` random bytes and checking that exactly those bytes come back, with `io`
/// (`blocking` or `poll`, see meshaccel-testkit). Returns the client's and the server's
/// reports, both checked to be free of errors.
pub fn echo_traffic(
    to: &Pod,
    listen: &str,
    from: &Pod,
    connect: &str,
    conns: u32,
    bytes: u64,
    io: &str,
) -> Result<(Value, Value)> {
    let (c, b) = (conns.to_string(), bytes.to_string());
    let server = server(to, listen, "echo", &["--conns", &c, "--io", io])?;
    let client = client(from, connect, "verify", &["--conns", &c, "--bytes", &b, "--seed", &c, "--io", io])?;
    let client_done = clean(client.finish(TIMEOUT)?)?;
    let server_done = clean(server.finish(TIMEOUT)?)?;
    Ok((client_done, server_done))
}

/// A server pod and a client pod, both accelerated or both opted out by annotation: the
/// same scenario run on both shows whether redirected TCP behaves as plain TCP.
pub fn pod_pair(node: &TestNode, accelerated: bool) -> Result<(Pod, Pod)> {
    Ok(if accelerated {
        (node.accelerated_pod("server")?, node.accelerated_pod("client")?)
    } else {
        (node.opted_out_pod("server")?, node.opted_out_pod("client")?)
    })
}

/// The report of the only connection in a `done` report.
pub fn only_conn(done: &Value) -> Value {
    done["conns"][0].clone()
}

/// `host:port` for an address of either family (`[v6]:port` for IPv6).
pub fn addr(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// The address family a scenario runs over: its twins run the same code for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// A node whose pods have an address of this family (dual-stack for IPv6).
    pub fn node(self) -> Result<TestNode> {
        match self {
            Self::V4 => TestNode::new(),
            Self::V6 => TestNode::dual_stack(),
        }
    }

    /// The pod's address of this family.
    pub fn ip(self, pod: &Pod) -> IpAddr {
        match self {
            Self::V4 => pod.ip().into(),
            Self::V6 => pod.ip6().into(),
        }
    }

    /// The wildcard listen address.
    pub fn any(self) -> IpAddr {
        match self {
            Self::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Self::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }

    pub fn loopback(self) -> IpAddr {
        match self {
            Self::V4 => Ipv4Addr::LOCALHOST.into(),
            Self::V6 => Ipv6Addr::LOCALHOST.into(),
        }
    }

    /// Loads netfilter rules (iptables-restore format) with this family's tool.
    pub fn apply_rules(self, pod: &Pod, rules: &str) -> Result<()> {
        match self {
            Self::V4 => crate::mesh::apply_iptables(pod, rules),
            Self::V6 => crate::mesh::apply_ip6tables(pod, rules),
        }
    }
}

/// One echo connection from `client` to `connect` (a listener on `listen` in `server`):
/// whether it was redirected, checking that the counters agree with themselves and that a
/// plain connection was kept plain by a filter rule.
pub fn one_echo_redirected(node: &TestNode, server: &Pod, listen: &str, client: &Pod, connect: &str) -> bool {
    let before = node.stats().unwrap();
    echo_traffic(server, listen, client, connect, 1, 256 << 10, "poll").unwrap();
    let d = node.stats().unwrap().since(&before);
    let accelerated = d.bytes_redirected > 0;
    assert_eq!(d.sockets_inserted, if accelerated { 2 } else { 0 }, "{connect}: {d:?}");
    if !accelerated {
        assert!(d.filtered >= 1, "{connect}: kept plain by a rule: {d:?}");
    }
    accelerated
}

/// Request/response over loopback `listen` (`127.0.0.1:p`, `[::1]:p`) inside one
/// accelerated pod of `node`: redirected and intact, and every answer resets the streaming
/// run, so nothing moves to plain TCP.
pub fn loopback_request_response_is_redirected(node: &TestNode, listen: &str) {
    let pod = node.accelerated_pod("lo-rr").unwrap();
    let srv = crate::mesh::echo_server(&pod, listen, &[51]).unwrap();
    let before = node.stats().unwrap();
    let (conns, requests, size) = (4u64, 500u64, 1024u64);
    let args = ["--conns", &conns.to_string(), "--requests", &requests.to_string(), "--size", &size.to_string()]
        .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = clean(crate::mesh::rr(&pod, listen, 51, &args).unwrap().finish(TIMEOUT).unwrap()).unwrap();
    clean(crate::mesh::stop(srv).unwrap()).unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!(done["requests"], conns * requests, "{done:#}");
    assert_eq!(d.sockets_inserted, 2 * conns, "{d:?}");
    assert_eq!(d.streaming_fallbacks, 0, "{d:?}");
    assert!(d.bytes_redirected >= 2 * conns * requests * size, "{d:?}");
}

/// Echo both ways between an accelerated pod and an unaccelerated one (`port` on `any`, the
/// family's wildcard listen address; `ip` picks each pod's address of that family):
/// nothing is redirected and no socket of theirs enters the sockhash.
pub fn talks_plainly(node: &TestNode, any: &str, ip: fn(&Pod) -> std::net::IpAddr, accelerated: &Pod, plain: &Pod) {
    const CONNS: u32 = 4;
    let port = 5300;
    let listen = addr(any.parse().unwrap(), port);
    let before = node.stats().unwrap();
    echo_traffic(accelerated, &listen, plain, &addr(ip(accelerated), port), CONNS, 1 << 20, "poll").unwrap();
    echo_traffic(plain, &listen, accelerated, &addr(ip(plain), port), CONNS, 1 << 20, "poll").unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!((d.msgs_redirected, d.bytes_redirected), (0, 0), "{d:?}");
    assert_eq!(d.sockets_inserted, 0, "no socket of an unpaired connection enters the sockhash: {d:?}");
    assert_eq!(d.redirect_misses, u64::from(CONNS), "the accelerated server end saw its unaccelerated clients: {d:?}");
}

/// 2000 short connections (connect, tagged request, echo, close) from two client pods to
/// two server pods (listening on `listen`) at once, 16 in flight at a time, the client
/// writing right after connect() (racing its server end's pairing); `connect(c, server)` is
/// client `c`'s address of a server. Every answer is the request's own bytes, every
/// connection completes, and nothing stays in the sockhash.
pub fn short_connections_never_cross(
    node: &TestNode,
    listen: &str,
    connect: impl Fn(usize, &Pod) -> String,
) -> std::collections::BTreeMap<&'static str, u64> {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 125;
    let mesh_counters = |n: &TestNode| crate::mesh::counters(n).unwrap();
    let clients = [node.accelerated_pod("client-1").unwrap(), node.accelerated_pod("client-2").unwrap()];
    let servers = [node.accelerated_pod("server-1").unwrap(), node.accelerated_pod("server-2").unwrap()];
    let before = mesh_counters(node);
    // Prefix 10*client + server: each server accepts only the prefixes of connections meant for it.
    let prefix = |c: usize, s: usize| 10 * (c as u32 + 1) + s as u32 + 1;
    let echo: Vec<Proc> = servers
        .iter()
        .enumerate()
        .map(|(s, pod)| crate::mesh::echo_server(pod, listen, &[prefix(0, s), prefix(1, s)]).unwrap())
        .collect();
    let (threads, requests) = (THREADS.to_string(), PER_THREAD.to_string());
    let mut load = vec![];
    for (c, pod) in clients.iter().enumerate() {
        for (s, to) in servers.iter().enumerate() {
            let args = ["--conns", &threads, "--requests", &requests, "--reconnect"];
            load.push(crate::mesh::rr(pod, &connect(c, to), prefix(c, s), &args).unwrap());
        }
    }
    let mut total = 0;
    for rr in load {
        let label = rr.label().to_string();
        let done = rr.finish(TIMEOUT).unwrap();
        assert_eq!(done["error_count"], 0, "{label}: {done:#}");
        assert_eq!(done["requests"].as_u64(), Some(THREADS * PER_THREAD), "{label}: {done:#}");
        total += done["conns_opened"].as_u64().unwrap();
    }
    for srv in echo {
        let served = crate::mesh::stop(srv).unwrap();
        assert_eq!(served["error_count"], 0, "{served:#}");
        assert_eq!(served["conns"].as_u64(), Some(2 * THREADS * PER_THREAD), "{served:#}");
    }
    assert_eq!(total, 4 * THREADS * PER_THREAD);
    let d = crate::mesh::counters_since(&mesh_counters(node), &before);
    eprintln!("{total} short connections: {d:?}");
    let count = |k: &str| d.get(k).copied().unwrap_or(0);
    assert_eq!(count("insert_failures"), 0, "{d:?}");
    assert!(count("sockets_inserted") <= 2 * total, "{d:?}");
    // Closed sockets leave the sockhash (the kernel unlinks them at close).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !crate::mesh::sockhash_keys(node).unwrap().is_empty() {
        let left = crate::mesh::sockhash_keys(node).unwrap();
        assert!(std::time::Instant::now() < deadline, "left in the sockhash: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// An echo server in `pod` for `conns` connections tagged `tag_base..`, refusing others.
pub fn tagged_echo(pod: &Pod, listen: &str, tag_base: u64, conns: u64) -> Proc {
    let (n, tags) = (conns.to_string(), format!("{tag_base}..{}", tag_base + conns - 1));
    server(pod, listen, "echo", &["--conns", &n, "--expect-tags", &tags, "--io", "poll"]).unwrap()
}

/// A `verify` client in `pod` of `conns` connections tagged `tag_base..`, each `bytes`
/// long, from local ports `bind_port..`: established and waiting for `go`.
pub fn waiting_verifier(pod: &Pod, connect: &str, conns: u64, bytes: u64, tag_base: u64, bind_port: u16) -> Proc {
    let (n, b, t, p) = (conns.to_string(), bytes.to_string(), tag_base.to_string(), bind_port.to_string());
    let args = ["--conns", &n, "--bytes", &b, "--tag-base", &t, "--bind-port", &p, "--wait-go", "--io", "poll"];
    let mut c = client(pod, connect, "verify", &args).unwrap();
    c.expect_event("ready", TIMEOUT).unwrap();
    c
}

/// `go` to every waiting client, then every client and its server must finish clean.
pub fn go_and_check(mut pairs: Vec<(Proc, Proc)>) {
    for (_, c) in &mut pairs {
        c.send("go").unwrap();
    }
    for (s, c) in pairs {
        let label = c.label().to_string();
        clean(c.finish(TIMEOUT).unwrap()).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        clean(s.finish(TIMEOUT).unwrap()).unwrap_or_else(|e| panic!("server of {label}: {e:#}"));
    }
}

/// Istio's inbound REDIRECT sends every destination port to one proxy port. A client
/// endpoint that talked to port 80 and then talks to port 9000 (allowed: another 4-tuple)
/// maps onto the same tuple after REDIRECT as the first connection, whose conntrack entry
/// lingers in TIME_WAIT; conntrack then rewrites the client port, an SNAT nobody asked for.
/// The ends do not meet; the connection works as plain TCP.
pub fn conntrack_port_remap_after_redirect(family: Family) {
    const PROXY_PORT: u16 = 15006;
    const CLIENT_PORT: u16 = 42000;
    let node = family.node().unwrap();
    let (cli, srv) = (node.accelerated_pod("client").unwrap(), node.accelerated_pod("server").unwrap());
    let redirect = format!("*nat\n-A PREROUTING -p tcp -j REDIRECT --to-ports {PROXY_PORT}\nCOMMIT\n");
    family.apply_rules(&srv, &redirect).unwrap();
    for (i, port) in [80u16, 9000].into_iter().enumerate() {
        let before = crate::mesh::counters(&node).unwrap();
        let tag = 500 + i as u64;
        let s = tagged_echo(&srv, &addr(family.any(), PROXY_PORT), tag, 1);
        let c = waiting_verifier(&cli, &addr(family.ip(&srv), port), 1, 1 << 20, tag, CLIENT_PORT);
        let seen: Vec<_> = crate::mesh::established(&srv)
            .unwrap()
            .into_iter()
            .filter(|s| s.local.port() == PROXY_PORT)
            .map(|s| s.peer)
            .collect();
        go_and_check(vec![(s, c)]);
        let d = crate::mesh::counters_since(&crate::mesh::counters(&node).unwrap(), &before);
        eprintln!("{family:?}: client port {CLIENT_PORT} to :{port}, redirected to :{PROXY_PORT}; server sees {seen:?}: {d:?}");
        let count = |k: &str| d.get(k).copied().unwrap_or(0);
        assert_eq!(count("insert_failures"), 0, "{d:?}");
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].ip(), family.ip(&cli), "{seen:?}");
        if i == 0 {
            assert_eq!(seen[0].port(), CLIENT_PORT, "nothing to remap yet");
            assert_eq!(count("sockets_inserted"), 2, "{d:?}");
            assert_eq!(count("bytes_redirected"), 2 << 20, "{d:?}");
        } else {
            assert_ne!(
                seen[0].port(),
                CLIENT_PORT,
                "conntrack kept the client port: this kernel does not make the case"
            );
            assert_eq!((count("bytes_redirected"), count("msgs_redirected")), (0, 0), "{d:?}");
            assert_eq!(count("sockets_inserted"), 0, "the client end saw the remap in the SYN-ACK's echo: {d:?}");
            assert!(count("ambiguous") >= 1, "{d:?}");
        }
    }
}
