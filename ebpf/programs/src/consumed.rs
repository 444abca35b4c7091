//! The fexit program on `tcp_bpf_recvmsg` (`names::CONSUMED_HOOK`): counts what readers
//! take from their sockmap queue, so sk_msg can bound each peer's `BACKLOG`.
use core::ffi::c_void;

use aya_ebpf::macros::fexit;
use aya_ebpf::programs::FExitContext;

use crate::maps::{storage, BACKLOG};

const MSG_PEEK: i32 = 2;

/// A reader took bytes from its socket: lower that socket's backlog. (After a
/// fallback the reader also takes TCP bytes here; the backlog no longer matters then.)
#[fexit(function = "tcp_bpf_recvmsg")]
pub fn meshaccel_consumed(ctx: FExitContext) -> i32 {
    let Ok(ret) = ctx.ret::<i32>() else { return 0 };
    let flags: i32 = ctx.arg(3);
    if ret <= 0 || flags & MSG_PEEK != 0 {
        return 0;
    }
    let sk: *mut c_void = ctx.arg(0);
    let state = storage(sk, false);
    if state.is_null() {
        return 0;
    }
    // SAFETY: non-null storage of this socket.
    let own = unsafe { (*state).peer }.peer();
    if let Some(b) = BACKLOG.get_ptr_mut(&own) {
        // SAFETY: a live map value; `consumed` is only written here (see Backlog).
        unsafe { (*b).consumed += ret as u64 };
    }
    0
}
