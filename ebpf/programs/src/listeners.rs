//! Listening sockets of accelerated pods (`LISTENERS`): recorded by sock_ops at
//! `listen()`, consulted when they accept a connection, marked by sk_msg when a socket
//! they accepted turns out to read in blocking mode.
use aya_ebpf::bindings::{bpf_sock_ops, sk_msg_md, BPF_ANY};
use aya_ebpf::helpers::generated::bpf_get_netns_cookie;
use meshaccel_common::{mapped, Endpoint, Listener, ListenerKey};

use crate::ctx::{ctx_read, AF_INET, AF_INET6};
use crate::kernel::{blocking, file_of, socket_of};
use crate::maps::LISTENERS;

/// A local address as `LISTENERS` keys it (see `ListenerKey`): an AF_INET socket's
/// v4-mapped, an AF_INET6 socket's as it is.
#[inline(always)]
fn listen_ip(family: u32, ip4: u32, ip6: [u32; 4]) -> Option<[u32; 4]> {
    match family {
        AF_INET => Some(mapped(ip4)),
        AF_INET6 => Some(ip6),
        _ => None,
    }
}

/// The listener recorded on `key`'s address, else on the any address of its port and
/// family (`0.0.0.0` for AF_INET, `[::]` for AF_INET6, which also accepts IPv4 clients as
/// AF_INET6 sockets): an accepted socket has its listener's family.
#[inline(always)]
fn find_listener(mut key: ListenerKey, family: u32) -> Option<*mut Listener> {
    LISTENERS.get_ptr_mut(&key).or_else(|| {
        key.ip = if family == AF_INET { mapped(0) } else { [0; 4] };
        LISTENERS.get_ptr_mut(&key)
    })
}

/// The `ListenerKey` of a sock_ops context's local address.
#[inline(always)]
fn listener_key(ops: *const bpf_sock_ops, ip: [u32; 4]) -> ListenerKey {
    // SAFETY: ops is the program's context pointer.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ops.cast_mut().cast()) };
    ListenerKey { netns_cookie, ip, port: ctx_read!(ops, local_port), _reserved: 0 }
}

/// TCP_LISTEN of an enabled pod: remember the listener's socket and file, so that
/// connections it accepts can be judged by its mode (see [`listener_blocking`]).
#[inline(always)]
pub(crate) fn record_listener(ops: *mut bpf_sock_ops) {
    let Some(ip) = listen_ip(ctx_read!(ops, family), ctx_read!(ops, local_ip4), ctx_read!(ops, local_ip6)) else {
        return;
    };
    let socket = socket_of(ctx_read!(ops, __bindgen_anon_2.sk).cast());
    let file = file_of(socket);
    if file != 0 {
        let _ =
            LISTENERS.insert(&listener_key(ops, ip), &Listener { socket, file, accepted_blocking: 0 }, BPF_ANY.into());
    }
}

/// Whether the listener that accepted the context's connection (on `local`) reads
/// in blocking mode now; unknown listeners (one that listened before its pod was
/// attached) count as blocking.
#[inline(always)]
pub(crate) fn listener_blocking(ops: *const bpf_sock_ops, local: &Endpoint) -> bool {
    let family = ctx_read!(ops, family);
    // SAFETY: a live map value, copied at once.
    let Some(l) = find_listener(listener_key(ops, local.ip), family).map(|p| unsafe { *p }) else { return true };
    // A listener closed since has a freed socket: its file field no longer matches.
    file_of(l.socket) != l.file || l.accepted_blocking != 0 || blocking(l.file)
}

/// Marks the listener of the accepted socket sending `msg` as accepting blocking sockets.
#[inline(always)]
pub(crate) fn mark_listener(msg: *const sk_msg_md) {
    let family = ctx_read!(msg, family);
    let Some(ip) = listen_ip(family, ctx_read!(msg, local_ip4), ctx_read!(msg, local_ip6)) else {
        return;
    };
    // SAFETY: msg is the program's context pointer.
    let netns_cookie = unsafe { bpf_get_netns_cookie(msg.cast_mut().cast()) };
    let key = ListenerKey { netns_cookie, ip, port: ctx_read!(msg, local_port), _reserved: 0 };
    if let Some(l) = find_listener(key, family) {
        // SAFETY: a live map value; a racing writer sets the same value.
        unsafe { (*l).accepted_blocking = 1 };
    }
}
