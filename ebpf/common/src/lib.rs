//! Types shared by meshaccel's BPF programs and user space.
//!
//! Every map key and value is defined here once, `#[repr(C)]` with explicit padding, so the
//! kernel side and the loader can never disagree about a layout.
#![no_std]

/// Names of the programs and maps inside the BPF object. User space finds them by these
/// names and pins them under the same names (see `meshaccel_installer::pins`).
pub mod names {
    pub const PROG_SOCKOPS: &str = "meshaccel_sockops";
    pub const PROG_SKMSG: &str = "meshaccel_skmsg";
    pub const MAP_SOCKS: &str = "SOCKS";
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const MAP_POD_CONFIG: &str = "POD_CONFIG";
    pub const MAP_CONN_STATE: &str = "CONN_STATE";
    pub const MAP_DECISION: &str = "DECISION";
    pub const MAP_NODE: &str = "NODE";
    pub const MAP_BACKLOG: &str = "BACKLOG";
    pub const PROG_CONSUMED: &str = "meshaccel_consumed";
    pub const PROG_SOCK_CREATE: &str = "meshaccel_sock_create";
    pub const MAP_OWNER: &str = "OWNER";
    pub const MAP_LISTENERS: &str = "LISTENERS";
    /// Every map of the object: each is pinned under `maps/<name>`.
    pub const MAPS: [&str; 9] = [
        MAP_SOCKS,
        MAP_COUNTERS,
        MAP_POD_CONFIG,
        MAP_CONN_STATE,
        MAP_DECISION,
        MAP_NODE,
        MAP_BACKLOG,
        MAP_OWNER,
        MAP_LISTENERS,
    ];
    /// The kernel function whose return tells how much a reader took from a sockmap queue.
    pub const CONSUMED_HOOK: &str = "tcp_bpf_recvmsg";
}

/// Key of the sockhash: one end of one TCP connection.
///
/// A connection is named by what both of its ends see identically, even through
/// REDIRECT/DNAT (which rewrites the server address, as in a sidecar mesh): the client's
/// endpoint and both initial sequence numbers. A socket is stored under its connection
/// and its own role; a sender looks up the same connection with the other role.
///
/// Client-endpoint reuse (one local ip:port towards two destinations) gives different
/// sequence numbers; SNAT changes the endpoint the server sees, so the two ends simply
/// do not meet and stay on plain TCP. Loopback client addresses exist once per netns, so
/// they also carry the netns cookie (a loopback connection never leaves its netns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Client IPv4 address, network byte order.
    pub client_ip4: u32,
    /// Client port, host byte order.
    pub client_port: u32,
    /// The client's first data sequence number (its ISN + 1).
    pub client_seq: u32,
    /// The server's first data sequence number (its ISN + 1).
    pub server_seq: u32,
    /// `bpf_get_netns_cookie()` when the client address is loopback, else 0.
    pub netns_cookie: u64,
    /// Which end is stored under this key: [`ConnKey::CLIENT`] or [`ConnKey::SERVER`].
    pub role: u32,
    pub _reserved: u32,
}

impl ConnKey {
    pub const CLIENT: u32 = 0;
    pub const SERVER: u32 = 1;
    /// Not a socket: the READY marker of a connection in the `DECISION` map.
    pub const READY: u32 = 2;

    /// The key of a socket at establishment, from its own view of the connection.
    /// `active` is true for the connecting end. Sequence numbers are `snd_nxt`/`rcv_nxt`
    /// at the ESTABLISHED callback, when nothing but the SYNs has been exchanged.
    #[inline(always)]
    pub const fn at_establishment(active: bool, local: Endpoint, remote: Endpoint, snd_nxt: u32, rcv_nxt: u32) -> ConnKey {
        let (client, client_seq, server_seq, role) = if active {
            (local, snd_nxt, rcv_nxt, Self::CLIENT)
        } else {
            (remote, rcv_nxt, snd_nxt, Self::SERVER)
        };
        ConnKey {
            client_ip4: client.ip4,
            client_port: client.port,
            client_seq,
            server_seq,
            netns_cookie: 0,
            role,
            _reserved: 0,
        }
    }

    /// The key under which the other end of this connection is stored.
    #[inline(always)]
    pub const fn peer(&self) -> ConnKey {
        let mut k = *self;
        k.role ^= 1;
        k
    }

