//! Native IPv6 between accelerated pods of a dual-stack node is accelerated as IPv4 is (the
//! IPv6 twins of pod_to_pod_traffic_is_redirected_intact, loopback_is_redirected_and_isolated
//! _per_pod, unaccelerated_peer_is_not_redirected, filter_rules_decide_per_connection,
//! pairing_is_never_ambiguous and sidecar_mesh_hops_are_redirected_intact): redirected intact
//! pod↔pod and over `::1`, every pod's `::1` its own, unaccelerated peers and NAT on the path
//! left plain, IPv6 CIDRs in the filter rules, IPv4 and IPv6 connections of one dual-stack
//! listener never mistaken for each other, and Istio's `ip6tables` REDIRECT paths through
//! sidecars paired and intact, or plain.
use std::net::Ipv6Addr;

use meshaccel_tests::mesh::{self, counters, counters_since, established};
use meshaccel_tests::meshed::{echo_through_the_mesh, short_connections_through_the_sidecars, Inbound, MeshPath};
use meshaccel_tests::scenario::Family;
use meshaccel_tests::scenario::{self, clean, client, echo_traffic, server, TIMEOUT};
use meshaccel_tests::{Chain, Pod, Proc, TestNode};
use serde_json::json;

fn v6(pod: &Pod, port: u16) -> String {
    format!("[{}]:{port}", pod.ip6())
}

fn count(d: &std::collections::BTreeMap<&'static str, u64>, k: &str) -> u64 {
    d.get(k).copied().unwrap_or(0)
}

#[test]
fn ipv6_echo_between_pods_is_redirected_and_intact() {
    const CONNS: u32 = 16;
    const BYTES: u64 = 4 << 20;
    let node = TestNode::dual_stack().unwrap();
    let server = node.accelerated_pod("server").unwrap();
    let client = node.accelerated_pod("client").unwrap();
    let before = node.stats().unwrap();
    let (c, s) = echo_traffic(&server, "[::]:5201", &client, &v6(&server, 5201), CONNS, BYTES, "poll").unwrap();
    let total = u64::from(CONNS) * BYTES;
    assert_eq!(s["conns"].as_array().unwrap().iter().map(|c| c["received"].as_u64().unwrap()).sum::<u64>(), total);
    assert_eq!(c["conns"].as_array().unwrap().len(), CONNS as usize);
    let d = node.stats().unwrap().since(&before);
    assert!(d.bytes_redirected >= 2 * total, "sent {total} bytes each way: {d:?}");
    assert_eq!(d.sockets_inserted, 2 * u64::from(CONNS), "{d:?}");
    assert_eq!((d.insert_failures, d.redirect_misses, d.ambiguous), (0, 0, 0), "{d:?}");
}

/// One `[::]` listener, IPv4 clients (v4-mapped AF_INET6 sockets on the server side) and
/// IPv6 clients from the same client ports, all established before any sends: every
/// connection pairs with its own peer and carries exactly its own bytes.
#[test]
fn ipv4_and_ipv6_clients_of_one_dual_stack_listener_pair_each_with_its_own_peer() {
    const CONNS: u64 = 4;
    const BYTES: u64 = 1 << 20;
    let node = TestNode::dual_stack().unwrap();
    let srv = node.accelerated_pod("server").unwrap();
    let cli = node.accelerated_pod("client").unwrap();
    let before = node.stats().unwrap();
    let (n, all) = (CONNS.to_string(), (2 * CONNS).to_string());
    let tags = format!("100..{}", 100 + 2 * CONNS - 1);
    let s = server(&srv, "[::]:5202", "echo", &["--conns", &all, "--expect-tags", &tags, "--io", "poll"]).unwrap();
    let mut clients = vec![];
    for (base, connect) in [(100u64, format!("{}:5202", srv.ip())), (100 + CONNS, v6(&srv, 5202))] {
        let args = [
            "--conns",
            &n,
            "--bytes",
            &BYTES.to_string(),
            "--tag-base",
            &base.to_string(),
            "--bind-port",
            "40000",
            "--wait-go",
            "--io",
            "poll",
        ];
        let mut c = client(&cli, &connect, "verify", &args).unwrap();
        c.expect_event("ready", TIMEOUT).unwrap();
        clients.push(c);
    }
    for c in &mut clients {
        c.send("go").unwrap();
    }
    for c in clients {
        let label = c.label().to_string();
        clean(c.finish(TIMEOUT).unwrap()).unwrap_or_else(|e| panic!("{label}: {e:#}"));
    }
    clean(s.finish(TIMEOUT).unwrap()).unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.sockets_inserted, 2 * 2 * CONNS, "{d:?}");
    assert_eq!(d.bytes_redirected, 2 * 2 * CONNS * BYTES, "{d:?}");
    assert_eq!((d.insert_failures, d.ambiguous, d.redirect_misses), (0, 0, 0), "{d:?}");
}

