//! Bad input through the CNI protocol: each call gets the spec's error code in a CNI error
//! object on stdout, a non-zero exit, a message that names the problem, and creates nothing
//! (no pin, no record, no file anywhere under the node's bpffs root or run directory; the
//! plugin log may grow).
//!
//! Every case starts from a call that would succeed: a real pod (netns, kubelet cgroup,
//! bridge's prevResult) with one input spoiled, so a missing check shows up as an
//! attachment where there must be none. `valid_call_attaches` proves the unspoiled call
//! does attach.

use meshaccel_tests::cni::{invoke, Invocation, NetworkList, RuntimeConf};
use meshaccel_tests::{binaries, Chain, Pod, TestNode};
use serde_json::{json, Value};

const INVALID_ENV: u32 = 4;
const DECODE: u32 = 6;
const INVALID_CONF: u32 = 7;

/// A node with one bridged pod that meshaccel has not seen yet.
struct Fixture {
    pod: Pod,
    node: TestNode,
}

impl Fixture {
    fn new() -> Self {
        let node = TestNode::new().unwrap();
        let pod = node.pod("bad").chain(Chain::BridgeOnly).start().unwrap();
        Self { pod, node }
    }

    fn rt(&self) -> RuntimeConf {
        self.pod.runtime_conf().clone()
    }

    fn conf(&self) -> Value {
        self.node.meshaccel_conf()
    }

    fn net(&self) -> &NetworkList {
        self.node.network(Chain::Accelerated)
    }

    fn call(&self, command: &str, conf: &Value, rt: &RuntimeConf, prev: Option<&Value>) -> Invocation {
        self.net().call(command, conf, rt, prev).unwrap()
    }

    /// Runs `call`, which must be refused with `code` and an error naming `says`, and
    /// must leave every file as it was.
    fn refused(&self, case: &str, code: u32, says: &str, call: impl FnOnce() -> Invocation) {
        let before = self.node.plugin_footprint();
        call().expect_error(code, says).unwrap_or_else(|e| panic!("{case}: {e:#}"));
        assert_eq!(self.node.plugin_footprint(), before, "{case}: files were created");
    }

    /// ADD, CHECK and DEL with `rt`: all refused the same way.
    fn refused_by_every_command(&self, case: &str, code: u32, says: &str, rt: &RuntimeConf) {
        let prev = self.pod.result();
        for cmd in ["ADD", "CHECK", "DEL"] {
            self.refused(&format!("{cmd} {case}"), code, says, || self.call(cmd, &self.conf(), rt, Some(prev)));
        }
    }

    /// ADD with `conf` refused as an invalid network conf.
    fn conf_refused(&self, case: &str, conf: &Value, says: &str) {
        self.refused(case, INVALID_CONF, says, || self.call("ADD", conf, &self.rt(), Some(self.pod.result())));
    }
}

#[test]
fn valid_call_attaches() {
    let f = Fixture::new();
    let inv = f.call("ADD", &f.conf(), &f.rt(), Some(f.pod.result()));
    assert!(inv.success(), "{inv:?}");
    assert!(f.node.plugin_footprint().iter().any(|p| p.ends_with("sockops")), "{:#?}", f.node.plugin_footprint());
}

