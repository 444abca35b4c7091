//! The `SMC_GEN_NETLINK` family: node-level EIDs (UEID) that SMC-Rv2 needs, the kernel's
//! SMC counters and fallback reasons (per netns), and system info.
pub use meshaccel_node::conf::smc::{check_ueid, EID_LEN};
use serde_json::{json, Map, Value};

use super::genl::{find, Attr, Family, Genl, GenlError};

#[derive(Clone, Debug)]
pub struct SmcGen;

impl Family for SmcGen {
    const NAME: &'static str = "SMC_GEN_NETLINK";
    const VERSION: u8 = 1;
}

const CMD_GET_SYS_INFO: u8 = 1;
const CMD_GET_STATS: u8 = 7;
const CMD_GET_FBACK_STATS: u8 = 8;
const CMD_DUMP_UEID: u8 = 9;
const CMD_ADD_UEID: u8 = 10;
const CMD_REMOVE_UEID: u8 = 11;

const GEN_SYS_INFO: u16 = 1;
const GEN_STATS: u16 = 7;
const GEN_FBACK_STATS: u16 = 8;
const EID_TABLE_ENTRY: u16 = 1;

fn eid_attr(ueid: &str) -> Attr {
    // 32 blank-padded characters plus the NUL: the kernel checks the length is exactly 33.
    Attr::string(EID_TABLE_ENTRY, &format!("{ueid:<EID_LEN$}"))
}

pub struct SmcNl(Genl<SmcGen>);

impl SmcNl {
    /// Fails with [`GenlError::NoFamily`] on kernels without SMC.
    pub fn open() -> Result<Self, GenlError> {
        Genl::open().map(Self)
    }

    pub fn ueids(&mut self) -> Result<Vec<String>, GenlError> {
        Ok(self
            .0
            .dump(CMD_DUMP_UEID, vec![])?
            .iter()
            .flat_map(|m| m.attrs.iter().filter(|a| a.kind == EID_TABLE_ENTRY))
            .map(|a| a.as_str().trim_end().to_string())
            .collect())
    }

