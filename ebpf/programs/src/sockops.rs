//! The sock_ops program: tags the SYN of an enabled pod, answers a tagged SYN in the
//! SYN-ACK, and at establishment pairs the two ends of a tagged connection of this node
//! (see the crate docs and docs/design.md).
use core::ffi::c_void;
use core::ptr;

use aya_ebpf::bindings::{
    bpf_sock_ops, BPF_ANY, BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_HDR_OPT_LEN_CB,
    BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
    BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB, BPF_SOCK_OPS_WRITE_HDR_OPT_CB,
    BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
};
use aya_ebpf::helpers::generated::{
    bpf_get_netns_cookie, bpf_load_hdr_opt, bpf_map_delete_elem, bpf_reserve_hdr_opt, bpf_sock_ops_cb_flags_set,
    bpf_store_hdr_opt,
};
use aya_ebpf::macros::sock_ops;
use aya_ebpf::programs::SockOpsContext;
use meshaccel_common::{
    ctx_remote_port, is_link_local6, mapped, node, Backlog, ConnKey, ConnState, Counter, Decision, Endpoint, PodConfig,
    RuleInput, SynOption,
};

use crate::counters::count;
use crate::ctx::{ctx_read, AF_INET, AF_INET6};
use crate::kernel::{blocking, file_of, socket_of};
use crate::listeners::{listener_blocking, record_listener};
use crate::maps::{storage, BACKLOG, DECISION, NODE, OWNER, POD_CONFIG, SOCKS};

const TCP_FLAG_SYN: u32 = 0x02;
const TCP_FLAG_ACK: u32 = 0x10;
const TCP_CLOSE: u32 = 7;
/// `BPF_LOAD_HDR_OPT_TCP_SYN`: search the SYN being answered instead of the ctx packet.
const LOAD_HDR_OPT_TCP_SYN: u64 = 1;

#[sock_ops]
pub fn meshaccel_sockops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    match ctx_read!(ops, op) {
        BPF_SOCK_OPS_TCP_CONNECT_CB => want_header_callbacks(ops, true),
        BPF_SOCK_OPS_TCP_LISTEN_CB => {
            if pod_enabled() {
                record_listener(ops);
            }
            want_header_callbacks(ops, false)
        }
        BPF_SOCK_OPS_HDR_OPT_LEN_CB => {
            if let Some(opt) = option_to_write(ops) {
                // SAFETY: ops is the program's context pointer.
                let _ = unsafe { bpf_reserve_hdr_opt(ops, u32::from(opt.len), 0) };
            }
        }
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB => {
            if let Some(opt) = option_to_write(ops) {
                // SAFETY: ops is the context; opt is a stack buffer of at least opt.len bytes.
                let _ = unsafe { bpf_store_hdr_opt(ops, ptr::from_ref(&opt).cast(), u32::from(opt.len), 0) };
            }
        }
        op @ (BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) => {
            // No more header callbacks for this socket (accepted sockets inherit the
            // listener's flags).
            let flags = ctx_read!(ops, bpf_sock_ops_cb_flags);
            if flags & BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG != 0 {
                set_cb_flags(ops, flags & !BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
            }
            let active = op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB;
            // The client pairs only when the SYN-ACK answered its tag and echoes its
            // own endpoint (no NAT in between); the server needs no tag of its own
            // here: it pairs only with a client that marked itself READY.
            if pod_enabled() && (!active || answered_unrewritten(ops)) {
                established(ops, active);
            }
        }
        BPF_SOCK_OPS_RTT_CB => leave_sockmap(ops),
        BPF_SOCK_OPS_STATE_CB => {
            // args[1] is the new state; only paired sockets ask for this callback.
            // SAFETY: reading the args array of the context.
            let new_state = unsafe { ptr::read_volatile(ptr::addr_of!((*ops).__bindgen_anon_1.args[1])) };
            if new_state == TCP_CLOSE {
                if let Some(state) = own_state(ops) {
                    let _ = BACKLOG.remove(&state.peer.peer());
                }
            }
        }
        _ => {}
    }
    1
}

