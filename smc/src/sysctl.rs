//! `net.smc.*` sysctls of the calling thread's netns (they are per netns; the caller runs
//! inside the pod's). Like the reference `tuning` plugin: only keys under `net.smc.` are
//! accepted, old values are saved for DEL, and keys the kernel does not expose are errors.
pub use meshaccel_node::conf::smc::{sysctl_short_name as short_name, PREFIX};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const DIR: &str = "/proc/sys/net/smc";

fn path(name: &str) -> PathBuf {
    PathBuf::from(DIR).join(name)
}

/// Names the kernel exposes in this netns (empty without SMC).
pub fn available() -> Result<Vec<String>> {
    let dir = match fs::read_dir(DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).context(DIR),
    };
    let mut v: Vec<String> = dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    v.sort();
    Ok(v)
}

pub fn read(name: &str) -> Result<String> {
    Ok(fs::read_to_string(path(name)).with_context(|| format!("read {PREFIX}{name}"))?.trim().to_string())
}

pub fn write(name: &str, value: &str) -> Result<()> {
    fs::write(path(name), value).with_context(|| format!("write {PREFIX}{name}={value}"))
}

/// The kernel prints multi-value sysctls with tabs; compare by whitespace-separated words.
pub fn same(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Sets every key (full `net.smc.x` names) and returns the old values by key, for
/// [`restore`]. Checks all keys against the kernel first, so an unknown key changes
/// nothing; if a write fails midway, what was already written is restored.
pub fn apply(wanted: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    let have = available()?;
    for key in wanted.keys() {
        let name = short_name(key).map_err(anyhow::Error::msg)?;
        if !have.iter().any(|h| h == name) {
            bail!("sysctl {key} does not exist on this kernel (it has: {})", have.join(", "));
        }
    }
    let mut saved = BTreeMap::new();
    for (key, value) in wanted {
        let name = short_name(key).map_err(anyhow::Error::msg)?;
        let old = read(name)?;
        if let Err(e) = write(name, value) {
            let _ = restore(&saved);
            return Err(e);
        }
        saved.insert(key.clone(), old);
    }
    Ok(saved)
}

/// Writes saved values back; keys whose sysctl vanished are skipped.
pub fn restore(saved: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in saved {
        let name = short_name(key).map_err(anyhow::Error::msg)?;
        if path(name).exists() {
            write(name, value)?;
        }
    }
    Ok(())
}

/// Keys whose live value differs from the wanted one, as "key: live != wanted".
pub fn drift(wanted: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (key, value) in wanted {
        let live = read(short_name(key).map_err(anyhow::Error::msg)?)?;
        if !same(&live, value) {
            out.push(format!("{key}: live {live:?} != conf {value:?}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_under_net_smc() {
        assert_eq!(short_name("net.smc.wmem"), Ok("wmem"));
        assert_eq!(short_name("net.smc.limit_smc_hs"), Ok("limit_smc_hs"));
        for bad in ["net.ipv4.tcp_rmem", "net.smc.", "net.smc.../x", "net.smc.a/b", "net.smc.WMEM", "wmem"] {
            assert!(short_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn multi_value_comparison_ignores_whitespace() {
        assert!(same("4096\t16384", "4096 16384"));
        assert!(!same("1", "2"));
    }
}
