//! meshaccel's kernel-side programs.
//!
//! * `meshaccel_sockops` (sock_ops, attached per pod cgroup): when a TCP connection of an
//!   enabled pod is established, puts the socket in `SOCKS` under its own tuple.
//! * `meshaccel_skmsg` (sk_msg, attached to `SOCKS`): on each send of a socket in `SOCKS`,
//!   delivers the data straight into the peer socket's receive queue when the peer is in
//!   `SOCKS` too; otherwise the data goes through the TCP stack as usual.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use core::ffi::c_void;
    use core::ptr;

    use aya_ebpf::bindings::{
        sk_action::SK_PASS, BPF_F_INGRESS, BPF_SK_STORAGE_GET_F_CREATE,
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
    };
    use aya_ebpf::btf_maps::{CgroupStorage, PerCpuArray, SkStorage, SockHash};
    use aya_ebpf::helpers::generated::{bpf_get_netns_cookie, bpf_sk_storage_get};
    use aya_ebpf::macros::{btf_map, sk_msg, sock_ops};
    use aya_ebpf::programs::{SkMsgContext, SockOpsContext};
    use meshaccel_common::{
        ctx_remote_port, v4_mapped, ConnState, Counter, PodConfig, SockKey, SOCKS_MAX_ENTRIES,
    };

    const AF_INET: u32 = 2;
    const AF_INET6: u32 = 10;

    #[btf_map]
    static SOCKS: SockHash<SockKey, { SOCKS_MAX_ENTRIES as usize }> = SockHash::new();

    #[btf_map]
    static COUNTERS: PerCpuArray<u64, { Counter::LEN as usize }> = PerCpuArray::new();

    // Settings of the pod whose cgroup the running sock_ops program is attached to. Keyed by
    // attachment, not by the current task: for an accepted socket the callback runs in the
    // context of whichever task sent the final ACK (usually the client).
    #[allow(deprecated)]
    #[btf_map]
    static POD_CONFIG: CgroupStorage<PodConfig> = CgroupStorage::new();

    #[btf_map]
    static CONN_STATE: SkStorage<ConnState> = SkStorage::new();

    #[inline(always)]
    fn count(c: Counter, n: u64) {
        if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
            unsafe { *p += n };
        }
    }

    /// The IPv4 tuple of a connection, from either an AF_INET socket or an AF_INET6 socket
    /// whose both ends are v4-mapped. Pure IPv6 is left alone (plain TCP).
    #[inline(always)]
    fn ipv4_tuple(family: u32, l4: u32, r4: u32, l6: [u32; 4], r6: [u32; 4]) -> Option<(u32, u32)> {
        match family {
            AF_INET => Some((l4, r4)),
            AF_INET6 => Some((v4_mapped(l6)?, v4_mapped(r6)?)),
            _ => None,
        }
    }

    #[sock_ops]
    pub fn meshaccel_sockops(ctx: SockOpsContext) -> u32 {
        let op = ctx.op();
        if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
            return 1;
        }
        let cfg = POD_CONFIG.get_ptr_mut();
        // SAFETY: the helper returns this attachment's storage slot, valid for this run.
        if cfg.is_null() || !unsafe { (*cfg).sockmap_enabled() } {
            return 1;
        }
        let Some((local_ip4, remote_ip4)) = ipv4_tuple(
            ctx.family(),
            ctx.local_ip4(),
            ctx.remote_ip4(),
            ctx.local_ip6(),
            ctx.remote_ip6(),
        ) else {
            return 1;
        };
        let mut key = SockKey {
            local_ip4,
            remote_ip4,
            local_port: ctx.local_port(),
            remote_port: ctx_remote_port(ctx.remote_port()),
            netns_cookie: 0,
        };
        if key.is_loopback() {
            // SAFETY: ctx.ops is the program's context pointer.
            key.netns_cookie = unsafe { bpf_get_netns_cookie(ctx.ops.cast::<c_void>()) };
        }
        // SAFETY: ctx.ops is the program's context pointer.
        match SOCKS.update(&mut key, unsafe { &mut *ctx.ops }, 0) {
            Ok(()) => count(Counter::SocketsInserted, 1),
            Err(_) => count(Counter::InsertFailures, 1),
        }
        1
    }

    #[sk_msg]
    pub fn meshaccel_skmsg(ctx: SkMsgContext) -> u32 {
        // SAFETY: ctx.msg is the program's context pointer.
        let md = unsafe { &*ctx.msg };
        let Some((local_ip4, remote_ip4)) =
            ipv4_tuple(md.family, md.local_ip4, md.remote_ip4, md.local_ip6, md.remote_ip6)
        else {
            return SK_PASS;
        };
        // SAFETY: md.sk is the sending socket, a full socket for sk_msg.
        let sk = unsafe { md.__bindgen_anon_3.sk };
        // SAFETY: CONN_STATE is an sk_storage map; sk is a valid socket pointer.
        let state = unsafe {
            bpf_sk_storage_get(
                ptr::from_ref(&CONN_STATE).cast_mut().cast::<c_void>(),
                sk.cast::<c_void>(),
                ptr::null_mut(),
                BPF_SK_STORAGE_GET_F_CREATE.into(),
            )
        }
        .cast::<ConnState>();
        if state.is_null() {
            // No room to remember a decision: stay on plain TCP rather than risk mixing.
            count(Counter::MsgPassed, 1);
            return SK_PASS;
        }
        // SAFETY: non-null storage of this socket, exclusively ours while the socket lock is held.
        let state = unsafe { &mut *state };
        if state.mode == ConnState::PLAIN {
            count(Counter::MsgPassed, 1);
            return SK_PASS;
        }
        let key = SockKey {
            local_ip4,
            remote_ip4,
            local_port: md.local_port,
            remote_port: ctx_remote_port(md.remote_port),
            netns_cookie: 0,
        };
        let mut peer = key.peer();
        if key.is_loopback() {
            // SAFETY: ctx.msg is the program's context pointer.
            peer.netns_cookie = unsafe { bpf_get_netns_cookie(ctx.msg.cast::<c_void>()) };
        }
        if SOCKS.redirect_msg(&ctx, &mut peer, BPF_F_INGRESS.into()) == SK_PASS as i64 {
            state.mode = ConnState::REDIRECT;
            count(Counter::MsgRedirected, 1);
            count(Counter::BytesRedirected, u64::from(md.size));
        } else if state.mode == ConnState::UNDECIDED {
            // The peer is not (yet) a socket of an accelerated pod: this direction stays on
            // plain TCP for its whole life.
            state.mode = ConnState::PLAIN;
            count(Counter::RedirectMisses, 1);
        } else {
            // Decided REDIRECT and the peer is gone (closed): nothing left to reorder against.
            count(Counter::MsgPassed, 1);
        }
        SK_PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
