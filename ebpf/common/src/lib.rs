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
}

/// Key of the sockhash: one established TCP connection as seen from one of its sockets.
///
/// A socket is stored under its own (local, remote) tuple; a sender looks up the mirror
/// tuple to find its peer. Pod IPs are unique on a node, so the 4-tuple names exactly one
/// socket, except for loopback: every pod has its own `127.0.0.1`, so loopback keys also
/// carry the netns cookie (both ends of a loopback connection share a netns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    /// IPv4 address in network byte order, as the kernel hands it over.
    pub local_ip4: u32,
    /// IPv4 address in network byte order.
    pub remote_ip4: u32,
    /// Host byte order.
    pub local_port: u32,
    /// Host byte order (converted from the context's network-order, shifted field).
    pub remote_port: u32,
    /// `bpf_get_netns_cookie()` when either address is loopback, else 0.
    pub netns_cookie: u64,
}

impl SockKey {
    /// The key under which the other end of this connection is stored.
    #[inline(always)]
    pub const fn peer(&self) -> SockKey {
        SockKey {
            local_ip4: self.remote_ip4,
            remote_ip4: self.local_ip4,
            local_port: self.remote_port,
            remote_port: self.local_port,
            netns_cookie: self.netns_cookie,
        }
    }

    #[inline(always)]
    pub const fn is_loopback(&self) -> bool {
        is_loopback4(self.local_ip4) || is_loopback4(self.remote_ip4)
    }
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodConfig {
    pub flags: u32,
    pub _reserved: u32,
}

impl PodConfig {
    /// Put this pod's established IPv4 (and v4-mapped) TCP sockets in the sockhash.
    pub const SOCKMAP: u32 = 1 << 0;

    pub const fn sockmap_enabled(&self) -> bool {
        self.flags & Self::SOCKMAP != 0
    }
}

/// Per-connection decision, in socket-local storage. Made at the connection's first send
/// and never changed, so redirected and plain sends are never mixed in one direction (the
/// receiver would see them out of order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub mode: u32,
}

impl ConnState {
    pub const UNDECIDED: u32 = 0;
    pub const REDIRECT: u32 = 1;
    pub const PLAIN: u32 = 2;
}

/// Index of a per-CPU counter in the `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Sockets put in the sockhash at establishment.
    SocketsInserted = 0,
    /// Sockhash updates the kernel refused (map full, unsupported socket state).
    InsertFailures = 1,
    /// Messages delivered straight into the peer socket.
    MsgRedirected = 2,
    /// Connections whose first send found no peer and so stay on plain TCP.
    RedirectMisses = 3,
    /// Bytes delivered by redirect.
    BytesRedirected = 4,
    /// Messages sent on plain TCP by connections decided plain.
    MsgPassed = 5,
}

impl Counter {
    pub const ALL: [Counter; 6] = [
        Counter::SocketsInserted,
        Counter::InsertFailures,
        Counter::MsgRedirected,
        Counter::RedirectMisses,
        Counter::BytesRedirected,
        Counter::MsgPassed,
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
        }
    }
}

/// Sizing of the sockhash: two entries per accelerated connection.
pub const SOCKS_MAX_ENTRIES: u32 = 65_536;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, #[repr(C)], no padding holes (checked by the size tests).
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::PodConfig {}
    unsafe impl aya::Pod for super::ConnState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<SockKey>(), 24);
        assert_eq!(core::mem::size_of::<PodConfig>(), 8);
        assert_eq!(core::mem::size_of::<ConnState>(), 4);
    }

    #[test]
    fn peer_is_an_involution_and_mirrors_the_tuple() {
        let k = SockKey {
            local_ip4: u32::from_be_bytes([10, 0, 0, 1]).to_be(),
            remote_ip4: u32::from_be_bytes([10, 0, 0, 2]).to_be(),
            local_port: 40000,
            remote_port: 80,
            netns_cookie: 0,
        };
        assert_eq!(k.peer().peer(), k);
        assert_eq!(k.peer().local_port, 80);
        assert_eq!(k.peer().remote_ip4, k.local_ip4);
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

    #[test]
    fn counter_indices_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
