//! Which TCP→SMC conversion a pod gets: `net.smc.tcp2smc` where the kernel has it
//! (Alibaba Cloud Linux 3: per netns, converts every TCP socket created there), else the
//! upstream hook (≥ 6.11) through [`super::fmodret`].
pub use meshaccel_node::conf::smc::Mode;
use std::path::Path;

use anyhow::{bail, Result};

pub const TCP2SMC: &str = "net.smc.tcp2smc";
pub const TCP2SMC_NAME: &str = "tcp2smc";

/// The mode a pod in `netns` gets, or why none can be had.
pub fn resolve(configured: Mode, netns: &Path) -> Result<Mode> {
    let has_tcp2smc = super::netns::run_in(netns, || Ok(Path::new("/proc/sys/net/smc").join(TCP2SMC_NAME).exists()))?;
    pick(configured, has_tcp2smc, super::fmodret::kernel_supports)
}

fn pick(configured: Mode, has_tcp2smc: bool, bpf: impl Fn() -> Result<()>) -> Result<Mode> {
    match configured {
        Mode::Off => bail!("smc.mode is off"),
        Mode::Tcp2smc if has_tcp2smc => Ok(Mode::Tcp2smc),
        Mode::Tcp2smc => bail!("smc.mode tcp2smc: this kernel has no {TCP2SMC} (Alibaba Cloud Linux only)"),
        Mode::Auto if has_tcp2smc => Ok(Mode::Tcp2smc),
        Mode::Auto | Mode::Bpf => match bpf() {
            Ok(()) => Ok(Mode::Bpf),
            Err(e) => bail!(
                "no TCP→SMC conversion on this kernel: no {TCP2SMC} and no {} hook ({e:#})",
                super::fmodret::TARGET
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_tcp2smc_then_bpf() {
        let yes = || Ok(());
        let no = || bail!("no BTF");
        assert_eq!(pick(Mode::Auto, true, yes).unwrap(), Mode::Tcp2smc);
        assert_eq!(pick(Mode::Auto, false, yes).unwrap(), Mode::Bpf);
        assert!(pick(Mode::Auto, false, no).is_err());
        assert_eq!(pick(Mode::Bpf, true, yes).unwrap(), Mode::Bpf);
        assert!(pick(Mode::Tcp2smc, false, yes).is_err());
        assert!(pick(Mode::Off, true, yes).is_err());
    }
}
