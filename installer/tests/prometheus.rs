//! Prometheus itself (Debian's) scrapes a running installer's /metrics, with a scrape config
//! written here; the installer's and the datapath's series are read back through its HTTP
//! API (`/api/v1/query`, `/api/v1/metadata`), as a dashboard reads them. promtool lints the
//! exposition against Prometheus' naming conventions.
mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use meshaccel_common::PodConfig;
use meshaccel_node::bpf;
use meshaccel_node::pins::AttachmentId;
use serde_json::Value;
use support::{free_port, http_get, wait_for, Cgroup, Node};

const JOB: &str = "meshaccel-installer";

/// A Prometheus server of the test's own (port, storage); killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    /// Scrapes `target` every second.
    fn start(dir: &Path, target: u16) -> Self {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: {JOB}\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("spawn prometheus (apt-get install prometheus; see tests/setup)");
        Prometheus { child, port }
    }

    fn api(&self, path_and_query: &str) -> Value {
        let (code, body) = http_get(self.port, path_and_query).unwrap_or((0, String::new()));
        serde_json::from_str(&body)
            .unwrap_or_else(|_| serde_json::json!({"status": "error", "http": code, "body": body}))
    }

    /// The value of an instant query that yields one sample, when it does (this server
    /// scrapes the one installer only).
    fn value(&self, query: &str) -> Option<f64> {
        let r = self.api(&format!("/api/v1/query?query={}", encode(query)));
        let result = r["data"]["result"].as_array()?;
        (result.len() == 1).then(|| result[0]["value"][1].as_str()?.parse().ok())?
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query for a URL.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Request/response over loopback between two non-blocking sockets (listener included:
/// accepted sockets are judged by it) of a process in `cgroup`, the kind of traffic
/// meshaccel redirects: `rounds` exchanges of `size` bytes each way.
const PING_PONG: &str = r#"
import os, select, socket, sys
with open(sys.argv[1] + "/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
rounds, size = int(sys.argv[2]), int(sys.argv[3])
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(1)
l.setblocking(False)
c = socket.socket()
c.setblocking(False)
c.connect_ex(l.getsockname())
select.select([l], [], [], 5)
s, _ = l.accept()
s.setblocking(False)
select.select([], [c], [], 5)
def send(sock, data):
    while data:
        select.select([], [sock], [], 5)
        data = data[sock.send(data):]
def recv(sock, n):
    got = b""
    while len(got) < n:
        select.select([sock], [], [], 5)
        got += sock.recv(n - len(got))
    return got
msg = b"m" * size
for _ in range(rounds):
    send(c, msg)
    assert recv(s, size) == msg
    send(s, msg)
    assert recv(c, size) == msg
"#;

#[test]
fn prometheus_scrapes_the_installer_and_the_datapath_counters() {
    let node = Node::new("prom");
    node.conf_from("flannel.conflist", "10-flannel.conflist");
    let d = node.start();
    d.wait_ready();

    // An accelerated pod with some redirected traffic, so the datapath counters move.
    let cg = Cgroup::new("prom");
    let id = AttachmentId::new("sandbox-prom", "eth0").unwrap();
    bpf::attach_pod(&node.pins, &id, &cg.0, PodConfig::enabled()).unwrap();
    let (rounds, size) = (50u64, 1000u64);
    let out = Command::new("python3")
        .args(["-c", PING_PONG, cg.0.to_str().unwrap(), &rounds.to_string(), &size.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let redirected = d.metric("meshaccel_sockmap_redirected_bytes_total").unwrap();
    assert!(redirected >= rounds * size, "ping-pong not redirected: {redirected} bytes; {:?}", d.get("/metrics"));

    // promtool's lint of the exposition: names, suffixes, HELP and TYPE.
    let (_, exposition) = d.get("/metrics").unwrap();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    let findings = format!("{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    assert!(lint.status.success() && findings.trim().is_empty(), "promtool check metrics: {findings}");

    let prom = Prometheus::start(&node.dir, node.port);
    wait_for("Prometheus scraped the installer", || prom.value(&format!("up{{job=\"{JOB}\"}}")) == Some(1.0));
    assert_eq!(prom.value("meshaccel_installer_ready"), Some(1.0));
    assert_eq!(prom.value("meshaccel_installer_installs_total"), Some(1.0));
    assert_eq!(prom.value("meshaccel_accelerated_pods"), Some(1.0));
    assert_eq!(prom.value("sum(meshaccel_installer_repairs_total)"), Some(0.0));
    assert_eq!(prom.value("meshaccel_sockmap_redirected_bytes_total"), Some(redirected as f64));
    assert!(prom.value("meshaccel_sockmap_msgs_redirected_total").unwrap() >= (2 * rounds) as f64);
    assert!(prom.value("meshaccel_sockmap_sockets_inserted_total").unwrap() >= 2.0);

    // Every family as scraped: TYPE and HELP reached Prometheus, counters end in _total.
    let families: Vec<&str> = exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
    assert!(families.len() > 10, "{exposition}");
    for family in families {
        let (name, kind) = family.split_once(' ').unwrap();
        let mut seen = Value::Null;
        wait_for(&format!("metadata of {name}: {seen}"), || {
            seen = prom.api(&format!("/api/v1/metadata?metric={name}"))["data"][name][0].clone();
            !seen.is_null()
        });
        assert_eq!(seen["type"], kind, "{name}");
        assert!(!seen["help"].as_str().unwrap().is_empty(), "{name} has no HELP");
        assert_eq!(name.ends_with("_total"), kind == "counter", "{name} ({kind})");
    }

    // Drift repaired is counted, and Prometheus sees the counter move.
    fs::remove_file(node.bin.join("meshaccel")).unwrap();
    wait_for("repair scraped", || prom.value(r#"meshaccel_installer_repairs_total{what="binary"}"#) == Some(1.0));
    bpf::detach_pod(&node.pins, &id).unwrap();
}