    /// The connection as a whole (the key of its `DECISION` entry).
    #[inline(always)]
    pub const fn connection(&self) -> ConnKey {
        let mut k = *self;
        k.role = Self::CLIENT;
        k
    }

    /// The key of the connection's READY marker (see [`Decision::READY`]).
    #[inline(always)]
    pub const fn ready(&self) -> ConnKey {
        let mut k = *self;
        k.role = Self::READY;
        k
    }

    /// Whether the cookie must be part of the key (see the type's docs).
    #[inline(always)]
    pub const fn needs_netns_cookie(&self) -> bool {
        is_loopback4(self.client_ip4)
    }
}

/// The outcome of a connection's pairing race (values of the `DECISION` map).
pub struct Decision;

impl Decision {
    /// The server end got there first: both ends redirect.
    pub const PAIRED: u32 = 1;
    /// The client end had to send first, or pairing failed: both ends stay plain TCP.
    pub const PLAIN: u32 = 2;
    /// Under the READY key: the client end is in SOCKS, waiting for the server end.
    pub const READY: u32 = 3;
}

/// The TCP option that tags the SYN of an accelerated pod and the SYN-ACK of an
/// accelerated listener answering it: RFC 6994 experimental option (kind 254) with a
/// 16-bit ExID, carrying the node's token so a peer on another node never matches. The
/// answer also echoes the client endpoint as the server sees it: when NAT or conntrack
/// rewrote it, the two ends would name the connection differently and never meet, so the
/// client must not wait for a pairing that cannot happen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynOption {
    pub kind: u8,
    pub len: u8,
    pub exid: [u8; 2],
    pub token: [u8; 4],
    /// SYN-ACK only: the client's IPv4 address (network byte order) and port (big-endian).
    pub client_ip4: [u8; 4],
    pub client_port: [u8; 2],
}

impl SynOption {
    pub const KIND: u8 = 254;
    /// "MA".
    pub const EXID: [u8; 2] = [0x4d, 0x41];
    /// Wire length of the SYN's tag (no client endpoint).
    pub const SYN_LEN: u8 = 8;
    /// Wire length of the SYN-ACK's answer.
    pub const ANSWER_LEN: u8 = 14;

    pub const fn syn(token: u32) -> Self {
        Self {
            kind: Self::KIND,
            len: Self::SYN_LEN,
            exid: Self::EXID,
            token: token.to_be_bytes(),
            client_ip4: [0; 4],
            client_port: [0; 2],
        }
    }

    /// `client_ip4` in network byte order as the kernel gives it, `port` in host order.
    pub const fn answer(token: u32, client_ip4: u32, client_port: u32) -> Self {
        Self {
            kind: Self::KIND,
            len: Self::ANSWER_LEN,
            exid: Self::EXID,
            token: token.to_be_bytes(),
            client_ip4: client_ip4.to_ne_bytes(),
            client_port: (client_port as u16).to_be_bytes(),
        }
    }

    /// The search pattern `bpf_load_hdr_opt` expects: kind, the length of kind + len +
    /// ExID (4), the ExID.
    pub const fn search() -> Self {
        let mut o = Self::syn(0);
        o.len = 4;
        o
    }

    pub const fn token(&self) -> u32 {
        u32::from_be_bytes(self.token)
    }

    /// Whether an answer echoes this endpoint (IPv4 network order, port host order).
    pub const fn echoes(&self, ip4: u32, port: u32) -> bool {
        u32::from_ne_bytes(self.client_ip4) == ip4 && u16::from_be_bytes(self.client_port) as u32 == port
    }
}

/// An IPv4 address (network byte order) and port (host byte order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip4: u32,
    pub port: u32,
}

/// `remote_port` in `bpf_sock_ops` and `sk_msg_md` is the big-endian port shifted into the
/// upper 16 bits of a u32 on little-endian hosts; `u32::from_be` yields the host-order port
/// on either endianness.
#[inline(always)]
pub const fn ctx_remote_port(raw: u32) -> u32 {
    u32::from_be(raw)
}

/// True for 127.0.0.0/8, given an address in network byte order.
#[inline(always)]
pub const fn is_loopback4(ip_be: u32) -> bool {
    u32::from_be(ip_be) >> 24 == 127
}

