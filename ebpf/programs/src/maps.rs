//! Every map of the object. The loader pins each under its name, so `names::MAPS` must list
//! exactly these (installer/tests/object_maps_match_pin_names.rs checks it).
use core::ffi::c_void;
use core::ptr;

use aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE;
use aya_ebpf::bindings::{BPF_F_CLONE, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE};
#[allow(deprecated)]
use aya_ebpf::btf_maps::CgroupStorage;
use aya_ebpf::btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, SkStorage, SockHash};
use aya_ebpf::helpers::generated::bpf_sk_storage_get;
use aya_ebpf::macros::btf_map;
use meshaccel_common::{
    node, Backlog, ConnKey, ConnState, Counter, Listener, ListenerKey, Owner, PodConfig, DECISIONS_MAX_ENTRIES,
    LISTENERS_MAX_ENTRIES, SOCKS_MAX_ENTRIES,
};

#[btf_map]
pub(crate) static SOCKS: SockHash<ConnKey, { SOCKS_MAX_ENTRIES as usize }> = SockHash::new();

#[btf_map]
pub(crate) static COUNTERS: PerCpuArray<u64, { Counter::LEN as usize }> = PerCpuArray::new();

// Settings of the pod whose cgroup the running sock_ops program is attached to. Keyed by
// attachment, not by the current task: for an accepted socket the callback runs in the
// context of whichever task sent the final ACK (usually the client).
#[allow(deprecated)]
#[btf_map]
pub(crate) static POD_CONFIG: CgroupStorage<PodConfig> = CgroupStorage::new();

#[btf_map]
pub(crate) static CONN_STATE: SkStorage<ConnState> = SkStorage::new();

// Keyed by the connection (role CLIENT): the pairing decision; and by the connection with
// role READY: "the client end is in SOCKS". LRU: an entry only matters during the
// handshake and until the client's first send; connections that never send must not
// leak one.
#[btf_map]
pub(crate) static DECISION: LruHashMap<ConnKey, u32, { DECISIONS_MAX_ENTRIES as usize }> = LruHashMap::new();

// Redirected bytes not yet read, per receiving socket (keyed by its own ConnKey).
// Created by the peer's first redirect, or marked GONE by the socket leaving SOCKS (see
// Backlog::GONE); removed when the socket closes (STATE_CB).
// Not preallocated: sized for a million connections, it holds only the live ones.
#[btf_map]
pub(crate) static BACKLOG: HashMap<ConnKey, Backlog, { SOCKS_MAX_ENTRIES as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// An sk_storage map whose values accepted sockets inherit from their listener
/// (BPF_F_CLONE): aya-ebpf's `SkStorage` fixes its flags, so the BTF definition is
/// spelled out (the loader reads type and flags from the array lengths).
#[repr(C)]
pub(crate) struct ClonedSkStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: placeholder pointers patched by the loader, never dereferenced.
unsafe impl<T> Sync for ClonedSkStorage<T> {}

impl<T> ClonedSkStorage<T> {
    const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    pub(crate) fn get(&self, sk: *mut c_void, create: bool) -> *mut T {
        let flags = if create { BPF_SK_STORAGE_GET_F_CREATE.into() } else { 0 };
        // SAFETY: self is an sk_storage map; sk is a non-null full socket.
        unsafe { bpf_sk_storage_get(ptr::from_ref(self).cast_mut().cast(), sk, ptr::null_mut(), flags) }.cast()
    }
}

// Who created each socket of an accelerated pod, for the uid/gid filter rules.
#[btf_map]
pub(crate) static OWNER: ClonedSkStorage<Owner> = ClonedSkStorage::new();

// See meshaccel_common::node. A zero token (unset) disables tagging.
#[btf_map]
pub(crate) static NODE: Array<u32, { node::LEN as usize }> = Array::new();

// Listening sockets of accelerated pods (see meshaccel_common::Listener).
#[btf_map]
pub(crate) static LISTENERS: LruHashMap<ListenerKey, Listener, { LISTENERS_MAX_ENTRIES as usize }> = LruHashMap::new();

/// This socket's `CONN_STATE`, created when `create` is set.
#[inline(always)]
pub(crate) fn storage(sk: *mut c_void, create: bool) -> *mut ConnState {
    let flags = if create { BPF_SK_STORAGE_GET_F_CREATE.into() } else { 0 };
    // SAFETY: CONN_STATE is an sk_storage map; sk is a non-null full socket.
    unsafe { bpf_sk_storage_get(ptr::from_ref(&CONN_STATE).cast_mut().cast(), sk, ptr::null_mut(), flags) }
        .cast::<ConnState>()
}
