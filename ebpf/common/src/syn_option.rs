//! The TCP option on the wire between accelerated pods of one node.

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
    /// SYN-ACK only: the client address's echo (`Endpoint::echo`: an IPv4 address in
    /// network byte order, a digest of an IPv6 one) and port (big-endian).
    pub client_addr: [u8; 4],
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
            client_addr: [0; 4],
            client_port: [0; 2],
        }
    }

    /// `client_addr` as `Endpoint::echo` gives it, `port` in host order.
    pub const fn answer(token: u32, client_addr: u32, client_port: u32) -> Self {
        Self {
            kind: Self::KIND,
            len: Self::ANSWER_LEN,
            exid: Self::EXID,
            token: token.to_be_bytes(),
            client_addr: client_addr.to_ne_bytes(),
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

    /// Whether an answer echoes this endpoint (`Endpoint::echo`, port host order).
    pub const fn echoes(&self, addr: u32, port: u32) -> bool {
        u32::from_ne_bytes(self.client_addr) == addr && u16::from_be_bytes(self.client_port) as u32 == port
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip;

    #[test]
    fn syn_option_layout_matches_the_wire() {
        assert_eq!(core::mem::size_of::<SynOption>(), SynOption::ANSWER_LEN as usize);
        let o = SynOption::syn(0x01020304);
        assert_eq!([o.kind, o.len], [254, 8]);
        assert_eq!(o.token(), 0x01020304);
        assert_eq!(SynOption::search().len, 4);
        let client = ip([10, 0, 0, 7]);
        let a = SynOption::answer(7, client, 40000);
        assert_eq!(a.client_addr, [10, 0, 0, 7], "wire order");
        assert_eq!(a.client_port, 40000u16.to_be_bytes());
        assert!(a.echoes(client, 40000));
        assert!(!a.echoes(client, 40001), "port rewritten by NAT");
        assert!(!a.echoes(ip([192, 0, 2, 1]), 40000), "address rewritten by NAT");
    }
}
