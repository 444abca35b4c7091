//! Traffic through two pods meshed with Istio-style sidecars ([`crate::mesh::Sidecar`]),
//! shared by the IPv4 tests (sidecar_mesh_hops_are_redirected_intact) and their IPv6 twins.
//! An app request from pod A to pod B crosses three TCP connections, whose two ends
//! `REDIRECT` gives different 4-tuples; each must be paired and intact, or plain.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use crate::mesh::{self, counters, counters_since, established, Ipv6Routes, Sidecar, INBOUND_PORT, OUTBOUND_PORT};
use crate::node::TestNode;
use crate::pod::Pod;
use crate::scenario::{addr, clean, client, server, Family, TIMEOUT};

pub const APP_PORT: u16 = 8080;
const HOPS: [&str; 3] = ["app→proxy A", "proxy A→proxy B", LAST];
/// The only hop whose client address (`127.0.0.1`, `::1`, `::6`) exists in every pod:
/// its keys carry the netns cookie, the others' (pod addresses) none.
const LAST: &str = "proxy B→app";

/// How the inbound proxy reaches its app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// On the loopback address (`127.0.0.1`, `::1`).
    Loopback,
    /// Istio's inbound passthrough: from `127.0.0.6` (`::6`) to the pod's own address.
    Passthrough,
}

/// One way through the mesh: the family app A connects with, where app B listens
/// (`0.0.0.0`, `[::]`) and how proxy B reaches it.
#[derive(Clone, Copy, Debug)]
pub struct MeshPath {
    pub family: Family,
    pub app_listen: IpAddr,
    pub inbound: Inbound,
}

impl MeshPath {
    /// The family's own listener and loopback hop.
    pub fn plain(family: Family) -> Self {
        Self { family, app_listen: family.any(), inbound: Inbound::Loopback }
    }

    /// Where proxy B connects to its app (pod B's address for the passthrough).
    fn app_address(self, b: &Pod) -> SocketAddr {
        let ip = match self.inbound {
            Inbound::Loopback => self.family.loopback(),
            Inbound::Passthrough => self.family.ip(b),
        };
        SocketAddr::new(ip, APP_PORT)
    }
}

/// Two pods with their sidecars, accelerated or opted out by annotation. Over IPv6 the
/// sidecars are dual-stack, forwarding as `path` says.
pub fn meshed_pair(node: &TestNode, accelerated: bool, path: MeshPath) -> (Pod, Pod, [Sidecar; 2]) {
    let pod = |name| if accelerated { node.accelerated_pod(name) } else { node.opted_out_pod(name) }.unwrap();
    let (a, b) = (pod("app-a"), pod("app-b"));
    let sidecars = match path.family {
        Family::V4 => {
            let inject =
                if path.inbound == Inbound::Passthrough { Sidecar::inject_passthrough } else { Sidecar::inject };
            [inject(&a).unwrap(), inject(&b).unwrap()]
        }
        Family::V6 => {
            let routes = |this: &Pod, peer: &Pod| Ipv6Routes {
                outbound: SocketAddr::new(peer.ip6().into(), APP_PORT),
                inbound: path.app_address(this),
            };
            [
                Sidecar::inject_dual_stack(&a, routes(&a, &b)).unwrap(),
                Sidecar::inject_dual_stack(&b, routes(&b, &a)).unwrap(),
            ]
        }
    };
    (a, b, sidecars)
}

/// The client endpoints of the live connections of each hop, from both pods' sockets.
fn hops(client_pod: &Pod, server_pod: &Pod, to_app: SocketAddr) -> [Vec<SocketAddr>; 3] {
    let (a, b) = (established(client_pod).unwrap(), established(server_pod).unwrap());
    let app_to_proxy = a.iter().filter(|s| s.local.port() == OUTBOUND_PORT).map(|s| s.peer).collect();
    let proxy_to_proxy = b.iter().filter(|s| s.local.port() == INBOUND_PORT).map(|s| s.peer).collect();
    let proxy_to_app = b.iter().filter(|s| s.peer == to_app).map(|s| s.local).collect();
    [app_to_proxy, proxy_to_proxy, proxy_to_app]
}

fn count(d: &BTreeMap<&str, u64>, k: &str) -> u64 {
    d.get(k).copied().unwrap_or(0)
}