#[test]
fn ipv6_loopback_request_response_is_redirected_and_intact() {
    scenario::loopback_request_response_is_redirected(&TestNode::dual_stack().unwrap(), "[::1]:6000");
}

/// The same `::1` 4-tuples in two pods at once: each pair is redirected within its own pod.
#[test]
fn identical_ipv6_loopback_tuples_in_two_pods_never_cross_deliver() {
    const CONNS: u64 = 8;
    let node = TestNode::dual_stack().unwrap();
    let pods = [node.accelerated_pod("lo-a").unwrap(), node.accelerated_pod("lo-b").unwrap()];
    let before = node.stats().unwrap();
    let pairs = pods
        .iter()
        .zip([1000u64, 2000])
        .map(|(pod, tags)| {
            let srv = scenario::tagged_echo(pod, "[::1]:6000", tags, CONNS);
            (srv, scenario::waiting_verifier(pod, "[::1]:6000", CONNS, 1 << 20, tags, 40000))
        })
        .collect();
    scenario::go_and_check(pairs);
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.sockets_inserted, 2 * 2 * CONNS, "{d:?}");
    assert!(d.bytes_redirected >= 2 * 2 * CONNS * (1 << 20), "the traffic must have been redirected: {d:?}");
    assert_eq!((d.insert_failures, d.ambiguous), (0, 0), "{d:?}");
}

fn talks_plainly_over_ipv6(node: &TestNode, accelerated: &Pod, plain: &Pod) {
    scenario::talks_plainly(node, "::", |p| p.ip6().into(), accelerated, plain);
}

#[test]
fn ipv6_peer_of_a_chain_without_meshaccel_is_not_redirected() {
    let node = TestNode::dual_stack().unwrap();
    let accelerated = node.accelerated_pod("fast").unwrap();
    let plain = node.pod("plain").chain(Chain::BridgeOnly).start().unwrap();
    talks_plainly_over_ipv6(&node, &accelerated, &plain);
}

#[test]
fn ipv6_peer_opted_out_by_annotation_is_not_redirected() {
    let node = TestNode::dual_stack().unwrap();
    let accelerated = node.accelerated_pod("fast").unwrap();
    let plain = node.opted_out_pod("optout").unwrap();
    talks_plainly_over_ipv6(&node, &accelerated, &plain);
}

/// One echo connection to `server`:`port` (over IPv6 or IPv4): whether it was redirected.
fn redirected(node: &TestNode, server: &Pod, client: &Pod, port: u16, ipv6: bool) -> bool {
    let connect = if ipv6 { v6(server, port) } else { format!("{}:{port}", server.ip()) };
    scenario::one_echo_redirected(node, server, &format!("[::]:{port}"), client, &connect)
}

#[test]
fn rules_select_ipv6_connections_by_cidr_and_ipv4_networks_only_ipv4_peers() {
    let node = TestNode::dual_stack_with_sockmap(json!({
        "enabled": true,
        "rules": [
            // Test pods get IPv6 addresses in fd00:6d61::/32 (the harness's pool).
            {"cidr": "fd00:6d61::/32", "ports": 5640, "action": "return"},
            {"cidr": "2001:db8::/32", "ports": 5641, "action": "return"},
            {"cidr": "0.0.0.0/0", "ports": 5642, "action": "return"},
            {"cidr": "10.192.0.0/10", "ports": 5643, "action": "return"},
            {"cidr": "::/0", "ports": 5644, "action": "return"},
            {"ports": 5645, "action": "return"},
        ],
        "defaultAction": "accept",
    }))
    .unwrap();
    let server = node.accelerated_pod("server").unwrap();
    let client = node.accelerated_pod("client").unwrap();
    assert!(!redirected(&node, &server, &client, 5640, true), "the IPv6 peer is inside the CIDR");
    assert!(redirected(&node, &server, &client, 5640, false), "an IPv6 CIDR does not match an IPv4 peer");
    assert!(redirected(&node, &server, &client, 5641, true), "the IPv6 peer is outside the CIDR");
    assert!(redirected(&node, &server, &client, 5642, true), "0.0.0.0/0 matches no IPv6 peer");
    assert!(!redirected(&node, &server, &client, 5642, false), "0.0.0.0/0 matches every IPv4 peer");
    assert!(redirected(&node, &server, &client, 5643, true), "an IPv4 CIDR does not match an IPv6 peer");
    assert!(!redirected(&node, &server, &client, 5643, false));
    assert!(!redirected(&node, &server, &client, 5644, true), "::/0 matches IPv6 peers");
    assert!(!redirected(&node, &server, &client, 5644, false), "and IPv4 ones (v4-mapped)");
    assert!(!redirected(&node, &server, &client, 5645, true), "a rule without a CIDR, over IPv6");
    assert!(redirected(&node, &server, &client, 5700, true), "no rule matches: default accept");
}

