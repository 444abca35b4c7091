//! SMC requested on a kernel without SMC (the development and CI kernels): the plugin
//! follows failurePolicy — open: the pod keeps plain TCP (prevResult passed through,
//! nothing recorded); closed: CNI error 100 — and bad SMC input is a conf error (7)
//! whatever the node. Real netns, the real plugin binary, the CNI protocol.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// A named netns, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> Self {
        let name = format!("masmc-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        Self(name)
    }
    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn prev_result() -> Value {
    json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "x"}],
           "ips": [{"address": "10.9.0.2/24", "interface": 0}]})
}

fn conf(state: &Path, smc: Value, policy: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "smcnet", "type": "meshaccel",
        "sockmap": {"enabled": false},
        "bpffsRoot": format!("/sys/fs/bpf/meshaccel-smctest-{}", std::process::id()),
        "stateDir": state, "log": {"file": ""}, "failurePolicy": policy,
        "smc": smc, "prevResult": prev_result(),
    })
}

/// Runs the plugin; returns (exit ok, stdout JSON or Null, stderr).
fn cni(cmd: &str, netns: &NetNs, conf: &Value) -> (bool, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshaccel"))
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", format!("smctest{}", std::process::id()))
        .env("CNI_NETNS", netns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=0a1b2c3d-0000-4000-8000-00000000beef")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), stdout, String::from_utf8_lossy(&out.stderr).into())
}

fn no_smc_kernel() -> bool {
    !Path::new("/proc/sys/net/smc").exists()
}

#[test]
fn open_policy_keeps_plain_tcp_and_records_nothing() {
    if !no_smc_kernel() {
        eprintln!("skipped: this kernel has SMC (the VM tests cover it)");
        return;
    }
    let ns = NetNs::new("open");
    let state = TempDir(std::env::temp_dir().join(format!("masmc-open-{}", std::process::id())));
    let c = conf(&state.0, json!({"enabled": true, "sysctls": {"net.smc.wmem": 262144}}), "open");
    let (ok, out, err) = cni("ADD", &ns, &c);
    assert!(ok, "ADD failed: {out} {err}");
    assert_eq!(out["ips"], prev_result()["ips"], "prevResult must pass through");
    assert!(err.contains("SMC not set up") && err.contains("SMC_GEN_NETLINK"), "log should say why: {err}");
    assert!(!state.0.join("smc").exists() || std::fs::read_dir(state.0.join("smc")).unwrap().next().is_none());
    let (ok, _, err) = cni("CHECK", &ns, &c);
    assert!(ok, "CHECK after an open fallback: {err}");
    for _ in 0..2 {
        let (ok, _, err) = cni("DEL", &ns, &c);
        assert!(ok, "DEL: {err}");
    }
}

#[test]
fn closed_policy_fails_add_with_code_100() {
    if !no_smc_kernel() {
        return;
    }
    let ns = NetNs::new("closed");
    let state = TempDir(std::env::temp_dir().join(format!("masmc-closed-{}", std::process::id())));
    let (ok, out, _) = cni("ADD", &ns, &conf(&state.0, json!({"enabled": true}), "closed"));
    assert!(!ok);
    assert_eq!(out["code"], 100, "{out}");
    // The pod annotation turns SMC off: ADD passes whatever the kernel.
    let mut c = conf(&state.0, json!({"enabled": true}), "closed");
    c["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {"meshaccel.io/smc": "false"}});
    let (ok, out, err) = cni("ADD", &ns, &c);
    assert!(ok, "{out} {err}");
}

#[test]
fn bad_smc_input_is_a_conf_error_on_any_node() {
    let ns = NetNs::new("bad");
    let state = TempDir(std::env::temp_dir().join(format!("masmc-bad-{}", std::process::id())));
    for smc in [
        json!({"enabled": true, "pnetId": "net-1"}),
        json!({"enabled": true, "pnetId": "ABCDEFGHIJKLMNOPQ"}),
        json!({"enabled": true, "rdmaDevice": "../x"}),
        json!({"enabled": true, "sysctls": {"net.ipv4.tcp_rmem": "1"}}),
        json!({"enabled": true, "sysctls": {"net.smc.wmem": [1]}}),
        json!({"enabled": true, "mode": "sometimes"}),
        json!({"enabled": true, "typo": 1}),
    ] {
        let (ok, out, _) = cni("ADD", &ns, &conf(&state.0, smc.clone(), "open"));
        assert!(!ok, "{smc} accepted");
        assert_eq!(out["code"], 7, "{smc}: {out}");
    }
    assert!(!state.0.exists(), "a rejected ADD must leave nothing");
}