/// Tagged echo traffic from app A to app B through both sidecars along `path`; before any
/// byte moves, checks for every hop that each connection's two ends are in the sockhash
/// (`accelerated`) or that none is (pods opted out), and that each hop's client endpoints
/// are of the expected family. Returns meshaccel's counters over the traffic.
pub fn echo_through_the_mesh(accelerated: bool, path: MeshPath) -> BTreeMap<&'static str, u64> {
    const CONNS: u64 = 8;
    const BYTES: u64 = 2 << 20;
    let node = path.family.node().unwrap();
    let (a, b, _sidecars) = meshed_pair(&node, accelerated, path);
    let before = counters(&node).unwrap();
    let (conns, bytes) = (CONNS.to_string(), BYTES.to_string());
    let tags = format!("7000..{}", 7000 + CONNS - 1);
    let listen = addr(path.app_listen, APP_PORT);
    let srv = server(&b, &listen, "echo", &["--conns", &conns, "--expect-tags", &tags, "--io", "poll"]).unwrap();
    let connect = addr(path.family.ip(&b), APP_PORT);
    let args = ["--conns", &conns, "--bytes", &bytes, "--tag-base", "7000", "--wait-go", "--io", "poll"];
    let mut cli = client(&a, &connect, "verify", &args).unwrap();
    cli.expect_event("ready", TIMEOUT).unwrap();

    // Every app connection is up; the proxies' own connections follow (haproxy connects at
    // accept), and all six ends of each request's path are paired before a byte moves.
    // (Sockhash iteration can miss entries inserted meanwhile: check until it all holds.)
    let (to_app, v6) = (path.app_address(&b), path.family == Family::V6);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let keys = if accelerated { mesh::sockhash_keys(&node).unwrap() } else { vec![] };
        let mut wrong = vec![];
        for (hop, clients) in HOPS.iter().zip(hops(&a, &b, to_app)) {
            if clients.len() as u64 != CONNS {
                wrong.push(format!("{hop}: {} connections", clients.len()));
            }
            for c in clients {
                if c.is_ipv6() != v6 {
                    wrong.push(format!("{hop}: client {c} of the other family"));
                } else if accelerated && !mesh::both_ends_paired(&keys, c) {
                    wrong.push(format!("{hop}: client {c} not paired"));
                } else if accelerated && mesh::keys_of(&keys, c).iter().any(|k| (k.netns_cookie != 0) != (*hop == LAST))
                {
                    wrong.push(format!("{hop}: client {c}: netns cookie only in the last hop's keys"));
                }
            }
        }
        if wrong.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{wrong:?}; sockhash {keys:?}");
        thread::sleep(Duration::from_millis(20));
    }

    cli.send("go").unwrap();
    clean(cli.finish(TIMEOUT).unwrap()).unwrap();
    let served = clean(srv.finish(TIMEOUT).unwrap()).unwrap();
    let received: u64 = served["conns"].as_array().unwrap().iter().map(|c| c["received"].as_u64().unwrap()).sum();
    assert_eq!(received, CONNS * BYTES);

    let d = counters_since(&counters(&node).unwrap(), &before);
    eprintln!("{path:?}: counters: {d:?}");
    let (redirected, inserted) = if accelerated { (3 * 2 * CONNS * BYTES, 6 * CONNS) } else { (0, 0) };
    // Each hop carries every byte once each way; accelerated, all of it went by redirect,
    // unless an end that streamed ahead of its echo moved to plain TCP (the streaming
    // rule, docs/design.md), which this bulk echo can trigger on the loopback hop.
    if count(&d, "streaming_fallbacks") == 0 {
        assert_eq!(count(&d, "bytes_redirected"), redirected, "{d:?}");
    } else {
        assert!(count(&d, "bytes_redirected") > 0, "{d:?}");
    }
    assert_eq!(count(&d, "sockets_inserted"), inserted, "two ends per hop: {d:?}");
    for k in ["insert_failures", "redirect_misses", "ambiguous", "backpressure_fallbacks"] {
        assert_eq!(count(&d, k), 0, "{k}: {d:?}");
    }
    d
}

/// Short connections through the sidecars (connect, request, answer, close), many at once:
/// the app writes right after connect() and each proxy right after its own connect, the
/// race the pairing decision exists for. Nothing arrives where it was not sent, every
/// request is answered, and sockets of connections that ended are gone from the sockhash.
pub fn short_connections_through_the_sidecars(path: MeshPath) {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 100;
    let node = path.family.node().unwrap();
    let (a, b, _sidecars) = meshed_pair(&node, true, path);
    let before = counters(&node).unwrap();
    let srv = mesh::echo_server(&b, &addr(path.app_listen, APP_PORT), &[41]).unwrap();
    let (threads, requests) = (THREADS.to_string(), PER_THREAD.to_string());
    let args = ["--conns", &threads, "--requests", &requests, "--reconnect"];
    let rr = mesh::rr(&a, &addr(path.family.ip(&b), APP_PORT), 41, &args).unwrap();
    let done = rr.finish(TIMEOUT).unwrap();
    let served = mesh::stop(srv).unwrap();
    let d = counters_since(&counters(&node).unwrap(), &before);
    eprintln!("{path:?}: client: {done}\nserver: {served}\ncounters: {d:?}");
    assert_eq!(done["error_count"], 0, "{done:#}");
    assert_eq!(served["error_count"], 0, "{served:#}");
    assert_eq!(done["requests"].as_u64(), Some(THREADS * PER_THREAD));
    assert_eq!(served["conns"].as_u64(), Some(THREADS * PER_THREAD));
    assert_eq!(count(&d, "insert_failures"), 0, "{d:?}");
    assert!(count(&d, "sockets_inserted") <= 6 * THREADS * PER_THREAD, "{d:?}");
    assert!(count(&d, "bytes_redirected") > 0, "some hops must have been redirected to prove anything: {d:?}");
    // Closed sockets leave the sockhash (the kernel unlinks them at close).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mesh::sockhash_keys(&node).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "left in the sockhash: {:?}", mesh::sockhash_keys(&node).unwrap());
        thread::sleep(Duration::from_millis(50));
    }
}
