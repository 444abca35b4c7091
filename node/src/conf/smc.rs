//! The `smc` object of the plugin's conf entry, and the syntax rules of its values (the
//! kernel's rules for PNET IDs and UEIDs, sysfs names, `net.smc.` sysctl names), checked
//! before anything is created. What the values do is the `meshaccel-smc` crate's.
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `smc` object of the network conf.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SmcConf {
    /// Network default; the pod annotation `meshaccel.io/smc` overrides it.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Mode,
    /// Default: derived from the RDMA device name.
    #[serde(default)]
    pub pnet_id: Option<String>,
    /// Default: the node's only RDMA device with an ACTIVE port.
    #[serde(default)]
    pub rdma_device: Option<String>,
    /// Full names (`net.smc.wmem`) → values, set in the pod netns.
    #[serde(default)]
    pub sysctls: BTreeMap<String, Value>,
    /// A node-level EID to make sure of; SMC-Rv2 (the only SMC-R that RoCEv2-only
    /// devices such as Soft-RoCE can do) needs one on both ends.
    #[serde(default)]
    pub ueid: Option<String>,
    /// Seconds a node's RDMA reachability verdict is trusted before it is re-checked.
    #[serde(default = "default_ttl")]
    pub reachability_ttl: u64,
    /// The two-way RDMA reachability probe that must pass before any pod gets SMC.
    #[serde(default)]
    pub probe: ProbeConf,
}

impl Default for SmcConf {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: Mode::default(),
            pnet_id: None,
            rdma_device: None,
            sysctls: BTreeMap::new(),
            ueid: None,
            reachability_ttl: default_ttl(),
            probe: ProbeConf::default(),
        }
    }
}

impl SmcConf {
    /// Syntax checks that need no kernel: everything bad here is a conf error whatever
    /// the node.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.pnet_id {
            check_pnetid(id)?;
        }
        if let Some(dev) = &self.rdma_device {
            check_rdma_device(dev)?;
        }
        if let Some(u) = &self.ueid {
            check_ueid(u)?;
        }
        if self.reachability_ttl == 0 {
            return Err("reachabilityTtl must be at least 1 (seconds)".into());
        }
        self.probe.validate()?;
        self.sysctl_values().map(drop)
    }

    /// Sysctl values as the strings written to /proc (numbers and strings accepted).
    pub fn sysctl_values(&self) -> Result<BTreeMap<String, String>, String> {
        self.sysctls
            .iter()
            .map(|(k, v)| {
                sysctl_short_name(k)?;
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => return Err(format!("sysctl {k}: value {other} is not a string or number")),
                };
                if s.contains(['\n', '\0']) {
                    return Err(format!("sysctl {k}: value contains a newline or NUL"));
                }
                Ok((k.clone(), s))
            })
            .collect()
    }

    /// Whether a pod gets SMC: the annotation wins over the network default; mode `off`
    /// wins over both.
    pub fn wanted(&self, annotation: Option<bool>) -> bool {
        self.mode != Mode::Off && annotation.unwrap_or(self.enabled)
    }
}

/// Seconds a reachability verdict is trusted by default.
pub fn default_ttl() -> u64 {
    60
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// tcp2smc if the kernel has it, else bpf.
    #[default]
    Auto,
    Tcp2smc,
    Bpf,
    /// SMC off for the network, whatever `enabled` and the annotation say.
    Off,
}

pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=30_000;
const MAX_PEERS: usize = 64;
/// As many as resolv.conf may name (glibc's MAXNS is 3), with room for a local cache.
const MAX_NAMESERVERS: usize = 4;
const DNS_PORT: u16 = 53;
const DNS_PREFIX: &str = "dns:";

/// One `smc.probe.peers` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// `IP:PORT` of one responder.
    Addr(SocketAddr),
    /// `dns:NAME:PORT`: every address NAME has when the probe runs (a headless Service over
    /// the DaemonSet's host-network pods follows the cluster's nodes), at PORT.
    Dns { name: String, port: u16 },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Addr(a) => write!(f, "{a}"),
            Peer::Dns { name, port } => write!(f, "{DNS_PREFIX}{name}:{port}"),
        }
    }
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let Some(rest) = s.strip_prefix(DNS_PREFIX) else {
            return s.parse().map(Peer::Addr).map_err(|_| {
                format!("probe.peers: {s:?} is neither IP:PORT nor dns:NAME:PORT (names need the dns: prefix)")
            });
        };
        let (name, port) = rest.rsplit_once(':').ok_or_else(|| format!("probe.peers: {s:?} has no :PORT"))?;
        let port: u16 = port.parse().map_err(|_| format!("probe.peers: {s:?}: bad port"))?;
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        check_dns_name(&name).map_err(|why| format!("probe.peers: {s:?}: {why}"))?;
        Ok(Peer::Dns { name, port })
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// RFC 1123 host names: labels of 1–63 letters, digits and inner hyphens, ≤ 253 in all.
/// Resolved as given (no search domains), so a name is meant in full.
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err("not a DNS name (labels of a-z 0-9 -, at most 253 characters)");
    }
    Ok(())
}

