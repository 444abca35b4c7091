//! The BPF maps' memory is charged to the memory cgroup of the process that creates them
//! (Linux ≥ 5.11 accounts BPF memory to memcg instead of RLIMIT_MEMLOCK): in a cluster, the
//! installer container. Its manifest's memory limit must hold the load with room to spare;
//! a limit too small must fail the install plainly and leave no half-loaded pins.
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meshaccel_node::bpf;
use serde_yaml::Value;
use support::{unique, Node};

/// A memory cgroup of its own (v2 where the unified hierarchy has the controller, else v1).
struct MemCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemCgroup {
    fn new(limit: u64) -> Self {
        let v2 = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| c.contains("memory"));
        let base = if v2 { "/sys/fs/cgroup" } else { "/sys/fs/cgroup/memory" };
        let dir = Path::new(base).join(unique("mem"));
        fs::create_dir(&dir).unwrap();
        let limit_file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        fs::write(dir.join(limit_file), limit.to_string()).unwrap();
        MemCgroup { dir, v2 }
    }

    /// Runs `cmd` inside the cgroup (the shell moves itself in, then execs the command).
    fn run(&self, cmd: &Command) -> Output {
        let procs = self.dir.join("cgroup.procs");
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(format!("echo $$ > {} && exec \"$@\"", procs.display())).arg("sh").arg(cmd.get_program());
        sh.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh.output().unwrap()
    }

    /// The most this cgroup has been charged, bytes.
    fn peak(&self) -> u64 {
        self.read(if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" })
    }

    /// What it is charged now, bytes.
    fn usage(&self) -> u64 {
        self.read(if self.v2 { "memory.current" } else { "memory.usage_in_bytes" })
    }

    fn read(&self, file: &str) -> u64 {
        fs::read_to_string(self.dir.join(file)).unwrap().trim().parse().unwrap()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `256Mi` → bytes.
fn quantity(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let mult = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other} of {q}"),
    };
    n.parse::<u64>().unwrap() * mult
}

/// The installer container's memory request and limit in manifests/daemonset.yaml.
fn manifest_memory() -> (u64, u64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/daemonset.yaml");
    let ds: Value = serde_yaml::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let containers = ds["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
    let installer = containers.iter().find(|c| c["name"] == "installer").expect("an installer container");
    let res = &installer["resources"];
    let mem = |k: &str| quantity(res[k]["memory"].as_str().unwrap_or_else(|| panic!("{k}.memory")));
    (mem("requests"), mem("limits"))
}

/// Runs `install` in a cgroup limited to `limit`: its output, the peak charge and what is
/// still charged once the installer has exited (the maps, which outlive it in bpffs).
fn install_in(node: &Node, limit: u64) -> (Output, u64, u64) {
    node.conf_from("flannel.conflist", "10-flannel.conflist");
    let cg = MemCgroup::new(limit);
    let out = cg.run(&node.command("install"));
    let (peak, retained) = (cg.peak(), cg.usage());
    // Unloading frees (and uncharges) the maps before the cgroup goes.
    bpf::unload_all(&node.pins).unwrap();
    (out, peak, retained)
}

#[test]
fn the_manifests_memory_limit_holds_the_load_and_a_smaller_one_fails_cleanly() {
    let (request, limit) = manifest_memory();
    let node = Node::new("memcg");
    let (out, peak, retained) = install_in(&node, limit);
    assert!(out.status.success(), "install within the manifest's {limit} B: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "install: peak {} MiB, still charged after exit {} MiB (request {} MiB, limit {} MiB)",
        peak >> 20,
        retained >> 20,
        request >> 20,
        limit >> 20
    );
    assert!(peak < limit * 3 / 4, "an install peaked at {peak} B, too close to the limit {limit} B");
    // The daemon's own few MiB come on top of this for as long as it runs.
    assert!(request >= retained, "the request ({request} B) is below what the maps keep charged ({retained} B)");

    let node = Node::new("memcg-small");
    let (out, _, _) = install_in(&node, 32 << 20);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a load cannot fit in 32 MiB: {err}");
    assert!(err.contains("memory"), "the error should say it is memory: {err}");
    assert!(!bpf::is_loaded(&node.pins), "half-loaded programs left");
    let left: Vec<_> =
        fs::read_dir(node.pins.root()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.iter().all(|p| fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())), "pins left: {left:?}");
}
