//! Two accelerated pods on one bridge, set up through the real CNI chain: their TCP traffic
//! is redirected by sk_msg, and every byte arrives intact and in order, in both directions,
//! over many parallel connections.
use meshaccel_tests::cgroup::{Driver, Qos};
use meshaccel_tests::scenario::echo_traffic;
use meshaccel_tests::TestNode;

const CONNS: u32 = 16;
const BYTES: u64 = 4 << 20;

fn bulk_echo_is_redirected(listen: &str) {
    let node = TestNode::new().unwrap();
    let server = node.accelerated_pod("server").unwrap();
    // Another kubelet layout for the client: the plugin must find both.
    let client = node.pod("client").qos(Qos::Burstable).driver(Driver::Systemd).start().unwrap();
    let before = node.stats().unwrap();

    let connect = format!("{}:5201", server.ip());
    let (c, s) = echo_traffic(&server, listen, &client, &connect, CONNS, BYTES, "poll").unwrap();

    let total = u64::from(CONNS) * BYTES;
    assert_eq!(s["conns"].as_array().unwrap().iter().map(|c| c["received"].as_u64().unwrap()).sum::<u64>(), total);
    assert_eq!(c["conns"].as_array().unwrap().len(), CONNS as usize);
    let d = node.stats().unwrap().since(&before);
    assert!(
        d.bytes_redirected >= 2 * total,
        "sent {total} bytes each way, only {} redirected: {d:?}",
        d.bytes_redirected
    );
    assert_eq!(d.sockets_inserted, 2 * u64::from(CONNS), "{d:?}");
    assert_eq!((d.insert_failures, d.redirect_misses), (0, 0), "{d:?}");
}

#[test]
fn ipv4_echo_between_pods_is_redirected_and_intact() {
    bulk_echo_is_redirected("0.0.0.0:5201");
}

/// A server on `[::]` accepts IPv4 clients as v4-mapped IPv6 sockets; they are accelerated too.
#[test]
fn dual_stack_listener_is_redirected_and_intact() {
    bulk_echo_is_redirected("[::]:5201");
}