/// A `smc.probe.nameservers` entry: `IP` (port 53) or `IP:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nameserver(pub SocketAddr);

impl<'de> Deserialize<'de> for Nameserver {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<SocketAddr>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, DNS_PORT)))
            .map(Nameserver)
            .map_err(|_| serde::de::Error::custom(format!("probe.nameservers: {s:?} is not IP or IP:PORT")))
    }
}

/// The `smc.probe` object of the network conf.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeConf {
    /// rdma-responders on other nodes, by address or DNS name. Empty: RDMA reachability
    /// cannot be verified, so SMC stays off (unless `trust`).
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Where `dns:` peers are looked up. Empty: the node's /etc/resolv.conf. The plugin runs
    /// in the node's network namespace, whose resolver rarely knows cluster names: name the
    /// cluster DNS Service's IP here.
    #[serde(default)]
    pub nameservers: Vec<Nameserver>,
    /// Hard deadline of one probe (all peers are probed in parallel), and of the DNS lookups
    /// before it.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Enable SMC without verifying RDMA reachability. Dangerous: on a path where RoCE works
    /// one way only, SMC connections hang in the kernel for ever.
    #[serde(default)]
    pub trust: bool,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl Default for ProbeConf {
    fn default() -> Self {
        Self { peers: Vec::new(), nameservers: Vec::new(), timeout_ms: DEFAULT_TIMEOUT_MS, trust: false }
    }
}

impl ProbeConf {
    pub fn validate(&self) -> Result<(), String> {
        if !TIMEOUT_RANGE_MS.contains(&self.timeout_ms) {
            return Err(format!(
                "probe.timeoutMs {} is outside {}..={}",
                self.timeout_ms,
                TIMEOUT_RANGE_MS.start(),
                TIMEOUT_RANGE_MS.end()
            ));
        }
        if self.trust && !self.peers.is_empty() {
            return Err("probe.trust skips the probe: do not also list probe.peers".into());
        }
        if self.peers.len() > MAX_PEERS {
            return Err(format!("probe.peers: at most {MAX_PEERS} peers"));
        }
        let mut seen = BTreeSet::new();
        for p in &self.peers {
            let bad = match p {
                Peer::Addr(a) => {
                    let ip = a.ip();
                    a.port() == 0 || ip.is_unspecified() || ip.is_multicast() || ip.is_loopback()
                }
                Peer::Dns { port, .. } => *port == 0,
            };
            if bad {
                return Err(format!("probe.peers: {p} is not a unicast IP:PORT (or dns:NAME:PORT) of another node"));
            }
            if !seen.insert(p) {
                return Err(format!("probe.peers: {p} is listed twice"));
            }
        }
        if !self.nameservers.is_empty() && !self.peers.iter().any(|p| matches!(p, Peer::Dns { .. })) {
            return Err("probe.nameservers are only used for dns: peers, and none is listed".into());
        }
        if self.nameservers.len() > MAX_NAMESERVERS {
            return Err(format!("probe.nameservers: at most {MAX_NAMESERVERS}"));
        }
        for Nameserver(ns) in &self.nameservers {
            if ns.port() == 0 || ns.ip().is_unspecified() || ns.ip().is_multicast() {
                return Err(format!("probe.nameservers: {ns} is not a unicast IP:PORT"));
            }
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The peer set as cached with a verdict: sorted, so the conf's order does not matter.
    pub fn peer_key(&self) -> Vec<String> {
        let mut v: Vec<String> = self.peers.iter().map(|p| p.to_string()).collect();
        v.sort();
        v
    }
}

/// The kernel's SMC_MAX_PNETID_LEN.
pub const MAX_PNETID_LEN: usize = 16;

/// A PNET ID as the kernel stores it: 1–16 characters, upper-case letters and digits
/// (the kernel upper-cases what it is given; we accept only the canonical form, so what
/// is configured is what is read back).
pub fn check_pnetid(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_PNETID_LEN {
        return Err(format!("PNET ID {id:?} must be 1 to {MAX_PNETID_LEN} characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return Err(format!("PNET ID {id:?} may only contain upper-case letters and digits"));
    }
    Ok(())
}

/// An EID on the wire: exactly 32 characters, blank padded.
pub const EID_LEN: usize = 32;

/// UEIDs follow the kernel's rule: upper-case letters, digits, '.' and '-', starting with
/// a letter or digit, not longer than 32.
pub fn check_ueid(ueid: &str) -> Result<(), String> {
    let ok = !ueid.is_empty()
        && ueid.len() <= EID_LEN
        && ueid.as_bytes()[0].is_ascii_alphanumeric()
        && ueid.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("UEID {ueid:?}: 1–32 of A-Z 0-9 . -, starting with a letter or digit"))
    }
}

/// Device names are single path components (they index sysfs).
pub fn check_rdma_device(dev: &str) -> Result<(), String> {
    let ok =
        !dev.is_empty() && dev.len() <= 63 && dev.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("rdmaDevice {dev:?}: 1–63 of a-z A-Z 0-9 _ -"))
    }
}

