//! The sk_msg program (on `SOCKS`): decides a client end at its first send, then redirects
//! each send of a REDIRECT socket into its peer's receive queue, counting it in the peer's
//! `BACKLOG`, until the peer falls too far behind or the sender streams (see the crate docs).
use core::ffi::c_void;
use core::ptr;

use aya_ebpf::bindings::{sk_action::SK_PASS, sk_msg_md, BPF_F_INGRESS, BPF_NOEXIST};
use aya_ebpf::macros::sk_msg;
use aya_ebpf::programs::SkMsgContext;
use meshaccel_common::{node, Backlog, ConnKey, ConnState, Counter, Decision, MAX_BACKLOG, STREAM_RUN};

use crate::counters::count;
use crate::ctx::ctx_read;
use crate::kernel::{blocking, file_of, socket_of};
use crate::listeners::mark_listener;
use crate::maps::{storage, BACKLOG, DECISION, NODE, SOCKS};

const TCP_ESTABLISHED: u32 = 1;
const TCP_CLOSE_WAIT: u32 = 8;

#[sk_msg]
pub fn meshaccel_skmsg(ctx: SkMsgContext) -> u32 {
    let msg = ctx.msg;
    let sk = ctx_read!(msg, __bindgen_anon_3.sk).cast::<c_void>();
    let state = storage(sk, false);
    if state.is_null() {
        count(Counter::MsgPassed, 1);
        return SK_PASS;
    }
    // SAFETY: non-null storage of this socket, serialised by the socket lock.
    let state = unsafe { &mut *state };
    if state.mode == ConnState::UNDECIDED {
        decide_at_first_send(state);
    }
    if state.mode != ConnState::REDIRECT {
        count(Counter::MsgPassed, 1);
        return SK_PASS;
    }
    watch_blocking(msg, sk, state);
    // After shutdown(SHUT_WR) (FIN_WAIT*, LAST_ACK, …) a send must fail with EPIPE; the
    // redirect path does not check, the TCP path does.
    let tcp_state = ctx_read!(sk.cast::<aya_ebpf::bindings::bpf_sock>(), state);
    if tcp_state != TCP_ESTABLISHED && tcp_state != TCP_CLOSE_WAIT {
        count(Counter::MsgPassed, 1);
        return SK_PASS;
    }
    let first = state.flags & ConnState::INBOX == 0;
    if first {
        // The first redirect creates the peer's entry, unless the peer left SOCKS (GONE)
        // or made it itself, pinned.
        if BACKLOG.insert(&state.peer, &Backlog::default(), BPF_NOEXIST.into()).is_err()
            // SAFETY: reading a live map value.
            && BACKLOG.get_ptr(&state.peer).is_none_or(|b| unsafe { (*b).sent } == Backlog::GONE)
        {
            return to_plain(state);
        }
        state.flags |= ConnState::INBOX;
    }
    let Some(backlog) = BACKLOG.get_ptr_mut(&state.peer) else {
        // The peer closed (its entry goes at TCP_CLOSE): nothing left to reorder against.
        return to_plain(state);
    };
    // SAFETY: a live map value; `sent` has no other writer (see Backlog).
    let backlog = unsafe { &mut *backlog };
    // A blocking reader is never moved to plain (see Backlog::PINNED).
    let movable = ctx_read!(backlog, flags) & Backlog::PINNED == 0;
    let size = ctx_read!(msg, size);
    if !state.batchable(size) {
        state.streak = 0;
    } else if streaming(state) && movable {
        count(Counter::Streaming, 1);
        return to_plain(state);
    }
    let size = i64::from(size);
    let consumed = ctx_read!(backlog, consumed);
    // Without the fexit accounting (kernels that refuse tracing programs) consumption is
    // unknown and the bound cannot be enforced; `meshaccel status` reports that.
    let accounting = NODE.get(node::ACCOUNTING).copied().unwrap_or(0) != 0;
    if accounting && movable && backlog.sent.wrapping_sub(consumed) as i64 + size > MAX_BACKLOG {
        state.mode = ConnState::PLAIN;
        count(Counter::Backpressure, 1);
        return SK_PASS;
    }
    // Counted before the redirect: the reader may consume it before we return.
    let sent = backlog.sent;
    backlog.sent = sent + size as u64;
    if SOCKS.redirect_msg(&ctx, &mut state.peer, BPF_F_INGRESS.into()) == SK_PASS as i64 {
        count(Counter::MsgRedirected, 1);
        count(Counter::BytesRedirected, size as u64);
        return SK_PASS;
    }
    // The peer closed: nothing is left to reorder against. An entry made for a peer
    // that already passed TCP_CLOSE would never be removed.
    backlog.sent = sent;
    if first {
        let _ = BACKLOG.remove(&state.peer);
    }
    to_plain(state)
}