/// The IPv4 address inside a v4-mapped IPv6 address (`::ffff:a.b.c.d`), given the four
/// network-order words of the context. Servers listening on `[::]` see IPv4 clients so.
#[inline(always)]
pub const fn v4_mapped(ip6: [u32; 4]) -> Option<u32> {
    if ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0xffffu32.to_be() {
        Some(ip6[3])
    } else {
        None
    }
}

/// Per-pod settings, held in cgroup storage: one slot per cgroup the sock_ops program is
/// attached to, shared by that cgroup's children. Zero (the kernel's initial value) means
/// "attached but not enabled", so a pod is never accelerated before user space says so.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodConfig {
    pub flags: u32,
    /// Number of valid entries in `rules`.
    pub nrules: u32,
    /// Evaluated in order at establishment; the first match decides. With none matching,
    /// [`PodConfig::DEFAULT_RETURN`] decides.
    pub rules: [Rule; MAX_RULES],
}

impl Default for PodConfig {
    fn default() -> Self {
        Self { flags: 0, nrules: 0, rules: [Rule::ANY_ACCEPT; MAX_RULES] }
    }
}

impl PodConfig {
    /// Put this pod's established IPv4 (and v4-mapped) TCP sockets in the sockhash.
    pub const SOCKMAP: u32 = 1 << 0;
    /// Connections that match no rule are not accelerated (default: they are).
    pub const DEFAULT_RETURN: u32 = 1 << 1;

    /// Enabled, no rules: every connection is eligible.
    pub fn enabled() -> Self {
        Self { flags: Self::SOCKMAP, ..Self::default() }
    }

    pub const fn sockmap_enabled(&self) -> bool {
        self.flags & Self::SOCKMAP != 0
    }

    /// Whether a connection may be accelerated, by the first matching rule.
    #[inline(always)]
    pub fn accepts(&self, c: &RuleInput) -> bool {
        let n = if (self.nrules as usize) < MAX_RULES { self.nrules as usize } else { MAX_RULES };
        let mut i = 0;
        while i < n {
            let r = &self.rules[i];
            if r.matches(c) {
                return r.action == Rule::ACCEPT;
            }
            i += 1;
        }
        self.flags & Self::DEFAULT_RETURN == 0
    }
}

pub const MAX_RULES: usize = 16;

/// What a rule sees of one connection, from one end's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleInput {
    /// The other end's IPv4 address, network byte order.
    pub peer_ip4: u32,
    /// The connection's server port (remote port for the connecting end, local port for
    /// the accepting end): what services are known by.
    pub server_port: u16,
    /// Owner of the socket (the creating task's uid/gid; for accepted sockets, the
    /// listener's). `None` when unknown (sockets created before the pod was attached).
    pub owner: Option<Owner>,
}

/// One filter rule, with the semantics of oncn-mda's chain rules: every given field must
/// match; `action` decides for the first rule that matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Network (network byte order) and mask (network byte order); mask 0 matches all.
    pub net4: u32,
    pub mask4: u32,
    /// Inclusive server-port range, host byte order.
    pub port_lo: u16,
    pub port_hi: u16,
    pub uid: u32,
    pub gid: u32,
    pub action: u32,
}

impl Rule {
    pub const ACCEPT: u32 = 0;
    pub const RETURN: u32 = 1;
    /// uid/gid value meaning "any".
    pub const ANY_ID: u32 = u32::MAX;
    pub const ANY_ACCEPT: Rule =
        Rule { net4: 0, mask4: 0, port_lo: 0, port_hi: u16::MAX, uid: Self::ANY_ID, gid: Self::ANY_ID, action: Self::ACCEPT };

    #[inline(always)]
    pub fn matches(&self, c: &RuleInput) -> bool {
        let id_ok = |want: u32, have: Option<u32>| want == Self::ANY_ID || have == Some(want);
        c.peer_ip4 & self.mask4 == self.net4
            && self.port_lo <= c.server_port
            && c.server_port <= self.port_hi
            && id_ok(self.uid, c.owner.map(|o| o.uid))
            && id_ok(self.gid, c.owner.map(|o| o.gid))
    }
}

