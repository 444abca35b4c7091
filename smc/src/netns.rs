//! Running a closure inside another network namespace: on a fresh thread, so the CNI
//! process's own thread never changes netns (setns(CLONE_NEWNET) is per thread; sockets
//! and `/proc/sys/net` opened there belong to the target netns).
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};

pub fn run_in<T, F>(netns: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = File::open(netns).with_context(|| format!("open netns {}", netns.display()))?;
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns {} panicked", netns.display()))?
}

/// The netns cookie (`SO_NETNS_COOKIE`, Linux ≥ 5.14) of the calling thread's netns: a
/// 64-bit id never reused while the node runs, unlike the nsfs inode number.
pub fn current_cookie() -> Result<u64> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    /// asm-generic/socket.h (x86, arm, riscv; not mips/sparc/parisc).
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // Unbound UDP: works with lo down, and is not a TCP socket our fmod_ret program sees.
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .context("socket for SO_NETNS_COOKIE")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the length given.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("getsockopt SO_NETNS_COOKIE (needs Linux >= 5.14)");
    }
    Ok(cookie)
}
