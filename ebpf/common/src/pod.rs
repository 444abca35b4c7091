//! Per-pod settings and filter rules (cgroup storage `POD_CONFIG`), and the socket owner
//! the rules match on (sk_storage `OWNER`).

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
    /// Put this pod's established TCP sockets (IPv4, v4-mapped and IPv6) in the sockhash.
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
    /// The other end's address: IPv6, or IPv4 v4-mapped (four network-order words).
    pub peer_ip: [u32; 4],
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
    /// Network and mask over the 16-byte address (network-order words; an IPv4 network is
    /// v4-mapped, its mask covers the `::ffff:0:0/96` prefix too); mask 0 matches all.
    pub net: [u32; 4],
    pub mask: [u32; 4],
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
    pub const ANY_ACCEPT: Rule = Rule {
        net: [0; 4],
        mask: [0; 4],
        port_lo: 0,
        port_hi: u16::MAX,
        uid: Self::ANY_ID,
        gid: Self::ANY_ID,
        action: Self::ACCEPT,
    };

    #[inline(always)]
    pub fn matches(&self, c: &RuleInput) -> bool {
        let id_ok = |want: u32, have: Option<u32>| want == Self::ANY_ID || have == Some(want);
        let (p, m, n) = (&c.peer_ip, &self.mask, &self.net);
        // One test of all four words: no branch per word.
        ((p[0] & m[0]) ^ n[0]) | ((p[1] & m[1]) ^ n[1]) | ((p[2] & m[2]) ^ n[2]) | ((p[3] & m[3]) ^ n[3]) == 0
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ip, ip6, mapped};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Rule>(), 48);
        assert_eq!(core::mem::size_of::<PodConfig>(), 8 + 48 * MAX_RULES);
    }

    fn input(peer: [u8; 4], port: u16, owner: Option<(u32, u32)>) -> RuleInput {
        RuleInput { peer_ip: mapped(ip(peer)), server_port: port, owner: owner.map(|(uid, gid)| Owner { uid, gid }) }
    }

    fn rule(net: [u8; 4], prefix: u32, ports: (u16, u16), uid: u32, action: u32) -> Rule {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let mask = [u32::MAX, u32::MAX, u32::MAX, mask.to_be()];
        Rule { net: mapped(ip(net)), mask, port_lo: ports.0, port_hi: ports.1, uid, gid: Rule::ANY_ID, action }
    }

    #[test]
    fn ipv6_networks_match_ipv6_peers_only_and_ipv4_networks_ipv4_peers_only() {
        let mut cfg = PodConfig::enabled();
        // fd00:6d61::/32, return.
        cfg.rules[0] = Rule {
            net: ip6([0xfd00, 0x6d61, 0, 0, 0, 0, 0, 0]),
            mask: [u32::MAX, 0, 0, 0],
            action: Rule::RETURN,
            ..Rule::ANY_ACCEPT
        };
        // 0.0.0.0/0 on port 80, return: every IPv4 peer, no IPv6 one.
        cfg.rules[1] = Rule { port_lo: 80, port_hi: 80, ..rule([0, 0, 0, 0], 0, (0, 0), Rule::ANY_ID, Rule::RETURN) };
        cfg.nrules = 2;
        let v6 = |g, port| RuleInput { peer_ip: ip6(g), server_port: port, owner: None };
        assert!(!cfg.accepts(&v6([0xfd00, 0x6d61, 7, 0, 0, 0, 0, 1], 443)), "inside the IPv6 network");
        assert!(cfg.accepts(&v6([0xfd00, 0x6d62, 7, 0, 0, 0, 0, 1], 443)), "outside");
        assert!(cfg.accepts(&v6([0xfd00, 0x6d62, 7, 0, 0, 0, 0, 1], 80)), "an IPv4 network never matches IPv6");
        assert!(!cfg.accepts(&input([10, 1, 2, 3], 80, None)), "0.0.0.0/0 matches IPv4");
        assert!(cfg.accepts(&input([10, 1, 2, 3], 443, None)), "an IPv6 network never matches IPv4");
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
}
