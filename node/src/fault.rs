//! Faults the tests inject, in a debug build (the tests' build) only; release builds
//! compile them away.
//!
//! * `MESHACCEL_FAULT=<point>` kills the process with SIGKILL when it reaches `<point>`, as
//!   an OOM kill or a node's crash would, so tests can check that the next DEL, GC or load
//!   converges from there.
//! * `MESHACCEL_MAX_ENTRIES=SOCKS=8,DECISION=4` loads the maps that small, so tests can
//!   fill them with a handful of connections.

/// Every point, for tests that go through all of them.
pub const POINTS: &[&str] = &[LOAD_MAPS_PINNED, ATTACH_ONE_LINK_PINNED, ADD_ATTACHED, ADD_RECORDED, DEL_UNPINNED];

/// Loading: the maps are pinned, the programs not yet.
pub const LOAD_MAPS_PINNED: &str = "load:maps-pinned";
/// Attaching a pod: its sock_create link is pinned, its sock_ops link not yet.
pub const ATTACH_ONE_LINK_PINNED: &str = "attach:one-link-pinned";
/// ADD: the pod is attached, its record not written yet.
pub const ADD_ATTACHED: &str = "add:attached";
/// ADD: attached and recorded, the result not yet returned.
pub const ADD_RECORDED: &str = "add:recorded";
/// DEL: the links are unpinned, the record not yet removed.
pub const DEL_UNPINNED: &str = "del:unpinned";

#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("MESHACCEL_FAULT").is_some_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// The map sizes `MESHACCEL_MAX_ENTRIES` asks for (debug builds; none in release builds).
pub fn max_entries() -> Vec<(String, u32)> {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("MESHACCEL_MAX_ENTRIES") {
        return v
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, n)| Some((k.trim().to_string(), n.trim().parse().ok()?)))
            .collect();
    }
    Vec::new()
}