/// The uid/gid of a socket's creator, recorded by the cgroup/sock_create program (sock_ops
/// callbacks run in softirq context, where the current task is unrelated).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Per-socket state, in socket-local storage: written by sock_ops at establishment,
/// read on every send by sk_msg (which cannot see sequence numbers itself).
///
/// Per-socket state (sk_storage). The mode is decided at the connection's first send;
/// after that it can only go from REDIRECT to PLAIN, once: the receiver drains redirected
/// bytes before TCP bytes, so one switch keeps the byte order, a switch back would not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub mode: u32,
    /// [`ConnState::LOOPBACK`], [`ConnState::INBOX`].
    pub flags: u16,
    /// Sends in a row that could have been batched by TCP (see [`ConnState::batchable`])
    /// since the peer last redirected anything to this socket.
    pub streak: u16,
    /// Where this socket's sends go when redirected.
    pub peer: ConnKey,
    /// The peer's redirected bytes into this socket (its `BACKLOG.sent`) when last seen.
    pub seen_from_peer: u64,
    /// Kernel address of the socket's `struct file` once known (0 before: an accepted
    /// socket has none until `accept()`), read to see whether the end is blocking.
    pub file: u64,
}

impl ConnState {
    pub const UNDECIDED: u32 = 0;
    pub const REDIRECT: u32 = 1;
    pub const PLAIN: u32 = 2;

    /// Both ends on one address: the loopback device, where plain TCP is cheapest.
    pub const LOOPBACK: u16 = 1;
    /// The socket created its peer's `BACKLOG` entry (at its first redirect).
    pub const INBOX: u16 = 4;
    /// The socket was seen in blocking mode at a send, after it was paired.
    pub const BLOCKING: u16 = 8;

    /// Whether a send of `size` bytes is one TCP would do better when streamed: redirect
    /// delivers one message and one wake-up per send, TCP batches a stream of them
    /// (Nagle, autocorking, GRO). Measured (docs/benchmark.md): over veth redirect loses
    /// below 512 B, wins from 1 to 16 KiB (1.6-2.3x) and loses again at 64 KiB (0.88x, where
    /// TCP's 64 KiB GSO/GRO segments cost no more per byte); over loopback it loses at every
    /// size.
    pub const fn batchable(&self, size: u32) -> bool {
        self.flags & Self::LOOPBACK != 0 || size < SMALL_SEND || size >= BULK_SEND
    }
}

/// See [`ConnState::batchable`].
pub const SMALL_SEND: u32 = 512;
/// See [`ConnState::batchable`].
pub const BULK_SEND: u32 = 32 << 10;

/// A REDIRECT socket whose last [`STREAM_RUN`] sends were all batchable, with nothing
/// redirected back by its peer meanwhile, is streaming: it switches to plain TCP for good.
/// Request/response traffic resets the run at every answer, and a send that is not
/// batchable resets it too, so both stay redirected.
pub const STREAM_RUN: u16 = 32;

/// Index of a per-CPU counter in the `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Sockets put in the sockhash at establishment.
    SocketsInserted = 0,
    /// Sockhash updates the kernel refused (key taken, map full).
    InsertFailures = 1,
    /// Messages delivered straight into the peer socket.
    MsgRedirected = 2,
    /// Connections of accelerated pods left on plain TCP because the peer is not an
    /// accelerated socket of this node, or the client sent before pairing completed.
    RedirectMisses = 3,
    /// Bytes delivered by redirect.
    BytesRedirected = 4,
    /// Messages sent on plain TCP by connections decided plain.
    MsgPassed = 5,
    /// Tagged pairs left on plain TCP: the client had to send before the server end was
    /// paired, data moved before establishment (TCP Fast Open), or the key was taken.
    Ambiguous = 6,
    /// Connections switched to plain TCP for good because their reader fell
    /// [`MAX_BACKLOG`] bytes behind (the kernel's redirect path has no flow control).
    Backpressure = 7,
    /// Connections the pod's filter rules kept on plain TCP.
    Filtered = 8,
    /// Connection ends switched to plain TCP for good because they stream sends that TCP
    /// batches better (see [`ConnState::batchable`], [`STREAM_RUN`]).
    Streaming = 9,
    /// Streaming senders that then left the sockmap (nothing had been redirected into
    /// them), so their sends take TCP's own path, without the sockmap's per-send cost.
    LeftSockmap = 10,
    /// Connection ends kept on (or moved to) plain TCP because they use a blocking socket:
    /// the kernel's sockmap receive path fails blocking reads with EAGAIN when woken
    /// without redirected data (docs/design.md, "Only non-blocking ends are redirected").
    Blocking = 11,
}

