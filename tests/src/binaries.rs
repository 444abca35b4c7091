//! Where the binaries under test live: the cargo profile directory of the running test.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>`, from `target/<profile>/deps/<test>` (integration tests) or
/// `target/<profile>/<bin>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable has a directory");
    if dir.ends_with("deps") { dir.parent().unwrap() } else { dir }.to_path_buf()
}

/// The plugin binary. `MESHACCEL_BIN` overrides. Otherwise it is built once per test process
/// (a no-op when fresh): `cargo test -p meshaccel-tests` builds no other package's binaries,
/// and a stale plugin would be tested silently.
pub fn meshaccel() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("MESHACCEL_BIN", "meshaccel-cni", "meshaccel"))
}

/// The installer daemon (`MESHACCEL_INSTALLER_BIN` overrides), built like [`meshaccel`].
pub fn installer() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built("MESHACCEL_INSTALLER_BIN", "meshaccel-installer", "meshaccel-installer"))
}

fn built(env_override: &str, package: &str, bin: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return p.into();
    }
    let (target, profile) = cargo_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--profile", &profile])
        .arg("--target-dir")
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {bin} failed ({env_override} selects a prebuilt one)");
    profile_dir().join(bin)
}

/// The running test's cargo target dir and profile, to build more of the workspace alike.
pub fn cargo_target() -> (PathBuf, String) {
    let profile = profile_dir();
    let name = profile.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let name = if name == "debug" { "dev" } else { name }.to_string();
    (profile.parent().expect("target dir").to_path_buf(), name)
}

/// The traffic/exec helper of this package (`MESHACCEL_TESTKIT` overrides).
pub fn testkit() -> PathBuf {
    std::env::var_os("MESHACCEL_TESTKIT").map_or_else(|| profile_dir().join("meshaccel-testkit"), PathBuf::from)
}
