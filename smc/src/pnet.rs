//! The SMC PNET table over generic netlink (family `SMC_PNETID`), the native form of
//! `smc_pnet`: which Ethernet interfaces and RDMA device ports share a physical network.
//!
//! Kernel facts (Linux 6.12): ETH entries live per netns; IB-device entries are accepted
//! only in the initial netns and are global (elsewhere the kernel answers EEXIST and
//! ignores them); DEL removes a PNET ID's entries of the caller's netns only, and touches
//! IB devices only when called in the initial netns.
use super::genl::{find, Attr, Family, Genl, GenlError};
pub use meshaccel_node::conf::smc::{check_pnetid, MAX_PNETID_LEN};

#[derive(Clone, Debug)]
pub struct Pnet;

impl Family for Pnet {
    const NAME: &'static str = "SMC_PNETID";
    const VERSION: u8 = 1;
}

const CMD_GET: u8 = 1;
const CMD_ADD: u8 = 2;
const CMD_DEL: u8 = 3;

const ATTR_NAME: u16 = 1;
const ATTR_ETHNAME: u16 = 2;
const ATTR_IBNAME: u16 = 3;
const ATTR_IBPORT: u16 = 4;

/// A PNET ID derived from an RDMA device name (`erdma_0` → `ERDMA0`), for confs that set
/// `rdmaDevice` but no `pnetId`.
pub fn pnetid_from_device(dev: &str) -> String {
    dev.bytes().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_uppercase() as char).take(MAX_PNETID_LEN).collect()
}

/// One row of the caller's netns table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub pnetid: String,
    pub eth: Option<String>,
    pub ib: Option<(String, u8)>,
}

pub struct PnetTable(Genl<Pnet>);

impl PnetTable {
    /// Opens the table of the caller's netns.
    pub fn open() -> Result<Self, GenlError> {
        Genl::open().map(Self)
    }

    pub fn add_eth(&mut self, pnetid: &str, ifname: &str) -> Result<(), GenlError> {
        self.0.call(CMD_ADD, vec![Attr::string(ATTR_NAME, pnetid), Attr::string(ATTR_ETHNAME, ifname)])
    }

    pub fn add_ib(&mut self, pnetid: &str, dev: &str, port: u8) -> Result<(), GenlError> {
        self.0.call(
            CMD_ADD,
            vec![Attr::string(ATTR_NAME, pnetid), Attr::string(ATTR_IBNAME, dev), Attr::u8(ATTR_IBPORT, port)],
        )
    }

    /// Removes every entry of `pnetid` in the caller's netns; ENOENT (nothing to remove)
    /// is success.
    pub fn del(&mut self, pnetid: &str) -> Result<bool, GenlError> {
        match self.0.call(CMD_DEL, vec![Attr::string(ATTR_NAME, pnetid)]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn list(&mut self) -> Result<Vec<Entry>, GenlError> {
        Ok(self
            .0
            .dump(CMD_GET, vec![])?
            .into_iter()
            .map(|m| {
                let a = &m.attrs;
                // The kernel fills the half an entry does not have with "n/a" (and port 255).
                let name = |k| find(a, k).map(Attr::as_str).filter(|s| !s.is_empty() && s != "n/a");
                Entry {
                    pnetid: find(a, ATTR_NAME).map(Attr::as_str).unwrap_or_default().trim_end().to_string(),
                    eth: name(ATTR_ETHNAME),
                    ib: name(ATTR_IBNAME).map(|d| (d, find(a, ATTR_IBPORT).and_then(Attr::as_u64).unwrap_or(1) as u8)),
                }
            })
            .collect())
    }

    /// The PNET ID the table gives an Ethernet interface, if any.
    pub fn of_eth(&mut self, ifname: &str) -> Result<Option<String>, GenlError> {
        Ok(self.list()?.into_iter().find(|e| e.eth.as_deref() == Some(ifname)).map(|e| e.pnetid))
    }

    /// The PNET ID the table gives an RDMA device port, if any.
    pub fn of_ib(&mut self, dev: &str, port: u8) -> Result<Option<String>, GenlError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|e| e.ib.as_ref().is_some_and(|(d, p)| d == dev && *p == port))
            .map(|e| e.pnetid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pnetid_syntax_is_the_kernels() {
        for ok in ["A", "NET1", "ERDMA0", "ABCDEFGHIJKLMNOP"] {
            assert!(check_pnetid(ok).is_ok(), "{ok}");
        }
        for bad in ["", "net1", "NET-1", "ABCDEFGHIJKLMNOPQ", "NET 1", "ÄB"] {
            assert!(check_pnetid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_pnetids_are_valid() {
        assert_eq!(pnetid_from_device("erdma_0"), "ERDMA0");
        assert_eq!(pnetid_from_device("rxe0"), "RXE0");
        let long = pnetid_from_device("mlx5_bond_0_with_a_long_name");
        assert!(check_pnetid(&long).is_ok(), "{long}");
    }
}
