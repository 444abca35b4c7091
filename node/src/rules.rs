//! The `sockmap` section of meshaccel's network conf, and its filter rules compiled into the
//! fixed-size rule table the BPF program evaluates at connection establishment. Shared by
//! the plugin (validated at ADD) and the installer (adoption of running pods).
use std::net::Ipv4Addr;

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
    /// The peer's IPv4 network, e.g. "10.96.0.0/12" (no host bits).
    pub cidr: Option<String>,
    /// The connection's server port (the destination of the connecting end).
    pub ports: Option<Ports>,
    /// Owner of the pod's socket (for an accepted socket: the listener's owner).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub action: Action,
}

fn parse_cidr(s: &str) -> Result<(u32, u32), String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("cidr {s:?}: expected a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("cidr {s:?}: {addr:?} is not an IPv4 address"))?;
    let len: u32 =
        len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("cidr {s:?}: prefix length must be 0..=32"))?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let net = u32::from(addr);
    if net & !mask != 0 {
        return Err(format!("cidr {s:?} has host bits set (network is {}/{len})", Ipv4Addr::from(net & mask)));
    }
    Ok((net.to_be(), mask.to_be()))
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
        let (net4, mask4) = self.cidr.as_deref().map(parse_cidr).transpose()?.unwrap_or((0, 0));
        let (port_lo, port_hi) = self.ports.as_ref().map(parse_ports).transpose()?.unwrap_or((0, u16::MAX));
        Ok(Rule {
            net4,
            mask4,
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
            peer_ip4: u32::from(Ipv4Addr::from(peer)).to_be(),
            server_port: port,
            owner: uid.map(|uid| Owner { uid, gid: 0 }),
        }
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
            (serde_json::json!([{"cidr": "fd00::/8", "action": "accept"}]), "not an IPv4"),
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
