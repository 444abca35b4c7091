//! meshaccel's kernel-side programs. The design, and why each step exists, is in
//! docs/design.md; in short:
//!
//! * `meshaccel_sockops` (sock_ops, attached per pod cgroup) tags the SYN of an enabled pod
//!   with a TCP option carrying this node's token; an enabled listener answers in its
//!   SYN-ACK only when the SYN had it. So at establishment both ends know whether the
//!   other is an accelerated socket on this node, and only such pairs enter `SOCKS`
//!   (a socket in a sockmap that receives plain TCP suffers the kernel's tcp_bpf receive
//!   path, whose blocking reads can fail with EAGAIN).
//! * Both ends name the connection identically (client endpoint + both initial sequence
//!   numbers: this survives REDIRECT/DNAT); each socket's storage holds its peer's key.
//! * The server end, at establishment, and the client end, at its first send, race to
//!   create the connection's `DECISION` entry: PAIRED (server first) means redirect both
//!   ways, PLAIN (client first: it had to send before the server was ready) means plain
//!   TCP both ways, and the server then takes both sockets out of `SOCKS`.
//! * `meshaccel_skmsg` (sk_msg on `SOCKS`) redirects each send of a REDIRECT socket into
//!   its peer's receive queue, counting it in the peer's `BACKLOG`; `meshaccel_consumed`
//!   (fexit on tcp_bpf_recvmsg) counts what the reader took. A sender whose peer is
//!   [`MAX_BACKLOG`] behind switches to plain TCP for good: the reader drains its sockmap
//!   queue before its TCP queue, so order holds, and TCP's window brings backpressure.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use core::ffi::c_void;
    use core::ptr;

    use aya_ebpf::bindings::{
        bpf_sock_ops, sk_action::SK_PASS, sk_msg_md, BPF_ANY, BPF_F_INGRESS,
        BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_HDR_OPT_LEN_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB, BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
    };
    #[allow(deprecated)]
    use aya_ebpf::btf_maps::CgroupStorage;
    use aya_ebpf::btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, SkStorage, SockHash};
    use aya_ebpf::helpers::generated::{
        bpf_get_netns_cookie, bpf_load_hdr_opt, bpf_map_delete_elem, bpf_probe_read_kernel, bpf_reserve_hdr_opt,
        bpf_sk_storage_get, bpf_skc_to_tcp_sock, bpf_sock_ops_cb_flags_set, bpf_store_hdr_opt,
    };
    use aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE;
    use aya_ebpf::bindings::{BPF_F_CLONE, BPF_F_NO_PREALLOC};
    use aya_ebpf::helpers::generated::bpf_get_current_uid_gid;
    use aya_ebpf::macros::{btf_map, cgroup_sock, fexit, sk_msg, sock_ops};
    use aya_ebpf::programs::{FExitContext, SkMsgContext, SockContext, SockOpsContext};
    use meshaccel_common::{
        ctx_remote_port, v4_mapped, Backlog, ConnKey, ConnState, Counter, Decision, Endpoint, Listener, ListenerKey,
        PodConfig, node, Owner, RuleInput, SynOption, DECISIONS_MAX_ENTRIES, LISTENERS_MAX_ENTRIES, MAX_BACKLOG,
        SOCKS_MAX_ENTRIES, STREAM_RUN,
    };

    const AF_INET: u32 = 2;
    const AF_INET6: u32 = 10;
    const TCP_FLAG_SYN: u32 = 0x02;
    const TCP_FLAG_ACK: u32 = 0x10;
    const TCP_ESTABLISHED: u32 = 1;
    const TCP_CLOSE: u32 = 7;
    const MSG_PEEK: i32 = 2;
    const TCP_CLOSE_WAIT: u32 = 8;
    /// `O_NONBLOCK` in `struct file.f_flags` (asm-generic, x86 and arm64 alike).
    const O_NONBLOCK: u32 = 0o4000;
    /// `BPF_LOAD_HDR_OPT_TCP_SYN`: search the SYN being answered instead of the ctx packet.
    const LOAD_HDR_OPT_TCP_SYN: u64 = 1;

    #[btf_map]
    static SOCKS: SockHash<ConnKey, { SOCKS_MAX_ENTRIES as usize }> = SockHash::new();

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

    // Keyed by the connection (role CLIENT): the pairing decision; and by the connection with
    // role READY: "the client end is in SOCKS". LRU: an entry only matters during the
    // handshake and until the client's first send; connections that never send must not
    // leak one.
    #[btf_map]
    static DECISION: LruHashMap<ConnKey, u32, { DECISIONS_MAX_ENTRIES as usize }> = LruHashMap::new();

    // Redirected bytes not yet read, per receiving socket (keyed by its own ConnKey).
    // Created by the peer's first redirect, or marked GONE by the socket leaving SOCKS (see
    // Backlog::GONE); removed when the socket closes (STATE_CB).
    // Not preallocated: sized for a million connections, it holds only the live ones.
    #[btf_map]
    static BACKLOG: HashMap<ConnKey, Backlog, { SOCKS_MAX_ENTRIES as usize }, { BPF_F_NO_PREALLOC as usize }> =
        HashMap::new();

    /// An sk_storage map whose values accepted sockets inherit from their listener
    /// (BPF_F_CLONE): aya-ebpf's `SkStorage` fixes its flags, so the BTF definition is
    /// spelled out (the loader reads type and flags from the array lengths).
    #[repr(C)]
    pub struct ClonedSkStorage<T> {
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

        fn get(&self, sk: *mut c_void, create: bool) -> *mut T {
            let flags = if create { BPF_SK_STORAGE_GET_F_CREATE.into() } else { 0 };
            // SAFETY: self is an sk_storage map; sk is a non-null full socket.
            unsafe { bpf_sk_storage_get(ptr::from_ref(self).cast_mut().cast(), sk, ptr::null_mut(), flags) }.cast()
        }
    }

    // Who created each socket of an accelerated pod, for the uid/gid filter rules.
    #[btf_map]
    static OWNER: ClonedSkStorage<Owner> = ClonedSkStorage::new();

    // See meshaccel_common::node. A zero token (unset) disables tagging.
    #[btf_map]
    static NODE: Array<u32, { node::LEN as usize }> = Array::new();

    #[inline(always)]
    fn count(c: Counter, n: u64) {
        if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
            unsafe { *p += n };
        }
    }

    /// Reads a context field at its fixed offset. The verifier only accepts ctx loads at
    /// constant offsets; plain reads let LLVM merge two loads into one through a selected
    /// pointer ("dereference of modified ctx ptr").
    macro_rules! ctx_read {
        ($ops:expr, $($field:tt)+) => {
            // SAFETY: $ops points at the program's context.
            unsafe { ptr::read_volatile(ptr::addr_of!((*$ops).$($field)+)) }
        };
    }

    // Listening sockets of accelerated pods (see meshaccel_common::Listener).
    #[btf_map]
    static LISTENERS: LruHashMap<ListenerKey, Listener, { LISTENERS_MAX_ENTRIES as usize }> = LruHashMap::new();

    fn node_slot(slot: u32) -> u32 {
        NODE.get(slot).copied().unwrap_or(0)
    }

    /// Reads a `u64` or `u32` of kernel memory at `base + off`. probe_read never faults: a
    /// stale address reads as an error or as garbage, which the callers tolerate.
    #[inline(always)]
    fn kernel_read<T: Copy>(base: u64, off: u32) -> Option<T> {
        let mut v = core::mem::MaybeUninit::<T>::uninit();
        let src = base.wrapping_add(u64::from(off)) as *const c_void;
        // SAFETY: writes at most size_of::<T>() bytes into v; src is only read by the helper.
        let rc = unsafe { bpf_probe_read_kernel(v.as_mut_ptr().cast(), size_of::<T>() as u32, src) };
        // SAFETY: the helper filled v when it returned 0.
        (rc == 0).then(|| unsafe { v.assume_init() })
    }

    /// The kernel address of a full TCP socket's `struct socket`, 0 when it has none
    /// (an accepted socket before `accept()`) or the layout is unknown.
    #[inline(always)]
    fn socket_of(sk: *mut c_void) -> u64 {
        if sk.is_null() || node_slot(node::LAYOUT_KNOWN) == 0 {
            return 0;
        }
        // SAFETY: sk is a socket pointer from the context; the helper checks its type.
        let tp = unsafe { bpf_skc_to_tcp_sock(sk) };
        if tp.is_null() {
            return 0;
        }
        kernel_read::<u64>(tp as u64, node_slot(node::SK_SOCKET)).unwrap_or(0)
    }

    /// The `struct file` of a `struct socket` (0 if none).
    #[inline(always)]
    fn file_of(socket: u64) -> u64 {
        if socket == 0 {
            return 0;
        }
        kernel_read::<u64>(socket, node_slot(node::SOCKET_FILE)).unwrap_or(0)
    }

    /// Whether reads of this file can block: anything but a readable `O_NONBLOCK` counts
    /// as blocking (the safe side: such an end stays plain).
    #[inline(always)]
    fn blocking(file: u64) -> bool {
        file == 0 || kernel_read::<u32>(file, node_slot(node::FILE_FLAGS)).is_none_or(|f| f & O_NONBLOCK == 0)
    }

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
    fn record_listener(ops: *mut bpf_sock_ops) {
        let Some(ip4) = listen_ip4(ctx_read!(ops, family), ctx_read!(ops, local_ip4), ctx_read!(ops, local_ip6)) else {
            return;
        };
        let socket = socket_of(ctx_read!(ops, __bindgen_anon_2.sk).cast());
        let file = file_of(socket);
        if file != 0 {
            let _ = LISTENERS.insert(&listener_key(ops, ip4), &Listener { socket, file, accepted_blocking: 0 }, BPF_ANY.into());
        }
    }

    /// Whether the listener that accepted the context's connection (on `local`) reads
    /// in blocking mode now; unknown listeners (one that listened before its pod was
    /// attached) count as blocking.
    #[inline(always)]
    fn listener_blocking(ops: *const bpf_sock_ops, local: &Endpoint) -> bool {
        // SAFETY: a live map value, copied at once.
        let Some(l) = find_listener(listener_key(ops, local.ip4)).map(|p| unsafe { *p }) else { return true };
        // A listener closed since has a freed socket: its file field no longer matches.
        file_of(l.socket) != l.file || l.accepted_blocking != 0 || blocking(l.file)
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
    fn rules_accept(cfg: &PodConfig, sk: *mut c_void, peer_ip4: u32, server_port: u32) -> bool {
        let owner = if sk.is_null() { ptr::null_mut() } else { OWNER.get(sk, false) };
        // SAFETY: non-null storage of this socket.
        let owner = unsafe { owner.as_ref() }.copied();
        cfg.accepts(&RuleInput { peer_ip4, server_port: server_port as u16, owner })
    }

    fn node_token() -> u32 {
        NODE.get(node::TOKEN).copied().unwrap_or(0)
    }

    /// The IPv4 endpoints of a connection, from either an AF_INET socket or an AF_INET6
    /// socket whose both ends are v4-mapped. Pure IPv6 is left alone (plain TCP).
    #[inline(always)]
    fn endpoints(ops: *const bpf_sock_ops) -> Option<(Endpoint, Endpoint)> {
        let (l, r) = match ctx_read!(ops, family) {
            AF_INET => (ctx_read!(ops, local_ip4), ctx_read!(ops, remote_ip4)),
            AF_INET6 => (v4_mapped(ctx_read!(ops, local_ip6))?, v4_mapped(ctx_read!(ops, remote_ip6))?),
            _ => return None,
        };
        Some((
            Endpoint { ip4: l, port: ctx_read!(ops, local_port) },
            Endpoint { ip4: r, port: ctx_remote_port(ctx_read!(ops, remote_port)) },
        ))
    }

    #[inline(always)]
    fn set_cb_flags(ops: *mut bpf_sock_ops, flags: u32) {
        // SAFETY: ops is the program's context pointer.
        let _ = unsafe { bpf_sock_ops_cb_flags_set(ops, flags as i32) };
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
        let same = opt.len == SynOption::ANSWER_LEN && opt.echoes(local.ip4, local.port);
        if !same {
            count(Counter::Ambiguous, 1);
        }
        same
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
            if !rules_accept(cfg, sk, remote.ip4, remote.port) {
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
                let (_, client) = endpoints(ops)?;
                Some(SynOption::answer(node_token(), client.ip4, client.port))
            }
            _ => None,
        }
    }

    #[inline(always)]
    fn storage(sk: *mut c_void, create: bool) -> *mut ConnState {
        let flags = if create { BPF_SK_STORAGE_GET_F_CREATE.into() } else { 0 };
        // SAFETY: CONN_STATE is an sk_storage map; sk is a non-null full socket.
        unsafe { bpf_sk_storage_get(ptr::from_ref(&CONN_STATE).cast_mut().cast(), sk, ptr::null_mut(), flags) }
            .cast::<ConnState>()
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
        // The server only pairs with a client that is already in SOCKS: such a client
        // marked itself READY at its ACTIVE_ESTABLISHED, before sending the ACK that
        // triggers ours.
        if !active && DECISION.remove(&conn.ready()).is_err() {
            count(Counter::RedirectMisses, 1);
            return;
        }
        if !active && !pod_config().is_some_and(|cfg| rules_accept(cfg, sk, remote.ip4, local.port)) {
            abort(&conn, &peer);
            count(Counter::Filtered, 1);
            return;
        }
        if !active && listener_blocking(ops, &local) {
            abort(&conn, &peer);
            count(Counter::Blocking, 1);
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
        if local.ip4 == remote.ip4 {
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

    /// Marks the listener of the accepted socket sending `msg` as accepting blocking sockets.
    #[inline(always)]
    fn mark_listener(msg: *const sk_msg_md) {
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

    #[inline(always)]
    fn to_plain(state: &mut ConnState) -> u32 {
        state.mode = ConnState::PLAIN;
        count(Counter::MsgPassed, 1);
        SK_PASS
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
