//! Fault points for the crash tests. In a debug build (the tests' build),
//! `MESHACCEL_FAULT=<point>` kills the process with SIGKILL when it reaches `<point>`, as an
//! OOM kill or a node's crash would, so tests can check that the next DEL, GC or load
//! converges from there. Release builds compile the points away.

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