/// TCP_CONNECT / TCP_LISTEN: ask to be called when headers are written, to tag the
/// SYN (client) or answer a tagged SYN in the SYN-ACK (listener). A client whose rules
/// refuse the destination does not tag (the server end applies its rules at
/// establishment, when it knows the client).
#[inline(always)]
fn want_header_callbacks(ops: *mut bpf_sock_ops, connect: bool) {
    let Some(cfg) = pod_config() else { return };
    if connect {
        let sk = ctx_read!(ops, __bindgen_anon_2.sk).cast::<c_void>();
        let Some((_, remote)) = endpoints(ops) else { return };
        if !rules_accept(cfg, sk, remote.ip, remote.port) {
            count(Counter::Filtered, 1);
            return;
        }
    }
    if node_token() != 0 {
        let flags = ctx_read!(ops, bpf_sock_ops_cb_flags);
        set_cb_flags(ops, flags | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
    }
}

/// What to write: our tag in a SYN; in a SYN-ACK, when the SYN was tagged by an
/// accelerated pod of this node, the answer echoing the client endpoint (for a SYN-ACK
/// the context's socket is the request socket, so its remote fields are the client as
/// this end sees it). Other packets carry nothing.
#[inline(always)]
fn option_to_write(ops: *mut bpf_sock_ops) -> Option<SynOption> {
    match ctx_read!(ops, skb_tcp_flags) & (TCP_FLAG_SYN | TCP_FLAG_ACK) {
        TCP_FLAG_SYN => Some(SynOption::syn(node_token())),
        f if f == TCP_FLAG_SYN | TCP_FLAG_ACK => {
            our_option(ops, LOAD_HDR_OPT_TCP_SYN)?;
            let (local, client) = endpoints(ops)?;
            // A blocking listener's connections stay plain: unanswered, the client never
            // enters SOCKS, so no reader of it can block in the sockmap's recvmsg while it
            // is taken out again (a reader there returns EAGAIN when plain bytes wake it).
            if listener_blocking(ops, &local) {
                return None;
            }
            Some(SynOption::answer(node_token(), client.echo(), client.port))
        }
        _ => None,
    }
}

/// Our option in the packet of the context (or, with BPF_LOAD_HDR_OPT_TCP_SYN, in the
/// SYN being answered), if it carries this node's token.
#[inline(always)]
fn our_option(ops: *mut bpf_sock_ops, flags: u64) -> Option<SynOption> {
    let token = node_token();
    let mut opt = SynOption::search();
    // SAFETY: ops is the context; opt is a stack buffer of the length passed.
    let n = unsafe { bpf_load_hdr_opt(ops, ptr::from_mut(&mut opt).cast(), size_of::<SynOption>() as u32, flags) };
    (token != 0 && n >= i64::from(SynOption::SYN_LEN) && opt.token() == token).then_some(opt)
}

/// The client end at ACTIVE_ESTABLISHED: the SYN-ACK carries the server's answer and
/// it echoes this socket's own endpoint.
#[inline(always)]
fn answered_unrewritten(ops: *mut bpf_sock_ops) -> bool {
    let Some(opt) = our_option(ops, 0) else { return false };
    let Some((local, _)) = endpoints(ops) else { return false };
    let same = opt.len == SynOption::ANSWER_LEN && opt.echoes(local.echo(), local.port);
    if !same {
        count(Counter::Ambiguous, 1);
    }
    same
}

/// ACTIVE/PASSIVE_ESTABLISHED for a tagged pair of this node.
fn established(ops: *mut bpf_sock_ops, active: bool) {
    let Some((local, remote)) = endpoints(ops) else { return };
    let sk = ctx_read!(ops, __bindgen_anon_2.sk).cast::<c_void>();
    if sk.is_null() {
        return;
    }
    // Data that moved before establishment (TCP Fast Open) sits in the receiver's TCP
    // queue; redirected bytes would overtake it. The SYN itself counts 1 in bytes_acked.
    let snd_nxt = ctx_read!(ops, snd_nxt);
    let data_moved = if active {
        ctx_read!(ops, bytes_acked) > 1 || ctx_read!(ops, snd_una) != snd_nxt
    } else {
        ctx_read!(ops, bytes_received) != 0
    };
    let mut key = ConnKey::at_establishment(active, local, remote, snd_nxt, ctx_read!(ops, rcv_nxt));
    if key.needs_netns_cookie() {
        // SAFETY: ops is the program's context pointer.
        key.netns_cookie = unsafe { bpf_get_netns_cookie(ops.cast::<c_void>()) };
    }
    let peer = key.peer();
    let conn = peer.connection();
    if data_moved {
        abort(&conn, &peer);
        return;
    }
    // Only non-blocking ends are paired (docs/design.md): the client by its own file,
    // now; the server, which has no file before accept(), by its listener's. A client
    // that stays out never marks READY, so its server end never pairs either.
    let file = if active { file_of(socket_of(sk)) } else { 0 };
    if active && blocking(file) {
        count(Counter::Blocking, 1);
        return;
    }
    // Before the READY check, so a blocking listener's connection counts as blocking
    // whether or not its SYN-ACK went unanswered (it did unless the listener turned
    // blocking since).
    if !active && listener_blocking(ops, &local) {
        let _ = DECISION.remove(&conn.ready());
        abort(&conn, &peer);
        count(Counter::Blocking, 1);
        return;
    }
    // The server only pairs with a client that is already in SOCKS: such a client
    // marked itself READY at its ACTIVE_ESTABLISHED, before sending the ACK that
    // triggers ours.
    if !active && DECISION.remove(&conn.ready()).is_err() {
        count(Counter::RedirectMisses, 1);
        return;
    }
    if !active && !pod_config().is_some_and(|cfg| rules_accept(cfg, sk, remote.ip, local.port)) {
        abort(&conn, &peer);
        count(Counter::Filtered, 1);
        return;
    }
    let state = storage(sk, true);
    if state.is_null() {
        abort(&conn, &peer);
        return;
    }
    // SAFETY: ops is the program's context pointer.
    if SOCKS.update(&mut key, unsafe { &mut *ops }, BPF_NOEXIST.into()).is_err() {
        // The key is taken (another connection with the same endpoint and both ISNs)
        // or the map is full: neither end may redirect.
        abort(&conn, &peer);
        count(Counter::InsertFailures, 1);
        return;
    }
    count(Counter::SocketsInserted, 1);
    let flags = ctx_read!(ops, bpf_sock_ops_cb_flags);
    set_cb_flags(ops, flags | BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG);
    // SAFETY: non-null storage of this socket; the socket is locked during the callback.
    let state = unsafe { &mut *state };
    state.peer = peer;
    state.file = file;
    if local.ip == remote.ip {
        state.flags |= ConnState::LOOPBACK;
    }
    if active {
        state.mode = ConnState::UNDECIDED;
        let _ = DECISION.insert(&conn.ready(), &Decision::READY, BPF_ANY.into());
    } else if DECISION.insert(&conn, &Decision::PAIRED, BPF_NOEXIST.into()).is_ok() {
        state.mode = ConnState::REDIRECT;
    } else {
        // The client already sent on plain TCP: both ends stay plain.
        state.mode = ConnState::PLAIN;
        remove_from_socks(&key);
        remove_from_socks(&peer);
        count(Counter::Ambiguous, 1);
    }
}

/// Both ends plain for this connection: record it and take the client (the only end
/// that can be in SOCKS already) out. Nothing was redirected into it: no server end
/// of this connection was ever inserted.
fn abort(conn: &ConnKey, client: &ConnKey) {
    let _ = DECISION.insert(conn, &Decision::PLAIN, BPF_ANY.into());
    remove_from_socks(client);
    count(Counter::Ambiguous, 1);
}

/// RTT_CB of a paired socket (ACKs flow only once it sends on plain TCP): a socket
/// that switched to plain leaves SOCKS if nothing was ever redirected into it, so its
/// sends no longer pay the sockmap's per-send cost. Either way it asks no more RTT_CBs.
fn leave_sockmap(ops: *mut bpf_sock_ops) {
    let Some(state) = own_state(ops) else { return };
    if state.mode != ConnState::PLAIN {
        return;
    }
    let flags = ctx_read!(ops, bpf_sock_ops_cb_flags);
    set_cb_flags(ops, flags & !BPF_SOCK_OPS_RTT_CB_FLAG);
    let me = state.peer.peer();
    let gone = Backlog { sent: Backlog::GONE, consumed: 0, flags: 0 };
    if BACKLOG.insert(&me, &gone, BPF_NOEXIST.into()).is_ok() {
        remove_from_socks(&me);
        count(Counter::LeftSockmap, 1);
    }
}

/// The settings of the pod this program runs for, if it is enabled.
fn pod_config() -> Option<&'static PodConfig> {
    let cfg = POD_CONFIG.get_ptr_mut();
    // SAFETY: the helper returns this attachment's storage slot, valid for this run.
    let cfg = unsafe { cfg.as_ref() }?;
    cfg.sockmap_enabled().then_some(cfg)
}

