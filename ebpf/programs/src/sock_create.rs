//! The cgroup/sock_create program: records each socket's creator for the uid/gid rules.
use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_get_current_uid_gid;
use aya_ebpf::macros::cgroup_sock;
use aya_ebpf::programs::SockContext;
use meshaccel_common::Owner;

use crate::maps::OWNER;

/// Records who creates each socket of the pod (runs in the creating task's context).
#[cgroup_sock(sock_create)]
pub fn meshaccel_sock_create(ctx: SockContext) -> i32 {
    let sk = ctx.sock.cast::<c_void>();
    let owner = OWNER.get(sk, true);
    // SAFETY: non-null storage of the socket being created.
    if let Some(owner) = unsafe { owner.as_mut() } {
        // SAFETY: helper without arguments.
        let ids = unsafe { bpf_get_current_uid_gid() };
        *owner = Owner { uid: ids as u32, gid: (ids >> 32) as u32 };
    }
    1 // allow the socket
}