pub const PREFIX: &str = "net.smc.";

/// The key's name below `net.smc.`, checked to be one plain path component.
pub fn sysctl_short_name(key: &str) -> Result<&str, String> {
    let name = key.strip_prefix(PREFIX).ok_or_else(|| format!("sysctl {key:?} is not under {PREFIX}"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!("sysctl {key:?}: the name after {PREFIX} may only hold a-z, 0-9 and _"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: Value) -> Result<ProbeConf, String> {
        let c: ProbeConf = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn defaults_probe_nothing_and_trust_nothing() {
        let c = probe(serde_json::json!({})).unwrap();
        assert!(c.peers.is_empty() && !c.trust);
        assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn peer_key_ignores_order() {
        let a = probe(serde_json::json!({"peers": ["10.0.0.2:7471", "[fd00::1]:7471"]})).unwrap();
        let b = probe(serde_json::json!({"peers": ["[fd00::1]:7471", "10.0.0.2:7471"]})).unwrap();
        assert_eq!(a.peer_key(), b.peer_key());
    }

    #[test]
    fn rejects_bad_peers_nameservers_timeouts_and_typos() {
        for bad in [
            serde_json::json!({"peers": ["10.0.0.2"]}),
            serde_json::json!({"peers": ["node-b:7471"]}),
            serde_json::json!({"peers": ["dns:node-b"]}),
            serde_json::json!({"peers": ["10.0.0.2:0"]}),
            serde_json::json!({"peers": ["0.0.0.0:7471"]}),
            serde_json::json!({"peers": ["127.0.0.1:7471"]}),
            serde_json::json!({"peers": ["224.0.0.1:7471"]}),
            serde_json::json!({"peers": ["10.0.0.2:7471", "10.0.0.2:7471"]}),
            serde_json::json!({"timeoutMs": 0}),
            serde_json::json!({"timeoutMs": 600000}),
            serde_json::json!({"timeoutMs": "2000"}),
            serde_json::json!({"trust": true, "peers": ["10.0.0.2:7471"]}),
            serde_json::json!({"peer": ["10.0.0.2:7471"]}),
            serde_json::json!({"peers": ["dns:responder"]}),
            serde_json::json!({"peers": ["dns:responder:0"]}),
            serde_json::json!({"peers": ["dns:responder:99999"]}),
            serde_json::json!({"peers": ["dns::7471"]}),
            serde_json::json!({"peers": ["dns:-bad.example:7471"]}),
            serde_json::json!({"peers": ["dns:a..b:7471"]}),
            serde_json::json!({"peers": ["dns:under_score.example:7471"]}),
            serde_json::json!({"peers": [format!("dns:{}.example:7471", "a".repeat(64))]}),
            serde_json::json!({"peers": ["dns:r.example:7471", "dns:R.example.:7471"]}),
            serde_json::json!({"peers": ["responder.example:7471"]}),
            serde_json::json!({"peers": ["10.0.0.2:7471"], "nameservers": ["10.96.0.10"]}),
            serde_json::json!({"peers": ["dns:r.example:7471"], "nameservers": ["resolver"]}),
            serde_json::json!({"peers": ["dns:r.example:7471"], "nameservers": ["0.0.0.0"]}),
            serde_json::json!({"peers": ["dns:r.example:7471"], "nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"]}),
            serde_json::json!({"trust": true, "peers": ["dns:r.example:7471"]}),
        ] {
            assert!(probe(bad.clone()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn dns_peers_are_names_with_a_port_kept_in_canonical_form() {
        let c = probe(serde_json::json!({
            "peers": ["dns:Meshaccel-Responder.meshaccel.svc.cluster.local.:7471", "10.0.0.2:7471"],
            "nameservers": ["10.96.0.10", "[fd00::a]:5353"]
        }))
        .unwrap();
        assert_eq!(
            c.peers[0],
            Peer::Dns { name: "meshaccel-responder.meshaccel.svc.cluster.local".into(), port: 7471 }
        );
        assert_eq!(c.peer_key(), ["10.0.0.2:7471", "dns:meshaccel-responder.meshaccel.svc.cluster.local:7471"]);
        assert_eq!(c.nameservers[0].0, "10.96.0.10:53".parse().unwrap());
        assert_eq!(c.nameservers[1].0, "[fd00::a]:5353".parse().unwrap());
        // Display round-trips through FromStr.
        assert_eq!(c.peers[0].to_string().parse::<Peer>().unwrap(), c.peers[0]);
    }
}
