//! The installer image (tests/image/build), imported into containerd: what the manifest runs.
use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;
use meshaccel_node::cri::api;
use meshaccel_tests::containerd::{images, Containerd};
use meshaccel_tests::manifests::Manifests;
use meshaccel_tests::oci;

/// Runs `cmd` in the image's root filesystem (chroot: its own loader and libraries only).
fn in_image(rootfs: &Path, cmd: &[&str]) -> Output {
    Command::new("/usr/sbin/chroot").arg(rootfs).args(cmd).env_clear().output().unwrap()
}

#[test]
fn the_image_is_built_here_and_is_the_one_the_manifest_runs() -> Result<()> {
    let manifests = Manifests::load()?;
    let node = Containerd::start()?;
    let archive = images::import_installer(&node)?;

    // Every container's image reference in the manifest is the one the script tagged.
    let ds = manifests.one("DaemonSet", None)?;
    for c in ds["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
        let image = manifests.image(c)?;
        let mut is = node.cri().images();
        let spec = api::ImageSpec { image: image.clone(), ..Default::default() };
        let status =
            node.cri().block_on(is.image_status(api::ImageStatusRequest { image: Some(spec), verbose: false }));
        let status = status?.into_inner().image;
        assert!(
            status.is_some(),
            "{image} ({}, manifests/daemonset.yaml) is not what tests/image/build tagged",
            c["name"]
        );
        let command = c["command"][0].as_str().unwrap();
        let rootfs = node.dir().join("installer-rootfs");
        if !rootfs.exists() {
            let config = oci::unpack(&archive, &rootfs)?;
            assert_eq!(config["Entrypoint"][0], "/usr/local/bin/meshaccel-installer", "{config}");
        }
        assert!(rootfs.join(command.trim_start_matches('/')).is_file(), "{command} is not in the image");
    }

    // The libraries the binaries link, and those the responder dlopens, are in the image:
    // with no RDMA device here it gets as far as the RDMA CM.
    let rootfs = node.dir().join("installer-rootfs");
    let out = in_image(&rootfs, &["/usr/local/bin/meshaccel-installer", "config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = in_image(&rootfs, &["/opt/meshaccel/bin/meshaccel", "rdma-responder", "--listen", "127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rdma_create_event_channel") && !err.contains("not loadable"), "{err}");
    Ok(())
}