/// A tagged client of one connection from local port `bind`, established and waiting.
fn tagged_client(from: &Pod, connect: &str, tag: u64, bind: u16) -> Proc {
    let (tag, bind) = (tag.to_string(), bind.to_string());
    let args =
        ["--conns", "1", "--bytes", "1048576", "--tag-base", &tag, "--bind-port", &bind, "--wait-go", "--io", "poll"];
    let mut c = client(from, connect, "verify", &args).unwrap();
    c.expect_event("ready", TIMEOUT).unwrap();
    c
}

fn tagged_server(pod: &Pod, listen: &str, tag: u64) -> Proc {
    let tags = format!("{tag}..{tag}");
    server(pod, listen, "echo", &["--conns", "1", "--expect-tags", &tags, "--io", "poll"]).unwrap()
}

/// One IPv6 client endpoint towards two server pods, both connections live before either
/// sends: each pairs with its own server end.
#[test]
fn one_ipv6_client_endpoint_towards_two_servers_pairs_each_with_its_own_peer() {
    let node = TestNode::dual_stack().unwrap();
    let pods = [
        node.accelerated_pod("client").unwrap(),
        node.accelerated_pod("server-1").unwrap(),
        node.accelerated_pod("server-2").unwrap(),
    ];
    let [c, s1, s2] = &pods;
    let bind = 41000;
    let before = counters(&node).unwrap();
    let servers = [tagged_server(s1, "[::]:5400", 11), tagged_server(s2, "[::]:5400", 12)];
    let clients = [tagged_client(c, &v6(s1, 5400), 11, bind), tagged_client(c, &v6(s2, 5400), 12, bind)];
    let live: Vec<_> = established(c).unwrap().into_iter().filter(|s| s.local.port() == bind).collect();
    assert_eq!(live.len(), 2, "one endpoint, two live connections: {live:?}");
    assert_eq!(live[0].local, live[1].local);
    assert!(live[0].local.is_ipv6());
    let mut pairs: Vec<_> = servers.into_iter().zip(clients).collect();
    for (_, c) in &mut pairs {
        c.send("go").unwrap();
    }
    scenario::go_and_check(pairs);
    let d = counters_since(&counters(&node).unwrap(), &before);
    assert_eq!(count(&d, "sockets_inserted"), 4, "both connections paired: {d:?}");
    assert_eq!(count(&d, "bytes_redirected"), 2 * 2 * (1 << 20), "{d:?}");
    assert_eq!(count(&d, "insert_failures") + count(&d, "ambiguous"), 0, "{d:?}");
}

