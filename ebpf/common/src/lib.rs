//! Types shared by meshaccel's BPF programs and user space.
//!
//! Every map key and value is defined here once, `#[repr(C)]` with explicit padding, so the
//! kernel side and the loader can never disagree about a layout. The modules split them by
//! concern; everything is re-exported here, so users name `meshaccel_common::ConnKey`.
#![no_std]

mod conn;
mod counters;
mod limits;
pub mod names;
pub mod node;
mod pod;
mod state;
mod syn_option;

pub use conn::{
    ctx_remote_port, digest6, is_link_local6, is_loopback, is_loopback4, mapped, v4_mapped, ConnKey, Decision, Endpoint,
};
pub use counters::Counter;
pub use limits::{DECISIONS_MAX_ENTRIES, LISTENERS_MAX_ENTRIES, MAX_BACKLOG, SOCKS_MAX_ENTRIES};
pub use pod::{Owner, PodConfig, Rule, RuleInput, MAX_RULES};
pub use state::{Backlog, ConnState, Listener, ListenerKey, BULK_SEND, SMALL_SEND, STREAM_RUN};
pub use syn_option::SynOption;

#[cfg(feature = "user")]
mod user {
    // SAFETY (each): plain-old-data, #[repr(C)], no padding holes (checked by each
    // module's layout test).
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PodConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backlog {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Owner {}
}

/// An IPv4 address in network byte order, as the contexts give it (for the tests).
#[cfg(test)]
fn ip(a: [u8; 4]) -> u32 {
    u32::from_be_bytes(a).to_be()
}

/// An IPv6 address as the contexts give it (four network-order words), from its groups.
#[cfg(test)]
fn ip6(g: [u16; 8]) -> [u32; 4] {
    let w = |i: usize| ((u32::from(g[2 * i]) << 16) | u32::from(g[2 * i + 1])).to_be();
    [w(0), w(1), w(2), w(3)]
}
