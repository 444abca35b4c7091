//! Maps fill up: more connections than the sockhash holds, more decisions than the decision
//! map keeps. The node's programs are loaded with tiny maps (debug builds' fault injection,
//! node/src/fault.rs), so a handful of connections does what millions would. What does not
//! fit is counted and stays plain TCP; every connection completes with its own bytes and
//! never pairs a wrong peer.
//!
//! One test in this binary: the map sizes are chosen through the environment, which the
//! plugin (loading the programs at the first ADD) inherits.
use meshaccel_tests::mesh::{self, counters, counters_since};
use meshaccel_tests::scenario::echo_traffic;
use meshaccel_tests::TestNode;

/// Far below what the tests open at once.
const SOCKS: u32 = 8;
const DECISIONS: u32 = 4;

#[test]
fn a_full_sockhash_and_an_evicting_decision_map_keep_every_connection_intact() {
    std::env::set_var("MESHACCEL_MAX_ENTRIES", format!("SOCKS={SOCKS},DECISION={DECISIONS}"));
    let node = TestNode::new().unwrap();
    let (srv, cli) = (node.accelerated_pod("server").unwrap(), node.accelerated_pod("client").unwrap());
    std::env::remove_var("MESHACCEL_MAX_ENTRIES");

    // 32 long connections at once, 2 ends each: 64 sockets for 8 slots.
    let before = counters(&node).unwrap();
    let connect = format!("{}:7100", srv.ip());
    for io in ["poll", "blocking"] {
        echo_traffic(&srv, "0.0.0.0:7100", &cli, &connect, 32, 256 << 10, io).unwrap_or_else(|e| panic!("{io}: {e:#}"));
    }
    let d = counters_since(&counters(&node).unwrap(), &before);
    assert!(d["insert_failures"] > 0, "the sockhash never filled: {d:?}");
    assert!(d["sockets_inserted"] <= 2 * 64, "{d:?}");

    // Short connections churning through 4 decision slots: every answer is its own request's.
    let before = counters(&node).unwrap();
    let echo = mesh::echo_server(&srv, "0.0.0.0:7200", &[31]).unwrap();
    let rr = mesh::rr(&cli, &format!("{}:7200", srv.ip()), 31, &["--conns", "8", "--requests", "100", "--reconnect"])
        .unwrap();
    let label = rr.label().to_string();
    let done = rr.finish(meshaccel_tests::scenario::TIMEOUT).unwrap();
    assert_eq!(done["error_count"], 0, "{label}: {done:#}");
    assert_eq!(done["requests"].as_u64(), Some(800), "{label}: {done:#}");
    let served = mesh::stop(echo).unwrap();
    assert_eq!(served["error_count"], 0, "{served:#}");
    let d = counters_since(&counters(&node).unwrap(), &before);
    eprintln!("{d:?}");
    assert!(d["sockets_inserted"] > 0, "nothing was accelerated at all: {d:?}");
}