/// Source NAT (NAT66) in the client pod rewrites the client endpoint the server sees, to
/// another address or to other ports: the SYN-ACK's echo (a digest of the IPv6 address)
/// no longer matches, the client end stays out of the sockhash, both ends plain TCP.
#[test]
fn ipv6_snat_on_the_path_leaves_connections_plain_and_working() {
    let node = TestNode::dual_stack().unwrap();
    let srv = node.accelerated_pod("server").unwrap();
    let mut seg = srv.ip6().segments();
    seg[7] = 0x250;
    let other_addr = Ipv6Addr::from(seg);
    let cases = [
        ("SNAT to another address", format!("-j SNAT --to-source {other_addr}")),
        ("MASQUERADE to other ports", "-j MASQUERADE --to-ports 20000-20999".to_string()),
    ];
    for (i, (case, target)) in cases.iter().enumerate() {
        let cli = node.accelerated_pod(&format!("client-{i}")).unwrap();
        if i == 0 {
            // Deprecated at once (preferred_lft 0): never chosen as a source address itself.
            let addr = format!("{other_addr}/128");
            let args = ["-6", "addr", "add", &addr, "dev", "eth0", "nodad", "preferred_lft", "0"];
            mesh::in_netns(&cli, "ip", &args).unwrap();
        }
        mesh::apply_ip6tables(&cli, &format!("*nat\n-A POSTROUTING -p tcp -d {}/128 {target}\nCOMMIT\n", srv.ip6()))
            .unwrap();
        let before = counters(&node).unwrap();
        let s =
            server(&srv, "[::]:5500", "echo", &["--conns", "4", "--expect-tags", "900..903", "--io", "poll"]).unwrap();
        let args = ["--conns", "4", "--bytes", "4194304", "--tag-base", "900", "--wait-go", "--io", "poll"];
        let mut c = client(&cli, &v6(&srv, 5500), "verify", &args).unwrap();
        c.expect_event("ready", TIMEOUT).unwrap();
        let seen: Vec<_> =
            established(&srv).unwrap().into_iter().filter(|s| s.local.port() == 5500).map(|s| s.peer).collect();
        let sent_from: Vec<_> =
            established(&cli).unwrap().into_iter().filter(|s| s.peer.port() == 5500).map(|s| s.local).collect();
        assert_eq!((seen.len(), sent_from.len()), (4, 4), "{case}: {seen:?} {sent_from:?}");
        assert!(seen.iter().all(|p| !sent_from.contains(p)), "{case}: NAT did not rewrite: {seen:?} {sent_from:?}");
        // Mid-connection: no socket of these connections is in the sockhash.
        let keys = mesh::sockhash_keys(&node).unwrap();
        assert!(keys.is_empty(), "{case}: unpaired sockets in the sockhash: {keys:?}");
        c.send("go").unwrap();
        scenario::go_and_check(vec![(s, c)]);
        let d = counters_since(&counters(&node).unwrap(), &before);
        assert_eq!((count(&d, "bytes_redirected"), count(&d, "msgs_redirected")), (0, 0), "{case}: {d:?}");
        assert_eq!((count(&d, "sockets_inserted"), count(&d, "insert_failures")), (0, 0), "{case}: {d:?}");
        assert!(count(&d, "ambiguous") >= 4, "{case}: each client saw a wrong echo: {d:?}");
    }
}

/// The streaming rule over IPv6 pod↔pod: a stream of small writes moves to plain TCP, its
/// sender leaves the sockmap, bytes intact (twin of streaming_moves_to_plain_tcp).
#[test]
fn ipv6_stream_of_small_writes_moves_to_plain_tcp_and_its_sender_leaves_the_sockmap() {
    const CONNS: u64 = 4;
    let node = TestNode::dual_stack().unwrap();
    let (srv_pod, cli_pod) = (node.accelerated_pod("server").unwrap(), node.accelerated_pod("client").unwrap());
    let before = node.stats().unwrap();
    let common = ["--conns", "4", "--seed", "5", "--io", "poll", "--write-size", "16", "--bytes", "1048576"];
    let srv = server(&srv_pod, "[::]:7100", "sink", &common).unwrap();
    let cli = client(&cli_pod, &v6(&srv_pod, 7100), "send", &common).unwrap();
    clean(cli.finish(TIMEOUT).unwrap()).unwrap();
    let s = clean(srv.finish(TIMEOUT).unwrap()).unwrap();
    let received: u64 = s["conns"].as_array().unwrap().iter().map(|c| c["received"].as_u64().unwrap()).sum();
    assert_eq!(received, CONNS << 20);
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.sockets_inserted, 2 * CONNS, "every connection paired: {d:?}");
    assert_eq!((d.streaming_fallbacks, d.left_sockmap), (CONNS, CONNS), "{d:?}");
    assert!(d.bytes_redirected > 0 && d.bytes_redirected < CONNS << 16, "{d:?}");
}

