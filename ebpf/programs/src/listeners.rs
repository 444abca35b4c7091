//! Listening sockets of accelerated pods (`LISTENERS`): recorded by sock_ops at
//! `listen()`, consulted when they accept a connection, marked by sk_msg when a socket
//! they accepted turns out to read in blocking mode.
use aya_ebpf::bindings::{bpf_sock_ops, sk_msg_md, BPF_ANY};
use aya_ebpf::helpers::generated::bpf_get_netns_cookie;
use meshaccel_common::{v4_mapped, Endpoint, Listener, ListenerKey};

use crate::ctx::{ctx_read, AF_INET, AF_INET6};
use crate::kernel::{blocking, file_of, socket_of};
use crate::maps::LISTENERS;

/// A local address as `LISTENERS` keys it: IPv4 (v4-mapped too), 0 for any (`0.0.0.0`,
/// `[::]`, which also accepts IPv4 clients); None for pure IPv6, which stays plain.
#[inline(always)]
fn listen_ip4(family: u32, ip4: u32, ip6: [u32; 4]) -> Option<u32> {
    match family {
        AF_INET => Some(ip4),
        AF_INET6 if ip6 == [0; 4] => Some(0),
        AF_INET6 => v4_mapped(ip6),
        _ => None,
    }
}

/// The listener recorded on `key`'s address, else on any address of its port.
#[inline(always)]
fn find_listener(mut key: ListenerKey) -> Option<*mut Listener> {
    LISTENERS.get_ptr_mut(&key).or_else(|| {
        key.ip4 = 0;
        LISTENERS.get_ptr_mut(&key)
    })
}

/// The `ListenerKey` of a sock_ops context's local address.
#[inline(always)]
fn listener_key(ops: *const bpf_sock_ops, ip4: u32) -> ListenerKey {
    // SAFETY: ops is the program's context pointer.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ops.cast_mut().cast()) };
    ListenerKey { netns_cookie, ip4, port: ctx_read!(ops, local_port) }
}

/// TCP_LISTEN of an enabled pod: remember the listener's socket and file, so that
/// connections it accepts can be judged by its mode (see [`listener_blocking`]).
#[inline(always)]
pub(crate) fn record_listener(ops: *mut bpf_sock_ops) {
    let Some(ip4) = listen_ip4(ctx_read!(ops, family), ctx_read!(ops, local_ip4), ctx_read!(ops, local_ip6)) else {
        return;
    };
    let socket = socket_of(ctx_read!(ops, __bindgen_anon_2.sk).cast());
    let file = file_of(socket);
    if file != 0 {
        let _ =
            LISTENERS.insert(&listener_key(ops, ip4), &Listener { socket, file, accepted_blocking: 0 }, BPF_ANY.into());
    }
}

/// Whether the listener that accepted the context's connection (on `local`) reads
/// in blocking mode now; unknown listeners (one that listened before its pod was
/// attached) count as blocking.
#[inline(always)]
pub(crate) fn listener_blocking(ops: *const bpf_sock_ops, local: &Endpoint) -> bool {
    // SAFETY: a live map value, copied at once.
    let Some(l) = find_listener(listener_key(ops, local.ip4)).map(|p| unsafe { *p }) else { return true };
    // A listener closed since has a freed socket: its file field no longer matches.
    file_of(l.socket) != l.file || l.accepted_blocking != 0 || blocking(l.file)
}

/// Marks the listener of the accepted socket sending `msg` as accepting blocking sockets.
#[inline(always)]
pub(crate) fn mark_listener(msg: *const sk_msg_md) {
    let Some(ip4) = listen_ip4(ctx_read!(msg, family), ctx_read!(msg, local_ip4), ctx_read!(msg, local_ip6)) else {
        return;
    };
    // SAFETY: msg is the program's context pointer.
    let netns_cookie = unsafe { bpf_get_netns_cookie(msg.cast_mut().cast()) };
    if let Some(l) = find_listener(ListenerKey { netns_cookie, ip4, port: ctx_read!(msg, local_port) }) {
        // SAFETY: a live map value; a racing writer sets the same value.
        unsafe { (*l).accepted_blocking = 1 };
    }
}