impl Counter {
    pub const ALL: [Counter; 12] = [
        Counter::SocketsInserted,
        Counter::InsertFailures,
        Counter::MsgRedirected,
        Counter::RedirectMisses,
        Counter::BytesRedirected,
        Counter::MsgPassed,
        Counter::Ambiguous,
        Counter::Backpressure,
        Counter::Filtered,
        Counter::Streaming,
        Counter::LeftSockmap,
        Counter::Blocking,
    ];
    pub const LEN: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            Counter::SocketsInserted => "sockets_inserted",
            Counter::InsertFailures => "insert_failures",
            Counter::MsgRedirected => "msgs_redirected",
            Counter::RedirectMisses => "redirect_misses",
            Counter::BytesRedirected => "bytes_redirected",
            Counter::MsgPassed => "msgs_passed",
            Counter::Ambiguous => "ambiguous",
            Counter::Backpressure => "backpressure_fallbacks",
            Counter::Filtered => "filtered",
            Counter::Streaming => "streaming_fallbacks",
            Counter::LeftSockmap => "left_sockmap",
            Counter::Blocking => "blocking_plain",
        }
    }
}

/// Sizing of the sockhash and of `BACKLOG`: two entries per accelerated connection, so
/// 2^21 holds 1,048,576 concurrent connections (docs/scale.md). Neither map preallocates
/// its entries; the kernel allocates the buckets up front (16 B each).
pub const SOCKS_MAX_ENTRIES: u32 = 1 << 21;
/// Slots of the `NODE` array, written by the loader.
pub mod node {
    /// A random non-zero token naming this load on this node (SYN tags carry it).
    pub const TOKEN: u32 = 0;
    /// 1 when the fexit accounting of consumed bytes is attached, so backlogs are known.
    pub const ACCOUNTING: u32 = 1;
    /// Byte offsets in the running kernel's structures (from its BTF; aya's programs have
    /// no CO-RE relocations), to read whether a socket's file is `O_NONBLOCK`:
    /// `struct sock.sk_socket`, `struct socket.file`, `struct file.f_flags`.
    pub const SK_SOCKET: u32 = 2;
    pub const SOCKET_FILE: u32 = 3;
    pub const FILE_FLAGS: u32 = 4;
    /// 1 once the three offsets are written. Without them every end counts as blocking.
    pub const LAYOUT_KNOWN: u32 = 5;
    pub const LEN: u32 = 6;
}

/// A listening socket of an accelerated pod, by where it listens (`ip4` 0: any address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub netns_cookie: u64,
    pub ip4: u32,
    pub port: u32,
}

/// Kernel addresses of a listener's `struct socket` and `struct file`, recorded at
/// `listen()`: at establishment an accepted socket has no file yet, so whether the server
/// reads in blocking mode is judged by its listener's file flags at that moment. The socket
/// address lets a stale entry (listener closed, memory reused) be told apart: its `file`
/// field must still point at `file`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    pub socket: u64,
    pub file: u64,
    /// A socket this listener accepted was found reading in blocking mode (at its first
    /// send): the program accepts without `O_NONBLOCK`, so later connections stay plain.
    pub accepted_blocking: u64,
}

/// Sized for every listening socket of a node's accelerated pods; LRU, so closed
/// listeners' entries need no removal.
pub const LISTENERS_MAX_ENTRIES: u32 = 1 << 16;

/// Redirected bytes towards one socket: `sent` is written only by its peer's sk_msg
/// (serialised by the peer's socket lock), `consumed` only when the socket is read. Two
/// single-writer counters need no atomics; a racing second reader can only lose an
/// update of `consumed`, which overstates the backlog (the safe direction). For when
/// the entry exists see [`Backlog::GONE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub sent: u64,
    pub consumed: u64,
    /// [`Backlog::PINNED`], set by the receiving socket itself.
    pub flags: u64,
}

impl Backlog {
    /// `sent` of the entry a socket creates for itself when it leaves `SOCKS`. An entry
    /// is created only with BPF_NOEXIST: by the peer at its first redirect into the
    /// socket, or by the socket itself, marked GONE, when it leaves. Whoever comes first
    /// wins: a socket never leaves once something was redirected into it (its sockmap
    /// queue would be dropped unread), and nothing is redirected into a socket that left.
    pub const GONE: u64 = u64::MAX;

