//! The loader against the real kernel: a private bpffs root and a private cgroup per test.
use std::fs;
use std::path::PathBuf;

use meshaccel_common::{Counter, PodConfig};
use meshaccel_node::bpf;
use meshaccel_node::pins::{AttachmentId, Pins};

/// A uniquely named directory removed on drop, even when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &str, tag: &str) -> Self {
        let p = PathBuf::from(base).join(format!("meshaccel-t-{tag}-{}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

fn cgroup2_base() -> &'static str {
    if PathBuf::from("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    }
}

struct Loaded(Pins);
impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = bpf::unload_all(&self.0);
    }
}

#[test]
fn loads_once_attaches_per_pod_and_unloads_completely() {
    let pins = Pins::new(format!("/sys/fs/bpf/meshaccel-t-loader-{}", std::process::id()));
    let loaded = Loaded(pins.clone());
    let cg = Scratch::new(cgroup2_base(), "loader");

    assert!(bpf::ensure_loaded(&pins).unwrap(), "first call loads");
    assert!(!bpf::ensure_loaded(&pins).unwrap(), "second call finds the pins");
    assert!(bpf::is_loaded(&pins));

    let id = AttachmentId::new("c0ffee", "eth0").unwrap();
    let cfg = PodConfig::enabled();
    let cgid = bpf::attach_pod(&pins, &id, &cg.0, cfg).unwrap();
    let link = bpf::pod_link(&pins, &id).unwrap().expect("link pinned");
    assert_eq!(link.cgroup_id, cgid);
    assert_eq!(link.prog_id, bpf::sockops_prog_id(&pins).unwrap());
    assert_eq!(bpf::read_pod_config(&pins, cgid).unwrap(), cfg);
    assert_eq!(bpf::list_pods(&pins).unwrap(), vec![id.clone()]);

    // Re-attaching the same attachment replaces the link rather than stacking a second one.
    bpf::attach_pod(&pins, &id, &cg.0, cfg).unwrap();
    assert_eq!(bpf::list_pods(&pins).unwrap().len(), 1);

    let counters = bpf::read_counters(&pins).unwrap();
    assert_eq!(counters.len(), Counter::ALL.len());

    assert!(bpf::detach_pod(&pins, &id).unwrap());
    assert!(!bpf::detach_pod(&pins, &id).unwrap(), "second detach finds nothing");
    assert!(bpf::pod_link(&pins, &id).unwrap().is_none());

    // Others pin under the root too (the SMC conversion pins under smc/): all of it goes.
    let other = pins.root().join("smc");
    fs::create_dir_all(&other).unwrap();
    aya::maps::MapData::from_pin(pins.map(meshaccel_common::names::MAP_NODE))
        .unwrap()
        .pin(other.join("NODE_COPY"))
        .unwrap();
    drop(loaded);
    assert!(!pins.root().exists(), "unload removes the whole root");
}

#[test]
fn refuses_a_root_outside_bpffs() {
    let dir = Scratch::new("/tmp", "notbpffs");
    let err = bpf::ensure_loaded(&Pins::new(dir.0.join("root"))).unwrap_err();
    let _ = fs::remove_dir(dir.0.join("root"));
    assert!(format!("{err:#}").contains("not on a bpf filesystem"), "{err:#}");
}
