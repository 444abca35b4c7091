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
    pub const ANY_ACCEPT: Rule = Rule {
        net4: 0,
        mask4: 0,
        port_lo: 0,
        port_hi: u16::MAX,
        uid: Self::ANY_ID,
        gid: Self::ANY_ID,
        action: Self::ACCEPT,
    };

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Rule>(), 24);
        assert_eq!(core::mem::size_of::<PodConfig>(), 8 + 24 * MAX_RULES);
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
}
