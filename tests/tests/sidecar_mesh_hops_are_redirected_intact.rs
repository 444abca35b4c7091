//! A sidecar mesh built the way Istio builds it (see meshaccel_tests::mesh): two accelerated
//! pods, each with haproxy as its sidecar under uid 1337 and Istio's nat rules. An app
//! request from pod A to pod B crosses three TCP connections, and meshaccel pairs and
//! redirects every one of them although `REDIRECT` gives their two ends different 4-tuples.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use meshaccel_tests::mesh::{self, counters, counters_since, established, Sidecar, INBOUND_PORT, OUTBOUND_PORT};
use meshaccel_tests::scenario::{clean, client, server, TIMEOUT};
use meshaccel_tests::{Pod, TestNode};
use serde_json::Value;

const APP_PORT: u16 = 8080;
const HOPS: [&str; 3] = ["app→proxy A", "proxy A→proxy B", "proxy B→app"];

/// The client endpoints of the live connections of each hop, from both pods' sockets.
fn hops(client_pod: &Pod, server_pod: &Pod) -> [Vec<SocketAddr>; 3] {
    let (a, b) = (established(client_pod).unwrap(), established(server_pod).unwrap());
    let app_to_proxy = a.iter().filter(|s| s.local.port() == OUTBOUND_PORT).map(|s| s.peer).collect();
    let proxy_to_proxy = b.iter().filter(|s| s.local.port() == INBOUND_PORT).map(|s| s.peer).collect();
    let to_app: SocketAddr = ([127, 0, 0, 1], APP_PORT).into();
    let proxy_to_app = b.iter().filter(|s| s.peer == to_app).map(|s| s.local).collect();
    [app_to_proxy, proxy_to_proxy, proxy_to_app]
}

fn meshed_pair(node: &TestNode, accelerated: bool) -> (Pod, Pod, [Sidecar; 2]) {
    let pod = |name| if accelerated { node.accelerated_pod(name) } else { node.opted_out_pod(name) }.unwrap();
    let (a, b) = (pod("app-a"), pod("app-b"));
    let sidecars = [Sidecar::inject(&a).unwrap(), Sidecar::inject(&b).unwrap()];
    (a, b, sidecars)
}

fn count(d: &BTreeMap<&str, u64>, k: &str) -> u64 {
    d.get(k).copied().unwrap_or(0)
}

/// Tagged echo traffic from app A to app B (listening on `app_host`) through both sidecars;
/// before any byte moves, checks for every hop that each connection's two ends are in the
/// sockhash (`accelerated`) or that none is (pods opted out).
fn echo_through_the_mesh(accelerated: bool, app_host: &str) -> BTreeMap<&'static str, u64> {
    const CONNS: u64 = 8;
    const BYTES: u64 = 2 << 20;
    let node = TestNode::new().unwrap();
    let (a, b, _sidecars) = meshed_pair(&node, accelerated);
    let before = counters(&node).unwrap();
    let (conns, bytes) = (CONNS.to_string(), BYTES.to_string());
    let tags = format!("7000..{}", 7000 + CONNS - 1);
    let listen = format!("{app_host}:{APP_PORT}");
    let srv = server(&b, &listen, "echo", &["--conns", &conns, "--expect-tags", &tags, "--io", "poll"]).unwrap();
    let connect = format!("{}:{APP_PORT}", b.ip());
    let args = ["--conns", &conns, "--bytes", &bytes, "--tag-base", "7000", "--wait-go", "--io", "poll"];
    let mut cli = client(&a, &connect, "verify", &args).unwrap();
    cli.expect_event("ready", TIMEOUT).unwrap();

    // Every app connection is up; the proxies' own connections follow (haproxy connects at
    // accept), and all six ends of each request's path are paired before a byte moves.
    // (Sockhash iteration can miss entries inserted meanwhile: check until it all holds.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let keys = if accelerated { mesh::sockhash_keys(&node).unwrap() } else { vec![] };
        let wrong: Vec<String> = HOPS
            .iter()
            .zip(hops(&a, &b))
            .flat_map(|(hop, clients)| {
                let missing = (clients.len() as u64 != CONNS).then(|| format!("{hop}: {} connections", clients.len()));
                let unpaired = clients.into_iter().filter(|c| accelerated && !mesh::both_ends_paired(&keys, *c));
                missing.into_iter().chain(unpaired.map(move |c| format!("{hop}: client {c} not paired")))
            })
            .collect();
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
    eprintln!("counters: {d:?}");
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

#[test]
fn all_three_hops_are_paired_redirected_and_intact() {
    echo_through_the_mesh(true, "0.0.0.0");
}

/// An app listening on `[::]` accepts the inbound proxy's IPv4 connection as a v4-mapped
/// IPv6 socket: the last hop is paired all the same.
#[test]
fn dual_stack_app_behind_the_sidecar_is_paired_too() {
    echo_through_the_mesh(true, "[::]");
}

/// Pods opted out by annotation keep their sidecar traffic on plain TCP: nothing enters
/// the sockhash, and everything arrives.
#[test]
fn opted_out_pods_keep_the_mesh_on_plain_tcp() {
    echo_through_the_mesh(false, "0.0.0.0");
}

/// Short connections through the sidecars (connect, request, answer, close), many at once:
/// the app writes right after connect() and each proxy right after its own connect, the
/// race the pairing decision exists for. Nothing arrives where it was not sent, every
/// request is answered, and sockets of connections that ended are gone from the sockhash.
#[test]
fn short_connections_through_the_sidecars_are_intact() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 100;
    let node = TestNode::new().unwrap();
    let (a, b, _sidecars) = meshed_pair(&node, true);
    let before = counters(&node).unwrap();
    let srv = mesh::echo_server(&b, &format!("0.0.0.0:{APP_PORT}"), &[41]).unwrap();
    let (threads, requests) = (THREADS.to_string(), PER_THREAD.to_string());
    let rr = mesh::rr(
        &a,
        &format!("{}:{APP_PORT}", b.ip()),
        41,
        &["--conns", &threads, "--requests", &requests, "--reconnect"],
    )
    .unwrap();
    let done: Value = rr.finish(TIMEOUT).unwrap();
    let served = mesh::stop(srv).unwrap();
    let d = counters_since(&counters(&node).unwrap(), &before);
    eprintln!("client: {done}\nserver: {served}\ncounters: {d:?}");
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