    /// Adds a UEID: `true` when this call added it, `false` when it was there already.
    pub fn add_ueid(&mut self, ueid: &str) -> Result<bool, GenlError> {
        match self.0.call(CMD_ADD_UEID, vec![eid_attr(ueid)]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a UEID; one already gone is success.
    pub fn remove_ueid(&mut self, ueid: &str) -> Result<(), GenlError> {
        match self.0.call(CMD_REMOVE_UEID, vec![eid_attr(ueid)]) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// `SMC_GEN_SYS_INFO` as JSON (version, release, SMC-Rv2 capability, local host).
    pub fn sys_info(&mut self) -> Result<Value, GenlError> {
        let mut out = Map::new();
        for m in self.0.dump(CMD_GET_SYS_INFO, vec![])? {
            let Some(nest) = find(&m.attrs, GEN_SYS_INFO) else { continue };
            for a in nest.nested().map_err(decode)? {
                let (k, v) = match a.kind {
                    1 => ("version", json!(a.as_u64())),
                    2 => ("release", json!(a.as_u64())),
                    3 => ("ismV2", json!(a.as_u64() == Some(1))),
                    4 => ("localHost", json!(a.as_str().trim_end())),
                    5 => ("seid", json!(a.as_str().trim_end())),
                    6 => ("smcrV2", json!(a.as_u64() == Some(1))),
                    _ => continue,
                };
                out.insert(k.into(), v);
            }
        }
        Ok(Value::Object(out))
    }

    /// The kernel's SMC counters of the caller's netns (`GET_STATS`).
    pub fn stats(&mut self) -> Result<Stats, GenlError> {
        let mut s = Stats::default();
        for m in self.0.dump(CMD_GET_STATS, vec![])? {
            let Some(nest) = find(&m.attrs, GEN_STATS) else { continue };
            for a in nest.nested().map_err(decode)? {
                match a.kind {
                    1 => s.smcd = tech(&a)?,
                    2 => s.smcr = tech(&a)?,
                    3 => s.client_handshake_errors = a.as_u64().unwrap_or(0),
                    4 => s.server_handshake_errors = a.as_u64().unwrap_or(0),
                    _ => {}
                }
            }
        }
        Ok(s)
    }

    /// Fallbacks of the caller's netns by reason (`GET_FBACK_STATS`).
    pub fn fallbacks(&mut self) -> Result<Vec<Fallback>, GenlError> {
        let mut out = Vec::new();
        for m in self.0.dump(CMD_GET_FBACK_STATS, vec![])? {
            let Some(nest) = find(&m.attrs, GEN_FBACK_STATS) else { continue };
            let attrs = nest.nested().map_err(decode)?;
            let get = |k| find(&attrs, k).and_then(Attr::as_u64).unwrap_or(0);
            let code = get(4) as u32;
            if code == 0 {
                continue; // the totals-only message
            }
            out.push(Fallback { server: get(1) == 1, code, reason: reason_name(code), count: get(5) });
        }
        Ok(out)
    }
}

fn decode(e: netlink_packet_core::DecodeError) -> GenlError {
    GenlError::Decode { family: SmcGen::NAME, what: e.to_string() }
}

/// Per-technology counters (SMC_NLA_STATS_T_*; the byte and count attributes are 16–19).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct TechStats {
    pub clnt_v1_succ: u64,
    pub clnt_v2_succ: u64,
    pub srv_v1_succ: u64,
    pub srv_v2_succ: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_cnt: u64,
    pub tx_cnt: u64,
}

fn tech(nest: &Attr) -> Result<TechStats, GenlError> {
    let attrs = nest.nested().map_err(decode)?;
    let get = |k| find(&attrs, k).and_then(Attr::as_u64).unwrap_or(0);
    Ok(TechStats {
        clnt_v1_succ: get(7),
        clnt_v2_succ: get(8),
        srv_v1_succ: get(9),
        srv_v2_succ: get(10),
        rx_bytes: get(16),
        tx_bytes: get(17),
        rx_cnt: get(18),
        tx_cnt: get(19),
    })
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub smcr: TechStats,
    pub smcd: TechStats,
    pub client_handshake_errors: u64,
    pub server_handshake_errors: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    pub server: bool,
    pub code: u32,
    pub reason: String,
    pub count: u64,
}

/// The kernel's `SMC_CLC_DECL_*` names (net/smc/smc_clc.h); unknown codes in hex.
pub fn reason_name(code: u32) -> String {
    let name = match code {
        0x0101_0000 => "MEM",
        0x0201_0000 => "TIMEOUT_CL",
        0x0202_0000 => "TIMEOUT_AL",
        0x0300_0000 => "CNFERR",
        0x0301_0000 => "PEERNOSMC",
        0x0302_0000 => "IPSEC",
        0x0303_0000 => "NOSMCDEV",
        0x0303_0001 => "NOSMCDDEV",
        0x0303_0002 => "NOSMCRDEV",
        0x0303_0003 => "NOISM2SUPP",
        0x0303_0004 => "NOV2EXT",
        0x0303_0005 => "NOV2DEXT",
        0x0303_0006 => "NOSEID",
        0x0303_0007 => "NOSMCD2DEV",
        0x0303_0008 => "NOUEID",
        0x0303_0009 => "RELEASEERR",
        0x0303_000a => "MAXCONNERR",
        0x0303_000b => "MAXLINKERR",
        // The kernel gives two names to each of these two codes.
        0x0400_0000 => "MODEUNSUPP|SYNCERR",
        0x0500_0000 => "RMBE_EC|PEERDECL",
        0x0600_0000 => "OPTUNSUPP",
        0x0700_0000 => "DIFFPREFIX",
        0x0800_0000 => "GETVLANERR",
        0x0900_0000 => "ISMVLANERR",
        0x0a00_0000 => "NOACTLINK",
        0x0b00_0000 => "NOSRVLINK",
        0x0c00_0000 => "VERSMISMAT",
        0x0d00_0000 => "MAX_DMB",
        0x0e00_0000 => "NOROUTE",
        0x0f00_0000 => "NOINDIRECT",
        0x0999_0000 => "INTERR",
        0x0999_0001 => "ERR_RTOK",
        0x0999_0002 => "ERR_RDYLNK",
        0x0999_0003 => "ERR_REGBUF",
        _ => return format!("0x{code:08x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ueid_rules_and_wire_form() {
        assert!(check_ueid("MESHACCEL-CLUSTER.1").is_ok());
        for bad in ["", "-X", "lower", "A B", &"A".repeat(33)] {
            assert!(check_ueid(bad).is_err(), "{bad}");
        }
        let a = eid_attr("ABC");
        assert_eq!(a.value.len(), EID_LEN + 1);
        assert_eq!(a.as_str().trim_end(), "ABC");
    }

    #[test]
    fn reasons_by_name() {
        assert_eq!(reason_name(0x0301_0000), "PEERNOSMC");
        assert_eq!(reason_name(0x0303_0002), "NOSMCRDEV");
        assert_eq!(reason_name(0x1234_5678), "0x12345678");
    }
}
