//! `meshaccel-oci NAME ROOTFS CONFIG_JSON OUT.tar`: an OCI image archive of one layer, for
//! `ctr images import` (tests/image/build makes the installer image with it).
use std::path::Path;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, rootfs, config, out] = args.as_slice() else {
        bail!("usage: meshaccel-oci NAME ROOTFS CONFIG_JSON OUT.tar");
    };
    let config = serde_json::from_str(config).context("CONFIG_JSON")?;
    meshaccel_tests::oci::archive(name, Path::new(rootfs), config, Path::new(out))
}
