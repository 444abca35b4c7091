//! A sidecar mesh built the way Istio builds it (see meshaccel_tests::mesh): two accelerated
//! pods, each with haproxy as its sidecar under uid 1337 and Istio's nat rules. An app
//! request from pod A to pod B crosses three TCP connections, and meshaccel pairs and
//! redirects every one of them although `REDIRECT` gives their two ends different 4-tuples
//! (the scenarios, shared with the IPv6 twins in ipv6_is_accelerated_like_ipv4, are in
//! meshaccel_tests::meshed).
use meshaccel_tests::meshed::{echo_through_the_mesh, short_connections_through_the_sidecars, Inbound, MeshPath};
use meshaccel_tests::scenario::Family;

#[test]
fn all_three_hops_are_paired_redirected_and_intact() {
    echo_through_the_mesh(true, MeshPath::plain(Family::V4));
}

/// An app listening on `[::]` accepts the inbound proxy's IPv4 connection as a v4-mapped
/// IPv6 socket: the last hop is paired all the same.
#[test]
fn dual_stack_app_behind_the_sidecar_is_paired_too() {
    echo_through_the_mesh(true, MeshPath { app_listen: Family::V6.any(), ..MeshPath::plain(Family::V4) });
}

/// Istio's inbound passthrough: proxy B connects from `127.0.0.6` to the pod's own address
/// (exempt from capture by `-s 127.0.0.6/32 -o lo -j RETURN`); that hop's client address, in
/// every pod, is keyed with the netns cookie, and the hop is paired like the others.
#[test]
fn inbound_passthrough_from_127_0_0_6_is_paired_too() {
    echo_through_the_mesh(true, MeshPath { inbound: Inbound::Passthrough, ..MeshPath::plain(Family::V4) });
}

/// Pods opted out by annotation keep their sidecar traffic on plain TCP: nothing enters
/// the sockhash, and everything arrives.
#[test]
fn opted_out_pods_keep_the_mesh_on_plain_tcp() {
    echo_through_the_mesh(false, MeshPath::plain(Family::V4));
}

#[test]
fn short_connections_through_the_sidecars_are_intact() {
    short_connections_through_the_sidecars(MeshPath::plain(Family::V4));
}
