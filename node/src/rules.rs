//! The `sockmap` section of meshaccel's network conf, and its filter rules compiled into the
//! fixed-size rule table the BPF program evaluates at connection establishment. Shared by
//! the plugin (validated at ADD) and the installer (adoption of running pods).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshaccel_common::{PodConfig, Rule, MAX_RULES};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Accelerate the connection.
    #[default]
    Accept,
    /// Leave it on plain TCP.
    Return,
}

/// A port or an inclusive range: `80`, `"80"`, `"8000-8100"`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Ports {
    One(u16),
    Spec(String),
}

/// One rule as written in the network conf. Every given field must match.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleConf {
    /// The peer's IPv4 or IPv6 network, e.g. "10.96.0.0/12", "fd00:10:96::/112" (no host
    /// bits). An IPv4 network matches IPv4 peers only (also those of dual-stack sockets,
    /// seen as `::ffff:a.b.c.d`), an IPv6 one the IPv6 peers inside it; `::/0` (like every
    /// IPv6 network containing `::ffff:0:0/96`) matches IPv4 peers too.
    pub cidr: Option<String>,
    /// The connection's server port (the destination of the connecting end).
    pub ports: Option<Ports>,
    /// Owner of the pod's socket (for an accepted socket: the listener's owner).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub action: Action,
}

/// A network as the rule table holds it: network and mask over the 16-byte address
/// (network-order words), IPv4 v4-mapped with its mask covering the `::ffff:0:0/96` prefix.
fn parse_cidr(s: &str) -> Result<([u32; 4], [u32; 4]), String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("cidr {s:?}: expected a.b.c.d/len or ipv6/len"))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("cidr {s:?}: {addr:?} is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u32 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("cidr {s:?}: prefix length must be 0..={max} for an {} network", family(&addr)))?;
    let (bits, len128) = match addr {
        IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), 96 + len),
        IpAddr::V6(a) => (u128::from(a), len),
    };
    let mask = if len128 == 0 { 0 } else { u128::MAX << (128 - len128) };
    if bits & !mask != 0 {
        let net = match addr {
            IpAddr::V4(_) => Ipv4Addr::from((bits & mask) as u32).to_string(),
            IpAddr::V6(_) => Ipv6Addr::from(bits & mask).to_string(),
        };
        return Err(format!("cidr {s:?} has host bits set (network is {net}/{len})"));
    }
    Ok((words(bits), words(mask)))
}

fn family(a: &IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A 128-bit address as the four network-order words the programs compare.
fn words(a: u128) -> [u32; 4] {
    let b = a.to_be_bytes();
    let w = |i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    [w(0), w(1), w(2), w(3)]
}

fn parse_ports(p: &Ports) -> Result<(u16, u16), String> {
    let (lo, hi) = match p {
        Ports::One(n) => (*n, *n),
        Ports::Spec(s) => {
            let num = |x: &str| x.trim().parse::<u16>().map_err(|_| format!("ports {s:?}: {x:?} is not a port"));
            match s.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(s)?, num(s)?),
            }
        }
    };
    if lo > hi {
        return Err(format!("ports {p:?}: range {lo}-{hi} is inverted"));
    }
    Ok((lo, hi))
}

fn id(what: &str, v: Option<u32>) -> Result<u32, String> {
    match v {
        Some(Rule::ANY_ID) => Err(format!("{what} {} is reserved", Rule::ANY_ID)),
        Some(v) => Ok(v),
        None => Ok(Rule::ANY_ID),
    }
}