/// Over `::1` every send is batchable (both ends on one address): a bulk stream moves to
/// plain TCP after its first redirected sends, intact (twin of
/// loopback_stream_moves_to_plain_tcp_intact).
#[test]
fn ipv6_loopback_stream_moves_to_plain_tcp_intact() {
    let node = TestNode::dual_stack().unwrap();
    let pod = node.accelerated_pod("lo-stream").unwrap();
    let before = node.stats().unwrap();
    let srv = server(&pod, "[::1]:6001", "sink", &["--conns", "4", "--seed", "9", "--io", "poll"]).unwrap();
    let args = ["--conns", "4", "--bytes", "8388608", "--seed", "9", "--io", "poll"];
    clean(client(&pod, "[::1]:6001", "send", &args).unwrap().finish(TIMEOUT).unwrap()).unwrap();
    let served = clean(srv.finish(TIMEOUT).unwrap()).unwrap();
    let received: u64 = served["conns"].as_array().unwrap().iter().map(|c| c["received"].as_u64().unwrap()).sum();
    assert_eq!(received, 4 * (8 << 20));
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.sockets_inserted, 8, "{d:?}");
    assert_eq!((d.streaming_fallbacks, d.left_sockmap), (4, 4), "{d:?}");
    assert!(d.bytes_redirected > 0, "{d:?}");
}

/// Blocking ends stay plain over IPv6 too (twin of blocking_reads_wait_like_plain_tcp).
#[test]
fn ipv6_blocking_full_duplex_reads_wait_on_accelerated_pods() {
    let node = TestNode::dual_stack().unwrap();
    let (server, client) = (node.accelerated_pod("server").unwrap(), node.accelerated_pod("client").unwrap());
    let before = node.stats().unwrap();
    echo_traffic(&server, "[::]:5400", &client, &v6(&server, 5400), 16, 4 << 20, "blocking").unwrap();
    let d = node.stats().unwrap().since(&before);
    assert_eq!(d.bytes_redirected, 0, "{d:?}");
    assert_eq!(d.blocking_plain, 16, "{d:?}");
}

/// An IPv6 listener that accepts blocking sockets is learned as the IPv4 one is (twin of
/// blocking_servers_are_learned_per_listener): the first connection pairs, its server end
/// marks the `[::]` listener, later connections stay plain from their handshake. The same
/// answers as on plain TCP.
#[test]
fn ipv6_later_connections_to_a_listener_that_accepts_blocking_sockets_stay_plain() {
    const CONNS: &str = "6";
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/programs/accept_blocking.py");
    let node = TestNode::dual_stack().unwrap();
    let python = std::path::Path::new("/usr/bin/python3");
    let mut outcomes = vec![];
    for accelerated in [false, true] {
        let (srv_pod, cli_pod) = meshaccel_tests::scenario::pod_pair(&node, accelerated).unwrap();
        let before = node.stats().unwrap();
        let mut srv =
            Proc::spawn("server", srv_pod.command(python, &[program, "server", "7300", CONNS, "::"]).unwrap()).unwrap();
        srv.expect_event("listening", TIMEOUT).unwrap();
        let ip = srv_pod.ip6().to_string();
        let args = [program, "client", &ip, "7300", CONNS];
        let cli = Proc::spawn("client", cli_pod.command(python, &args).unwrap()).unwrap();
        let (c, s) = (cli.finish(TIMEOUT).unwrap(), srv.finish(TIMEOUT).unwrap());
        outcomes.push((c, s, node.stats().unwrap().since(&before)));
    }
    let (plain, accel) = (&outcomes[0], &outcomes[1]);
    assert_eq!(plain.2.bytes_redirected, 0, "{:?}", plain.2);
    assert_eq!((&accel.0, &accel.1), (&plain.0, &plain.1), "accelerated (left) vs plain TCP (right)");
    let d = accel.2;
    assert!(d.bytes_redirected > 4096, "{d:?}");
    assert_eq!(d.msgs_redirected, 2, "one request, one answer: {d:?}");
    assert_eq!(d.blocking_plain, CONNS.parse::<u64>().unwrap(), "{d:?}");
}

/// 2000 short connections (connect, tagged request, echo, close), IPv6 from one client pod
/// and IPv4 from another, to two `[::]` server pods at once, 16 in flight at a time, the
/// client writing right after connect() (racing its server end's pairing): every answer is
/// the request's own bytes, every connection completes, nothing stays in the sockhash
/// (twin of pairing_is_never_ambiguous::many_short_parallel_connections_never_cross).
#[test]
fn many_short_ipv6_and_ipv4_connections_never_cross() {
    let node = TestNode::dual_stack().unwrap();
    let connect = |c: usize, to: &Pod| if c == 0 { v6(to, 7000) } else { format!("{}:7000", to.ip()) };
    let d = scenario::short_connections_never_cross(&node, "[::]:7000", connect);
    assert!(d.get("sockets_inserted").is_some_and(|&n| n > 0), "{d:?}");
}