fn pod_enabled() -> bool {
    pod_config().is_some()
}

/// The pod's filter rules for this socket's connection.
#[inline(always)]
fn rules_accept(cfg: &PodConfig, sk: *mut c_void, peer_ip: [u32; 4], server_port: u32) -> bool {
    let owner = if sk.is_null() { ptr::null_mut() } else { OWNER.get(sk, false) };
    // SAFETY: non-null storage of this socket.
    let owner = unsafe { owner.as_ref() }.copied();
    cfg.accepts(&RuleInput { peer_ip, server_port: server_port as u16, owner })
}

fn node_token() -> u32 {
    NODE.get(node::TOKEN).copied().unwrap_or(0)
}

/// The endpoints of a connection in the 16-byte form of the keys: an AF_INET socket's
/// v4-mapped, an AF_INET6 socket's as they are (v4-mapped for an IPv4 peer of a dual-stack
/// socket). None (plain TCP) when an end is IPv6 link-local (see `is_link_local6`).
#[inline(always)]
fn endpoints(ops: *const bpf_sock_ops) -> Option<(Endpoint, Endpoint)> {
    let (l, r) = match ctx_read!(ops, family) {
        AF_INET => (mapped(ctx_read!(ops, local_ip4)), mapped(ctx_read!(ops, remote_ip4))),
        AF_INET6 => {
            let (l, r) = (ctx_read!(ops, local_ip6), ctx_read!(ops, remote_ip6));
            if is_link_local6(l) || is_link_local6(r) {
                return None;
            }
            (l, r)
        }
        _ => return None,
    };
    Some((
        Endpoint { ip: l, port: ctx_read!(ops, local_port) },
        Endpoint { ip: r, port: ctx_remote_port(ctx_read!(ops, remote_port)) },
    ))
}

#[inline(always)]
fn set_cb_flags(ops: *mut bpf_sock_ops, flags: u32) {
    // SAFETY: ops is the program's context pointer.
    let _ = unsafe { bpf_sock_ops_cb_flags_set(ops, flags as i32) };
}

/// The storage of the sock_ops context's socket, if it has one (paired sockets do).
#[inline(always)]
fn own_state(ops: *mut bpf_sock_ops) -> Option<&'static mut ConnState> {
    let sk = ctx_read!(ops, __bindgen_anon_2.sk).cast::<c_void>();
    if sk.is_null() {
        return None;
    }
    // SAFETY: storage of this socket, which is locked during the callback.
    unsafe { storage(sk, false).as_mut() }
}

fn socks_ptr() -> *mut c_void {
    ptr::from_ref(&SOCKS).cast_mut().cast()
}

#[inline(always)]
fn remove_from_socks(key: &ConnKey) {
    // SAFETY: deleting by key; absent keys are fine.
    let _ = unsafe { bpf_map_delete_elem(socks_ptr(), ptr::from_ref(key).cast()) };
}
