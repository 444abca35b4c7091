//! Names and subnets no other test uses at the same time, in this process or in another one
//! (cargo runs test binaries one after another, but nextest and humans run them in parallel).
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// A short tag, unique among live processes: `<pid hex>x<counter>`. Fits an interface name
/// with a 3-character prefix (≤ 15 bytes).
pub fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{:x}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

const CLAIMS_DIR: &str = "/run/meshaccel-tests/subnets";
/// 10.200.0.0/24 … 10.255.255.0/24.
const SLOTS: u32 = 56 * 256;

/// A /24 claimed through a file holding the owner's pid; released on drop. Claims of dead
/// processes are taken over, so a killed test run leaks nothing that blocks the next one.
#[derive(Debug)]
pub struct Subnet {
    slot: u32,
}

impl Subnet {
    pub fn claim(tag: &str) -> Result<Self> {
        fs::create_dir_all(CLAIMS_DIR).with_context(|| format!("create {CLAIMS_DIR}"))?;
        let lock = File::open(CLAIMS_DIR)?;
        // SAFETY: flock on an fd we own; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error()).context("flock subnet claims");
        }
        let start = tag.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into())) % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let file = PathBuf::from(CLAIMS_DIR).join(slot.to_string());
            let owner_alive = fs::read_to_string(&file)
                .ok()
                .is_some_and(|pid| PathBuf::from(format!("/proc/{}", pid.trim())).exists());
            if !owner_alive {
                fs::write(&file, std::process::id().to_string())?;
                return Ok(Self { slot });
            }
        }
        bail!("all {SLOTS} test subnets are claimed by live processes")
    }

    /// The network address, e.g. 10.201.7.0.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200 + (self.slot / 256) as u8, (self.slot % 256) as u8, 0)
    }

    pub fn cidr(&self) -> String {
        format!("{}/24", self.network())
    }

    /// The IPv6 twin of the /24, for dual-stack nodes: `fd00:6d61:<slot>::/64` (ULA).
    pub fn cidr6(&self) -> String {
        format!("fd00:6d61:{:x}::/64", self.slot)
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        let _ = fs::remove_file(PathBuf::from(CLAIMS_DIR).join(self.slot.to_string()));
    }
}
