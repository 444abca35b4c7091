//! The network's filter rules decide, per connection and at establishment, which
//! connections of accelerated pods are redirected: server port ranges, peer CIDR and the
//! socket owner's uid (for an accepted socket, the listener's owner, inherited from it).
//! Filtered connections work on plain TCP and never enter the sockhash.
use meshaccel_tests::scenario;
use meshaccel_tests::{Pod, TestNode};
use serde_json::json;

/// Runs one echo connection from `client` to `server`:`port` and says whether it was
/// redirected, checking the counters agree with themselves.
fn redirected(node: &TestNode, server: &Pod, client: &Pod, port: u16) -> bool {
    scenario::one_echo_redirected(node, server, &format!("0.0.0.0:{port}"), client, &format!("{}:{port}", server.ip()))
}

#[test]
fn rules_select_connections_by_port_cidr_and_owner() {
    let node = TestNode::with_sockmap(json!({
        "enabled": true,
        "rules": [
            {"ports": "5601", "action": "return"},
            {"ports": "5610-5619", "action": "accept"},
            // The listener runs as root: its accepted sockets inherit owner uid 0.
            {"ports": 5620, "uid": 0, "action": "return"},
            {"ports": 5621, "uid": 4242, "action": "return"},
            // Test pods get addresses in 10.200.0.0–10.255.255.255 (the harness's pool).
            {"cidr": "10.192.0.0/10", "ports": 5640, "action": "return"},
            {"cidr": "192.0.2.0/24", "ports": 5641, "action": "return"},
            {"ports": "5630-5639", "action": "return"},
        ],
        "defaultAction": "accept",
    }))
    .unwrap();
    let server = node.accelerated_pod("server").unwrap();
    let client = node.accelerated_pod("client").unwrap();

    assert!(!redirected(&node, &server, &client, 5601), "a single-port return rule");
    assert!(redirected(&node, &server, &client, 5615), "inside an accept range");
    assert!(!redirected(&node, &server, &client, 5620), "the owner's uid matches");
    assert!(redirected(&node, &server, &client, 5621), "another uid: the rule does not match");
    assert!(!redirected(&node, &server, &client, 5633), "inside a return range");
    assert!(!redirected(&node, &server, &client, 5640), "the peer is inside the CIDR");
    assert!(redirected(&node, &server, &client, 5641), "the peer is outside the CIDR");
    assert!(redirected(&node, &server, &client, 5700), "no rule matches: default accept");
}

#[test]
fn default_return_keeps_unmatched_connections_plain() {
    let node = TestNode::with_sockmap(json!({
        "enabled": true,
        "rules": [{"ports": "5801", "action": "accept"}],
        "defaultAction": "return",
    }))
    .unwrap();
    let server = node.accelerated_pod("server").unwrap();
    let client = node.accelerated_pod("client").unwrap();
    assert!(redirected(&node, &server, &client, 5801));
    assert!(!redirected(&node, &server, &client, 5802));
}