#[test]
fn malformed_json_is_a_decode_error() {
    let f = Fixture::new();
    let env = f.rt().env("ADD", &f.net().cni_path);
    for (case, stdin) in [
        ("truncated", &br#"{"cniVersion": "1.0.0", "name": "x", "type": "meshaccel""#[..]),
        ("not json", b"cniVersion=1.0.0"),
        ("empty", b""),
    ] {
        f.refused(case, DECODE, "decode", || invoke(binaries::meshaccel(), &env, stdin).unwrap());
    }
}

#[test]
fn unknown_cni_version_is_incompatible() {
    let f = Fixture::new();
    let net = NetworkList { cni_version: "9.9.9".into(), ..f.net().clone() };
    f.refused("cniVersion 9.9.9", 1, "9.9.9", || net.call("ADD", &f.conf(), &f.rt(), Some(f.pod.result())).unwrap());
}

#[test]
fn add_without_prev_result_is_refused() {
    let f = Fixture::new();
    f.refused("ADD without prevResult", INVALID_CONF, "prevResult", || f.call("ADD", &f.conf(), &f.rt(), None));
}

#[test]
fn hostile_container_ids_are_refused() {
    let f = Fixture::new();
    let long = "a".repeat(300);
    for (cid, says) in
        [("../x", "containerID"), ("a/b", "containerID"), ("..", "containerID"), (&long, "longer than 128")]
    {
        let rt = RuntimeConf { container_id: cid.into(), ..f.rt() };
        f.refused_by_every_command(&format!("container id {cid:.20}"), INVALID_ENV, says, &rt);
    }
}

#[test]
fn hostile_pod_uids_are_refused() {
    let f = Fixture::new();
    // `x;y` ends the UID at `;` and leaves a pair without `=`.
    for (uid, says) in [("../../etc", "K8S_POD_UID"), ("a/b", "K8S_POD_UID"), ("x;y", "CNI_ARGS")] {
        let mut rt = f.rt();
        rt.args.iter_mut().filter(|(k, _)| k == "K8S_POD_UID").for_each(|(_, v)| *v = uid.into());
        f.refused(&format!("K8S_POD_UID {uid}"), INVALID_ENV, says, || {
            f.call("ADD", &f.conf(), &rt, Some(f.pod.result()))
        });
    }
}

#[test]
fn hostile_interface_names_are_refused() {
    let f = Fixture::new();
    for ifname in ["../eth0", "a/b", ".."] {
        let rt = RuntimeConf { ifname: ifname.into(), ..f.rt() };
        f.refused_by_every_command(&format!("ifname {ifname}"), INVALID_ENV, "interface name", &rt);
    }
}

#[test]
fn relative_or_escaping_paths_in_the_conf_are_refused() {
    let f = Fixture::new();
    let run_dir = f.node.log_file().parent().unwrap().to_path_buf();
    let root = f.node.pins().root().to_path_buf();
    let escaping_root = root.join("..").join(format!("{}-escaped", root.file_name().unwrap().to_str().unwrap()));
    let relative = format!("meshaccel-relative-{}", std::process::id());
    for (key, value) in [
        ("bpffsRoot", json!(relative)),
        ("bpffsRoot", json!(escaping_root)),
        ("stateDir", json!(relative)),
        ("stateDir", json!(run_dir.join("state/../escaped"))),
        ("cgroupRoot", json!("sys/fs/cgroup")),
    ] {
        let mut conf = f.conf();
        conf[key] = value.clone();
        f.conf_refused(&format!("{key} {value}"), &conf, key);
    }
    let mut conf = f.conf();
    conf["log"]["file"] = json!("meshaccel.log");
    f.conf_refused("relative log file", &conf, "log.file");
    // Where an unchecked path would have led.
    for p in [escaping_root, std::env::current_dir().unwrap().join(&relative)] {
        assert!(!p.exists(), "{} was created", p.display());
    }
}

#[test]
fn typos_inside_meshaccel_objects_are_refused() {
    let f = Fixture::new();
    // The error names the unknown key (serde lists the known ones; it does not say in
    // which object, so the key is what an operator searches the conf for).
    for (object, value, says) in [
        ("sockmap", json!({"enable": true}), "`enable`"),
        ("log", json!({"lvl": "debug"}), "`lvl`"),
        ("failurePolicy", json!("sometimes"), "sometimes"),
        ("log", json!({"level": "loud"}), "loud"),
    ] {
        let mut conf = f.conf();
        conf[object] = value.clone();
        f.conf_refused(&format!("{object}: {value}"), &conf, says);
    }
}

#[test]
fn invalid_annotation_values_are_refused() {
    let f = Fixture::new();
    for (key, value) in [("meshaccel.io/sockmap", "yes"), ("meshaccel.io/smc", "1"), ("meshaccel.io/sockmap", "")] {
        let mut rt = f.rt();
        rt.capability_args.insert("io.kubernetes.cri.pod-annotations".into(), json!({ key: value }));
        f.refused(&format!("{key}={value:?}"), INVALID_CONF, key, || {
            f.call("ADD", &f.conf(), &rt, Some(f.pod.result()))
        });
    }
}

#[test]
fn unknown_cni_command_is_refused() {
    let f = Fixture::new();
    let stdin = f.net().plugin_stdin(&f.conf(), &f.rt(), Some(f.pod.result())).to_string();
    f.refused("CNI_COMMAND=FROB", INVALID_ENV, "FROB", || {
        invoke(binaries::meshaccel(), &f.rt().env("FROB", &f.net().cni_path), stdin.as_bytes()).unwrap()
    });
}

/// Without `CNI_COMMAND` meshaccel is a command-line tool, not a plugin: with no verb it
/// prints its usage and fails, and touches nothing. An empty `CNI_COMMAND` is what the Go
/// reference plugins treat as a request for their "about" text: stderr, exit 0.
#[test]
fn missing_cni_command_is_not_a_cni_call() {
    let f = Fixture::new();
    let stdin = f.net().plugin_stdin(&f.conf(), &f.rt(), Some(f.pod.result())).to_string();
    let before = f.node.plugin_footprint();
    let mut env = f.rt().env("ADD", &f.net().cni_path);
    env.retain(|(k, _)| k != "CNI_COMMAND");
    let inv = invoke(binaries::meshaccel(), &env, stdin.as_bytes()).unwrap();
    assert!(!inv.success(), "{inv:?}");
    assert!(inv.stderr.contains("CNI_COMMAND"), "usage should say how a runtime runs it: {}", inv.stderr);
    assert_eq!(inv.stdout, "");

    env.push(("CNI_COMMAND".into(), String::new()));
    let inv = invoke(binaries::meshaccel(), &env, stdin.as_bytes()).unwrap();
    assert!(inv.success(), "{inv:?}");
    assert_eq!(inv.stdout, "");
    assert!(inv.stderr.contains("CNI protocol versions supported"), "{}", inv.stderr);
    assert_eq!(f.node.plugin_footprint(), before, "files were created");
}
