//! Loopback inside a pod is accelerated, and every pod's `127.0.0.1` stays its own: the same
//! loopback 4-tuple in two pods at once never delivers one pod's data into the other.
use meshaccel_tests::scenario::{clean, client, echo_traffic, server, TIMEOUT};
use meshaccel_tests::TestNode;

#[test]
fn loopback_traffic_inside_a_pod_is_redirected_and_intact() {
    let node = TestNode::new().unwrap();
    let pod = node.accelerated_pod("lo").unwrap();
    let before = node.stats().unwrap();
    let (conns, bytes) = (8, 2 << 20);
    echo_traffic(&pod, "127.0.0.1:6000", &pod, "127.0.0.1:6000", conns, bytes, "poll").unwrap();
    let d = node.stats().unwrap().since(&before);
    let total = u64::from(conns) * bytes;
    assert!(d.bytes_redirected >= 2 * total, "{total} bytes each way, {d:?}");
}

#[test]
fn identical_loopback_tuples_in_two_pods_never_cross_deliver() {
    const CONNS: u64 = 8;
    let node = TestNode::new().unwrap();
    let pods = [node.accelerated_pod("lo-a").unwrap(), node.accelerated_pod("lo-b").unwrap()];
    let before = node.stats().unwrap();
    let conns = CONNS.to_string();
    let mut procs = vec![];
    for (pod, tag_base) in pods.iter().zip([1000u64, 2000]) {
        let tags = format!("{tag_base}..{}", tag_base + CONNS - 1);
        let srv = server(pod, "127.0.0.1:6000", "echo", &["--conns", &conns, "--expect-tags", &tags, "--io", "poll"]).unwrap();
        // Same server port and same client ports in both pods: identical 4-tuples.
        let args = ["--conns", &conns, "--bytes", "1048576", "--tag-base", &tag_base.to_string(), "--bind-port", "40000", "--wait-go", "--io", "poll"];
        let mut cli = client(pod, "127.0.0.1:6000", "verify", &args).unwrap();
        cli.expect_event("ready", TIMEOUT).unwrap();
        procs.push((srv, cli));
    }
    // Both pods' connections are established (and in the sockhash) before either sends.
    for (_, cli) in &mut procs {
        cli.send("go").unwrap();
    }
    for (srv, cli) in procs {
        let label = cli.label().to_string();
        clean(cli.finish(TIMEOUT).unwrap()).unwrap_or_else(|e| panic!("{label}: {e:#}"));
        clean(srv.finish(TIMEOUT).unwrap()).unwrap_or_else(|e| panic!("server of {label}: {e:#}"));
    }
    let d = node.stats().unwrap().since(&before);
    assert!(d.bytes_redirected >= 2 * 2 * CONNS * (1 << 20), "the traffic must have been redirected to prove anything: {d:?}");
}
