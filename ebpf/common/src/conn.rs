//! How both ends of a connection name it: the sockhash key, the pairing decision, and the
//! addresses as the programs' contexts give them.

/// Key of the sockhash: one end of one TCP connection.
///
/// A connection is named by what both of its ends see identically, even through
/// REDIRECT/DNAT (which rewrites the server address, as in a sidecar mesh): the client's
/// endpoint and both initial sequence numbers. A socket is stored under its connection
/// and its own role; a sender looks up the same connection with the other role.
///
/// The client address is always 16 bytes: an IPv6 address as it is, an IPv4 address
/// v4-mapped (`::ffff:a.b.c.d`), which is also how an AF_INET6 socket of a dual-stack
/// listener sees an IPv4 client. So an IPv4 connection has one key whichever family its
/// two sockets are, and an IPv4 and an IPv6 connection never share one: no IPv6 packet
/// carries a v4-mapped address.
///
/// Client-endpoint reuse (one local ip:port towards two destinations) gives different
/// sequence numbers; SNAT changes the endpoint the server sees, so the two ends simply
/// do not meet and stay on plain TCP. Loopback client addresses (`127.0.0.0/8`, `::1`,
/// Istio's `::6`: see [`is_loopback`]) exist once per netns, so they also carry the netns cookie (a loopback connection never
/// leaves its netns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Client address, four network-order words: IPv6, or IPv4 v4-mapped.
    pub client_ip: [u32; 4],
    /// Client port, host byte order.
    pub client_port: u32,
    /// The client's first data sequence number (its ISN + 1).
    pub client_seq: u32,
    /// The server's first data sequence number (its ISN + 1).
    pub server_seq: u32,
    /// Which end is stored under this key: [`ConnKey::CLIENT`] or [`ConnKey::SERVER`].
    pub role: u32,
    /// `bpf_get_netns_cookie()` when the client address is loopback, else 0.
    pub netns_cookie: u64,
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
    pub const fn at_establishment(
        active: bool,
        local: Endpoint,
        remote: Endpoint,
        snd_nxt: u32,
        rcv_nxt: u32,
    ) -> ConnKey {
        let (client, client_seq, server_seq, role) =
            if active { (local, snd_nxt, rcv_nxt, Self::CLIENT) } else { (remote, rcv_nxt, snd_nxt, Self::SERVER) };
        ConnKey { client_ip: client.ip, client_port: client.port, client_seq, server_seq, role, netns_cookie: 0 }
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
        is_loopback(self.client_ip)
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

/// An address (IPv6, or IPv4 v4-mapped; network-order words) and port (host byte order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: [u32; 4],
    pub port: u32,
}

impl Endpoint {
    /// What the SYN-ACK's answer echoes of this address (4 bytes, see `SynOption`): an
    /// IPv4 address itself, a digest of an IPv6 address (the option space of a SYN-ACK
    /// has no room for 16 bytes).
    #[inline(always)]
    pub const fn echo(&self) -> u32 {
        match v4_mapped(self.ip) {
            Some(ip4) => ip4,
            None => digest6(self.ip),
        }
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

/// True for v4-mapped 127.0.0.0/8 and for `::/96`: `::1` and the IPv4-compatible
/// addresses (deprecated, RFC 4291), which exist only where a netns puts them on its `lo`,
/// as Istio puts its IPv6 inbound passthrough source `::6` in every pod. Counting one
/// that is not on `lo` here costs that connection its pairing (the ends' cookies differ),
/// never a wrong peer.
#[inline(always)]
pub const fn is_loopback(ip: [u32; 4]) -> bool {
    match v4_mapped(ip) {
        Some(ip4) => is_loopback4(ip4),
        None => ip[0] == 0 && ip[1] == 0 && ip[2] == 0,
    }
}

/// True for IPv6 link-local `fe80::/10`: such an address is unique only on its link
/// (two bridges of one node may reuse it), and needs an interface scope. meshaccel leaves
/// connections with a link-local end plain.
#[inline(always)]
pub const fn is_link_local6(ip: [u32; 4]) -> bool {
    u32::from_be(ip[0]) >> 22 == 0xfe80 >> 6
}

/// An IPv4 address (network byte order) as the 16-byte form of the maps: `::ffff:a.b.c.d`.
#[inline(always)]
pub const fn mapped(ip4: u32) -> [u32; 4] {
    [0, 0, 0xffffu32.to_be(), ip4]
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

/// A 32-bit digest of an IPv6 address, for the SYN-ACK's echo: NAT66 or NPTv6 on the
/// path (any other address) is detected unless the digests collide (2^-32). A collision
/// could only keep a client end waiting for a pairing that does not come (it then sends
/// plain); the key itself always holds the whole address.
#[inline(always)]
pub const fn digest6(ip: [u32; 4]) -> u32 {
    let a = ((ip[0] as u64) << 32) | ip[1] as u64;
    let b = ((ip[2] as u64) << 32) | ip[3] as u64;
    let mut h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 32;
    h = (h ^ b).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 29;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ip, ip6};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<ConnKey>(), 40);
    }