    /// The receiving socket was found reading in blocking mode after it was paired. Its
    /// sender never moves to plain TCP towards it (streaming rule, backpressure): plain
    /// bytes arriving at a blocked reader in the sockmap make its read fail with EAGAIN,
    /// redirected ones do not. The receiver may create the entry itself to say so (then
    /// with `sent` 0, never [`Backlog::GONE`]).
    pub const PINNED: u64 = 1;

    pub const fn pinned(&self) -> bool {
        self.flags & Self::PINNED != 0
    }

    pub const fn outstanding(&self) -> i64 {
        self.sent.wrapping_sub(self.consumed) as i64
    }
}

/// Redirected bytes a reader may have outstanding before its sender falls back to plain
/// TCP (whose receive window then applies). The kernel charges redirected data to the
/// receiver without checking its receive buffer, so without this bound one stalled reader
/// could pin memory up to the node-wide TCP limit.
pub const MAX_BACKLOG: i64 = 4 << 20;

/// Pairing decisions awaiting the client's first send; LRU, so it needs no cleanup. An
/// entry lives from the handshake until the client's first send, so only connections whose
/// client has not sent yet hold one (a pre-opened pool connection). An LRU is preallocated
/// (104 B per entry): 2^18 (27 MB) rather than one per possible connection (2^20 would be
/// 109 MB on every node). Evicting one makes that connection's client end plain
/// (docs/scale.md).
pub const DECISIONS_MAX_ENTRIES: u32 = 1 << 18;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, #[repr(C)], no padding holes (checked by the size tests).
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::PodConfig {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::Backlog {}
    unsafe impl aya::Pod for super::Owner {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ConnKey>(), 32);
        assert_eq!(core::mem::size_of::<Rule>(), 24);
        assert_eq!(core::mem::size_of::<PodConfig>(), 8 + 24 * MAX_RULES);
        assert_eq!(core::mem::size_of::<ConnState>(), 56);
        assert_eq!(core::mem::size_of::<Backlog>(), 24);
        assert_eq!(core::mem::size_of::<ListenerKey>(), 16);
        assert_eq!(core::mem::size_of::<Listener>(), 24);
    }

    fn ip(a: [u8; 4]) -> u32 {
        u32::from_be_bytes(a).to_be()
    }

    #[test]
    fn both_ends_name_the_same_connection_even_through_redirect() {
        let client = Endpoint { ip4: ip([10, 0, 0, 1]), port: 40000 };
        let service = Endpoint { ip4: ip([10, 96, 0, 10]), port: 80 };
        // After REDIRECT the server sees itself on 127.0.0.1:15001, the client unchanged.
        let proxy = Endpoint { ip4: ip([127, 0, 0, 1]), port: 15001 };
        let (isn_c, isn_s) = (1000, 7000);
        let c = ConnKey::at_establishment(true, client, service, isn_c, isn_s);
        let s = ConnKey::at_establishment(false, proxy, client, isn_s, isn_c);
        assert_eq!(c.peer(), s);
        assert_eq!(s.peer(), c);
        assert_ne!(c, s, "the two ends are distinct sockhash entries");
        assert!(!c.needs_netns_cookie() && !s.needs_netns_cookie(), "decided by the client address only");
    }

    #[test]
    fn endpoint_reuse_and_snat_do_not_pair() {
        let client = Endpoint { ip4: ip([10, 0, 0, 1]), port: 40000 };
        let a = Endpoint { ip4: ip([10, 0, 0, 2]), port: 80 };
        let b = Endpoint { ip4: ip([10, 0, 0, 3]), port: 80 };
        let c1 = ConnKey::at_establishment(true, client, a, 1000, 7000);
        let c2 = ConnKey::at_establishment(true, client, b, 5000, 9000);
        let s2 = ConnKey::at_establishment(false, b, client, 9000, 5000);
        assert_ne!(c1.peer(), s2, "same client endpoint, other connection");
        let snat = Endpoint { ip4: ip([192, 0, 2, 1]), port: 50000 };
        let s_snat = ConnKey::at_establishment(false, a, snat, 7000, 1000);
        assert_ne!(c1.peer(), s_snat);
        assert_eq!(c2.peer(), s2);
    }

    #[test]
    fn loopback_and_v4_mapped_detection() {
        let lo = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let lo2 = u32::from_be_bytes([127, 8, 9, 10]).to_be();
        let pod = u32::from_be_bytes([10, 1, 2, 3]).to_be();
        assert!(is_loopback4(lo) && is_loopback4(lo2) && !is_loopback4(pod));
        let mapped = [0, 0, 0xffffu32.to_be(), pod];
        assert_eq!(v4_mapped(mapped), Some(pod));
        assert_eq!(v4_mapped([0, 0, 0, 1u32.to_be()]), None); // ::1
        assert_eq!(v4_mapped([0x20010db8u32.to_be(), 0, 0xffffu32.to_be(), pod]), None);
    }

    #[test]
    fn remote_port_conversion_matches_kernel_encoding() {
        // The kernel loads the big-endian u16 and shifts it left by 16 on little-endian.
        let port: u16 = 8080;
        let raw = if cfg!(target_endian = "little") {
            (u16::from_ne_bytes(port.to_be_bytes()) as u32) << 16
        } else {
            port as u32
        };
        assert_eq!(ctx_remote_port(raw), 8080);
    }

    fn input(peer: [u8; 4], port: u16, owner: Option<(u32, u32)>) -> RuleInput {
        RuleInput { peer_ip4: ip(peer), server_port: port, owner: owner.map(|(uid, gid)| Owner { uid, gid }) }
    }

    fn rule(net: [u8; 4], prefix: u32, ports: (u16, u16), uid: u32, action: u32) -> Rule {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Rule { net4: ip(net), mask4: mask.to_be(), port_lo: ports.0, port_hi: ports.1, uid, gid: Rule::ANY_ID, action }
    }

    #[test]
    fn first_matching_rule_decides_and_default_applies_otherwise() {
        let mut cfg = PodConfig::enabled();
        cfg.rules[0] = rule([10, 1, 0, 0], 16, (0, u16::MAX), Rule::ANY_ID, Rule::RETURN);
        cfg.rules[1] = rule([10, 0, 0, 0], 8, (8000, 8100), Rule::ANY_ID, Rule::ACCEPT);
        cfg.rules[2] = rule([0, 0, 0, 0], 0, (0, u16::MAX), 1337, Rule::ACCEPT);
        cfg.nrules = 3;
        cfg.flags |= PodConfig::DEFAULT_RETURN;
        assert!(!cfg.accepts(&input([10, 1, 2, 3], 8050, None)), "rule 0 returns first");
        assert!(cfg.accepts(&input([10, 2, 2, 3], 8050, None)), "rule 1: CIDR and port range");
        assert!(!cfg.accepts(&input([10, 2, 2, 3], 8101, None)), "outside the range: default return");
        assert!(cfg.accepts(&input([192, 0, 2, 1], 443, Some((1337, 1)))), "rule 2: uid");
        assert!(!cfg.accepts(&input([192, 0, 2, 1], 443, None)), "unknown owner never matches a uid rule");
        cfg.flags &= !PodConfig::DEFAULT_RETURN;
        assert!(cfg.accepts(&input([192, 0, 2, 1], 443, None)), "default accept");
        assert!(PodConfig::enabled().accepts(&input([1, 2, 3, 4], 1, None)));
    }

    #[test]
    fn syn_option_layout_matches_the_wire() {
        assert_eq!(core::mem::size_of::<SynOption>(), SynOption::ANSWER_LEN as usize);
        let o = SynOption::syn(0x01020304);
        assert_eq!([o.kind, o.len], [254, 8]);
        assert_eq!(o.token(), 0x01020304);
        assert_eq!(SynOption::search().len, 4);
        let client = ip([10, 0, 0, 7]);
        let a = SynOption::answer(7, client, 40000);
        assert_eq!(a.client_ip4, [10, 0, 0, 7], "wire order");
        assert_eq!(a.client_port, 40000u16.to_be_bytes());
        assert!(a.echoes(client, 40000));
        assert!(!a.echoes(client, 40001), "port rewritten by NAT");
        assert!(!a.echoes(ip([192, 0, 2, 1]), 40000), "address rewritten by NAT");
    }

    #[test]
    fn counter_indices_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