/// The client end's first send: PLAIN unless the server end already paired.
#[inline(always)]
fn decide_at_first_send(state: &mut ConnState) {
    let conn = state.peer.connection();
    if DECISION.insert(&conn, &Decision::PLAIN, BPF_NOEXIST.into()).is_ok() {
        state.mode = ConnState::PLAIN;
        count(Counter::RedirectMisses, 1);
        return;
    }
    // SAFETY: reading a u32 value of an LRU entry that exists (insert said so).
    let paired = DECISION.get_ptr(&conn).is_some_and(|d| unsafe { *d } == Decision::PAIRED);
    state.mode = if paired { ConnState::REDIRECT } else { ConnState::PLAIN };
    let _ = DECISION.remove(&conn);
}

/// One more batchable send: true once the run reaches STREAM_RUN with nothing
/// redirected back meanwhile (request/response traffic resets it at every answer).
#[inline(always)]
fn streaming(state: &mut ConnState) -> bool {
    // This socket's own BACKLOG entry counts what the peer redirected into it.
    let from_peer = BACKLOG.get_ptr(&state.peer.peer()).map_or(0, |b| {
        // SAFETY: a live map value; a racing update only delays the reset by one send.
        unsafe { ptr::read_volatile(ptr::addr_of!((*b).sent)) }
    });
    if from_peer != state.seen_from_peer {
        state.seen_from_peer = from_peer;
        state.streak = 0;
        return false;
    }
    state.streak += 1;
    state.streak >= STREAM_RUN
}

/// Notices, at a send, that this paired end reads in blocking mode: an accepted socket
/// under a non-blocking listener, or one switched with fcntl since. It stays redirected
/// (plain bytes arriving would fail its blocked read with EAGAIN, redirected ones do
/// not) and pins its own BACKLOG entry, so its peer never moves to plain towards it.
/// An accepted socket also marks its listener: later connections to it stay plain.
#[inline(always)]
fn watch_blocking(msg: *const sk_msg_md, sk: *mut c_void, state: &mut ConnState) {
    if state.flags & ConnState::BLOCKING != 0 {
        return;
    }
    if state.file == 0 {
        state.file = file_of(socket_of(sk));
    }
    if !blocking(state.file) {
        return;
    }
    state.flags |= ConnState::BLOCKING;
    count(Counter::Blocking, 1);
    let me = state.peer.peer();
    let pin = Backlog { sent: 0, consumed: 0, flags: Backlog::PINNED };
    if BACKLOG.insert(&me, &pin, BPF_NOEXIST.into()).is_err() {
        if let Some(b) = BACKLOG.get_ptr_mut(&me) {
            // SAFETY: a live map value; `flags` has no other writer than this socket.
            unsafe { (*b).flags |= Backlog::PINNED };
        }
    }
    if me.role == ConnKey::SERVER {
        mark_listener(msg);
    }
}

#[inline(always)]
fn to_plain(state: &mut ConnState) -> u32 {
    state.mode = ConnState::PLAIN;
    count(Counter::MsgPassed, 1);
    SK_PASS
}