    #[test]
    fn both_ends_name_the_same_connection_even_through_redirect() {
        let client = Endpoint { ip: mapped(ip([10, 0, 0, 1])), port: 40000 };
        let service = Endpoint { ip: mapped(ip([10, 96, 0, 10])), port: 80 };
        // After REDIRECT the server sees itself on 127.0.0.1:15001, the client unchanged.
        let proxy = Endpoint { ip: mapped(ip([127, 0, 0, 1])), port: 15001 };
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
        let client = Endpoint { ip: mapped(ip([10, 0, 0, 1])), port: 40000 };
        let a = Endpoint { ip: mapped(ip([10, 0, 0, 2])), port: 80 };
        let b = Endpoint { ip: mapped(ip([10, 0, 0, 3])), port: 80 };
        let c1 = ConnKey::at_establishment(true, client, a, 1000, 7000);
        let c2 = ConnKey::at_establishment(true, client, b, 5000, 9000);
        let s2 = ConnKey::at_establishment(false, b, client, 9000, 5000);
        assert_ne!(c1.peer(), s2, "same client endpoint, other connection");
        let snat = Endpoint { ip: mapped(ip([192, 0, 2, 1])), port: 50000 };
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
    fn ipv4_and_ipv6_keys_never_collide_and_loopback_is_per_netns() {
        let v4 = Endpoint { ip: mapped(ip([10, 0, 0, 1])), port: 40000 };
        // The same 32 bits at the end of a native IPv6 address.
        let mut bits = ip6([0x2001, 0xdb8, 0, 0, 0, 0, 0x0a00, 1]);
        bits[3] = ip([10, 0, 0, 1]);
        let v6 = Endpoint { ip: bits, port: 40000 };
        let srv = Endpoint { ip: ip6([0xfd00, 0, 0, 0, 0, 0, 0, 2]), port: 80 };
        let k4 = ConnKey::at_establishment(true, v4, srv, 1000, 7000);
        let k6 = ConnKey::at_establishment(true, v6, srv, 1000, 7000);
        assert_ne!(k4, k6);
        assert_ne!(k4.peer(), k6.peer());
        let lo6 = Endpoint { ip: ip6([0, 0, 0, 0, 0, 0, 0, 1]), port: 40000 };
        assert!(ConnKey::at_establishment(true, lo6, lo6, 1, 2).needs_netns_cookie());
        assert!(ConnKey::at_establishment(true, Endpoint { ip: mapped(ip([127, 0, 0, 1])), port: 1 }, srv, 1, 2)
            .needs_netns_cookie());
        assert!(!k6.needs_netns_cookie() && !k4.needs_netns_cookie());
        // Istio's IPv6 inbound passthrough source, on every pod's lo.
        assert!(is_loopback(ip6([0, 0, 0, 0, 0, 0, 0, 6])) && is_loopback(ip6([0, 0, 0, 0, 0, 0, 0x7f00, 6])));
        assert!(!is_loopback(ip6([0, 0, 0, 0, 0, 0xffff, 0x0a00, 1])) && !is_loopback(ip6([0, 0, 0, 1, 0, 0, 0, 1])));
        assert!(!is_loopback(ip6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])));
        assert!(
            is_link_local6(ip6([0xfe80, 0, 0, 0, 1, 2, 3, 4])) && is_link_local6(ip6([0xfebf, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert!(!is_link_local6(ip6([0xfec0, 0, 0, 0, 0, 0, 0, 1])) && !is_link_local6(mapped(ip([10, 0, 0, 1]))));
    }

    #[test]
    fn echo_is_the_ipv4_address_or_a_digest_of_the_ipv6_one() {
        let v4 = Endpoint { ip: mapped(ip([10, 0, 0, 7])), port: 1 };
        assert_eq!(v4.echo(), ip([10, 0, 0, 7]));
        let a = Endpoint { ip: ip6([0xfd00, 0x6d61, 1, 0, 0, 0, 0, 7]), port: 1 };
        // NPTv6 rewrites the prefix (keeping the checksum); NAT66 another address.
        let prefix = Endpoint { ip: ip6([0xfd00, 0x6d62, 0xffff, 0, 0, 0, 0, 7]), port: 1 };
        let other = Endpoint { ip: ip6([0xfd00, 0x6d61, 1, 0, 0, 0, 0, 8]), port: 1 };
        assert_ne!(a.echo(), prefix.echo());
        assert_ne!(a.echo(), other.echo());
        assert_eq!(a.echo(), Endpoint { ip: a.ip, port: 9 }.echo());
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
}