impl RuleConf {
    fn compile(&self) -> Result<Rule, String> {
        let (net, mask) = self.cidr.as_deref().map(parse_cidr).transpose()?.unwrap_or(([0; 4], [0; 4]));
        let (port_lo, port_hi) = self.ports.as_ref().map(parse_ports).transpose()?.unwrap_or((0, u16::MAX));
        Ok(Rule {
            net,
            mask,
            port_lo,
            port_hi,
            uid: id("uid", self.uid)?,
            gid: id("gid", self.gid)?,
            action: match self.action {
                Action::Accept => Rule::ACCEPT,
                Action::Return => Rule::RETURN,
            },
        })
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SockmapConf {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Filter rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConf>,
    /// For connections no rule matches.
    #[serde(default)]
    pub default_action: Action,
}

impl Default for SockmapConf {
    fn default() -> Self {
        Self { enabled: true, rules: Vec::new(), default_action: Action::Accept }
    }
}

impl SockmapConf {
    /// The per-pod settings the BPF programs read, validated.
    pub fn pod_config(&self) -> Result<PodConfig, String> {
        pod_config(&self.rules, self.default_action)
    }
}

/// The pod settings for an enabled pod with these rules.
pub fn pod_config(rules: &[RuleConf], default: Action) -> Result<PodConfig, String> {
    if rules.len() > MAX_RULES {
        return Err(format!("sockmap.rules: {} rules, at most {MAX_RULES}", rules.len()));
    }
    let mut cfg = PodConfig::enabled();
    for (i, r) in rules.iter().enumerate() {
        cfg.rules[i] = r.compile().map_err(|e| format!("sockmap.rules[{i}]: {e}"))?;
    }
    cfg.nrules = rules.len() as u32;
    if default == Action::Return {
        cfg.flags |= PodConfig::DEFAULT_RETURN;
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshaccel_common::{Owner, RuleInput};

    fn rules(json: serde_json::Value) -> Result<Vec<RuleConf>, serde_json::Error> {
        serde_json::from_value(json)
    }

    fn input(peer: [u8; 4], port: u16, uid: Option<u32>) -> RuleInput {
        RuleInput {
            peer_ip: words(u128::from(Ipv4Addr::from(peer).to_ipv6_mapped())),
            server_port: port,
            owner: uid.map(|uid| Owner { uid, gid: 0 }),
        }
    }

    fn input6(peer: &str, port: u16) -> RuleInput {
        RuleInput { peer_ip: words(u128::from(peer.parse::<Ipv6Addr>().unwrap())), server_port: port, owner: None }
    }

    #[test]
    fn ipv6_networks_match_ipv6_peers_and_ipv4_networks_ipv4_peers() {
        let r = rules(serde_json::json!([
            {"cidr": "fd00:6d61::/32", "ports": 80, "action": "return"},
            {"cidr": "0.0.0.0/0", "ports": 81, "action": "return"},
            {"cidr": "2001:db8:1:2::7/128", "action": "return"},
            {"cidr": "::/0", "ports": 82, "action": "return"},
        ]))
        .unwrap();
        let cfg = pod_config(&r, Action::Accept).unwrap();
        assert!(!cfg.accepts(&input6("fd00:6d61:1::5", 80)), "inside the IPv6 network");
        assert!(cfg.accepts(&input6("fd00:6d62::5", 80)), "outside it");
        assert!(cfg.accepts(&input([10, 0, 0, 1], 80, None)), "an IPv6 network, an IPv4 peer");
        assert!(!cfg.accepts(&input([10, 0, 0, 1], 81, None)), "0.0.0.0/0 matches IPv4 peers");
        assert!(cfg.accepts(&input6("fd00:6d61:1::5", 81)), "but no IPv6 peer");
        assert!(!cfg.accepts(&input6("2001:db8:1:2::7", 9)), "a /128");
        assert!(cfg.accepts(&input6("2001:db8:1:2::8", 9)));
        assert!(!cfg.accepts(&input6("fd00:6d62::5", 82)) && !cfg.accepts(&input([10, 0, 0, 1], 82, None)), "::/0");
    }

    #[test]
    fn each_match_type_and_action_first_match_wins() {
        let r = rules(serde_json::json!([
            {"cidr": "10.96.0.0/12", "action": "return"},
            {"ports": "8000-8100", "action": "accept"},
            {"ports": 9090, "uid": 1337, "action": "accept"},
            {"gid": 7, "action": "return"},
        ]))
        .unwrap();
        let cfg = pod_config(&r, Action::Return).unwrap();
        assert!(!cfg.accepts(&input([10, 96, 1, 1], 8050, None)), "cidr rule first");
        assert!(cfg.accepts(&input([10, 1, 1, 1], 8100, None)), "range upper bound inclusive");
        assert!(!cfg.accepts(&input([10, 1, 1, 1], 9090, Some(1000))), "uid must match");
        assert!(cfg.accepts(&input([10, 1, 1, 1], 9090, Some(1337))));
        assert!(!cfg.accepts(&input([10, 1, 1, 1], 22, None)), "default return");
        let open = pod_config(&r, Action::Accept).unwrap();
        assert!(open.accepts(&input([10, 1, 1, 1], 22, None)), "default accept");
    }

    #[test]
    fn invalid_rules_are_rejected_with_a_reason() {
        for (bad, want) in [
            (serde_json::json!([{"cidr": "10.0.0.1/8", "action": "accept"}]), "host bits"),
            (serde_json::json!([{"cidr": "10.0.0.0/33", "action": "accept"}]), "prefix length"),
            (serde_json::json!([{"cidr": "fd00::1/8", "action": "accept"}]), "host bits set (network is fd00::/8)"),
            (serde_json::json!([{"cidr": "fd00::/129", "action": "accept"}]), "0..=128"),
            (serde_json::json!([{"cidr": "10.0.0.0", "action": "accept"}]), "expected"),
            (serde_json::json!([{"cidr": "fd00::g/64", "action": "accept"}]), "not an IPv4 or IPv6 address"),
            (serde_json::json!([{"ports": "90-80", "action": "accept"}]), "inverted"),
            (serde_json::json!([{"ports": "http", "action": "accept"}]), "not a port"),
            (serde_json::json!([{"uid": 4294967295u32, "action": "accept"}]), "reserved"),
        ] {
            let e = pod_config(&rules(bad.clone()).unwrap(), Action::Accept).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(rules(serde_json::json!([{"action": "drop"}])).is_err(), "unknown action");
        assert!(rules(serde_json::json!([{"cidrr": "10.0.0.0/8", "action": "accept"}])).is_err(), "typo");
        let many: Vec<RuleConf> = (0..=MAX_RULES)
            .map(|_| RuleConf { cidr: None, ports: None, uid: None, gid: None, action: Action::Accept })
            .collect();
        assert!(pod_config(&many, Action::Accept).unwrap_err().contains("at most"));
    }
}