/// A blocking `0.0.0.0` listener and a non-blocking `[::]` one (`IPV6_V6ONLY`) on the same
/// port: each accepted end is judged by its own listener (the two have distinct
/// `LISTENERS` keys), so the IPv6 connections are redirected and the IPv4 ones, whose
/// server ends read blocking, stay plain from their handshake. The same answers as on
/// plain TCP.
#[test]
fn blocking_ipv4_and_nonblocking_ipv6_listeners_on_one_port_are_judged_apart() {
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/programs/two_listeners.py");
    let python = std::path::Path::new("/usr/bin/python3");
    let node = TestNode::dual_stack().unwrap();
    let mut outcomes = vec![];
    for accelerated in [false, true] {
        let (srv_pod, cli_pod) = meshaccel_tests::scenario::pod_pair(&node, accelerated).unwrap();
        let mut srv =
            Proc::spawn("server", srv_pod.command(python, &[program, "server", "7400", "3", "3"]).unwrap()).unwrap();
        srv.expect_event("listening", TIMEOUT).unwrap();
        let run_client = |ip: String| {
            let before = node.stats().unwrap();
            let cli = Proc::spawn("client", cli_pod.command(python, &[program, "client", &ip, "7400", "3"]).unwrap())
                .unwrap();
            (cli.finish(TIMEOUT).unwrap(), node.stats().unwrap().since(&before))
        };
        let (v4, d4) = run_client(srv_pod.ip().to_string());
        let (v6, d6) = run_client(srv_pod.ip6().to_string());
        outcomes.push((v4, v6, srv.finish(TIMEOUT).unwrap(), d4, d6));
    }
    let (plain, accel) = (&outcomes[0], &outcomes[1]);
    assert_eq!(plain.3.bytes_redirected + plain.4.bytes_redirected, 0, "{:?} {:?}", plain.3, plain.4);
    assert_eq!((&accel.0, &accel.1, &accel.2), (&plain.0, &plain.1, &plain.2), "accelerated (left) vs plain TCP");
    let (d4, d6) = (accel.3, accel.4);
    // The client ends enter the sockhash at their establishment and are taken out again
    // when their server end refuses the pairing, before anything is redirected.
    assert_eq!((d4.bytes_redirected, d4.msgs_redirected), (0, 0), "IPv4: the blocking listener's: {d4:?}");
    assert_eq!(d4.blocking_plain, 3, "IPv4: each server end judged by its blocking listener: {d4:?}");
    assert_eq!(d6.sockets_inserted, 6, "IPv6: the non-blocking listener's, all paired: {d6:?}");
    assert_eq!((d6.msgs_redirected, d6.blocking_plain), (6, 0), "IPv6: one request, one answer each: {d6:?}");
}

/// Dual-stack sidecars capturing IPv6 with Istio's `ip6tables` rules, the app on `[::]`
/// and the inbound proxy reaching it on `::1`: both ends of all three hops (app → proxy A
/// on `::1`, proxy A → proxy B REDIRECTed in B, proxy B → app) are paired before a byte
/// moves, and every byte of each hop is redirected, intact.
#[test]
fn ipv6_sidecar_hops_through_ip6tables_redirect_are_paired_redirected_and_intact() {
    echo_through_the_mesh(true, MeshPath::plain(Family::V6));
}

/// Istio's IPv6 inbound passthrough: proxy B connects from `::6` (on `lo`) to the pod's own
/// address, exempt from capture by `-s ::6/128 -o lo -j RETURN`. The hop is paired all
/// the same (its client address, on `lo` in every pod, carries the netns cookie).
#[test]
fn ipv6_inbound_passthrough_from_6_is_paired_too() {
    echo_through_the_mesh(true, MeshPath { inbound: Inbound::Passthrough, ..MeshPath::plain(Family::V6) });
}

#[test]
fn ipv6_opted_out_pods_keep_the_mesh_on_plain_tcp() {
    echo_through_the_mesh(false, MeshPath::plain(Family::V6));
}

#[test]
fn short_ipv6_connections_through_the_sidecars_are_intact() {
    short_connections_through_the_sidecars(MeshPath { inbound: Inbound::Passthrough, ..MeshPath::plain(Family::V6) });
}

/// Twin of pairing_is_never_ambiguous's, with `ip6tables` REDIRECT: see
/// [`scenario::conntrack_port_remap_after_redirect`].
#[test]
fn ipv6_conntrack_port_remap_after_redirect_leaves_the_connection_plain_and_working() {
    scenario::conntrack_port_remap_after_redirect(Family::V6);
}
