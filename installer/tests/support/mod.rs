//! A fake node for the installer binary: temp CNI conf/bin dirs, a private bpffs root and
//! cgroup, and the daemon as a child process. Everything is removed on drop, even when the
//! test panics, and every name is unique so tests can run in parallel.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use meshaccel_node::bpf;
use meshaccel_node::pins::Pins;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{Map, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshaccel-installer");
pub const PLUGIN: &[u8] = b"#!/bin/sh\n# stands in for the meshaccel plugin binary\n";

pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("meshaccel-t-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata").join(name)
}

/// Polls `cond` until it holds; panics with `what` after 15 s (a bound, not a timing test).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Node {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub bin: PathBuf,
    pub state: PathBuf,
    pub plugin: PathBuf,
    pub ready_file: PathBuf,
    pub pins: Pins,
    pub port: u16,
}

impl Node {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        let dir = std::env::temp_dir().join(&name);
        let node = Node {
            conf: dir.join("net.d"),
            bin: dir.join("bin"),
            state: dir.join("state"),
            plugin: dir.join("image/meshaccel"),
            ready_file: dir.join("ready"),
            pins: Pins::new(Path::new("/sys/fs/bpf").join(&name)),
            port: free_port(),
            dir,
        };
        for d in [&node.conf, &node.bin, &node.plugin.parent().unwrap().to_path_buf()] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(&node.plugin, PLUGIN).unwrap();
        node
    }

    /// Puts a testdata file into the conf dir under `name`.
    pub fn conf_from(&self, testdata_file: &str, name: &str) -> PathBuf {
        let p = self.conf.join(name);
        fs::copy(testdata(testdata_file), &p).unwrap();
        p
    }

    pub fn plugin_conf(&self) -> Value {
        serde_json::json!({"stateDir": self.state, "log": {"file": ""}})
    }

    /// The entry the installer must write, built independently from the library.
    pub fn entry(&self) -> Value {
        let mut settings: Map<String, Value> = self.plugin_conf().as_object().unwrap().clone();
        settings.insert("bpffsRoot".into(), self.pins.root().to_str().unwrap().into());
        meshaccel_installer::conflist::entry(&settings).unwrap()
    }

    pub fn command(&self, verb: &str) -> Command {
        let mut c = Command::new(BIN);
        c.arg(verb)
            .arg("--cni-conf-dir")
            .arg(&self.conf)
            .arg("--cni-bin-dirs")
            .arg(&self.bin)
            .arg("--plugin-binary")
            .arg(&self.plugin)
            .arg("--bpffs-root")
            .arg(self.pins.root())
            .arg("--plugin-conf")
            .arg(self.plugin_conf().to_string())
            .arg("--ready-file")
            .arg(&self.ready_file)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--adopt=false")
            .arg("--resync-seconds=3600")
            .env_remove("MESHACCEL_CONFIG")
            .env_remove("MESHACCEL_POD_UID");
        c
    }

    pub fn start(&self) -> Daemon {
        self.start_with(self.command("run"))
    }

    /// Logs go to a file: a pipe nobody reads could fill and block the daemon.
    pub fn start_with(&self, mut cmd: Command) -> Daemon {
        let log = self.dir.join(format!("{}.log", unique("daemon")));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn meshaccel-installer");
        Daemon { child: Some(child), port: self.port, log }
    }

    pub fn run(&self, mut cmd: Command) -> Output {
        cmd.output().expect("run meshaccel-installer")
    }

    pub fn installed_plugin(&self) -> Option<Vec<u8>> {
        fs::read(self.bin.join("meshaccel")).ok()
    }

    pub fn read_list(&self, name: &str) -> Map<String, Value> {
        let bytes = fs::read(self.conf.join(name)).unwrap();
        meshaccel_installer::conflist::parse(&bytes, meshaccel_installer::conflist::Format::List).unwrap()
    }

    pub fn is_chained(&self, name: &str) -> bool {
        fs::read(self.conf.join(name))
            .ok()
            .and_then(|b| meshaccel_installer::conflist::parse(&b, meshaccel_installer::conflist::Format::List).ok())
            .is_some_and(|l| meshaccel_installer::conflist::is_chained(&l, &self.entry()))
    }

    pub fn has_entry(&self, name: &str) -> bool {
        meshaccel_installer::conflist::has_entry(&self.read_list(name))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = bpf::unload_all(&self.pins);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTP/1.0 GET on 127.0.0.1: (status code, body). `None` while nothing listens yet.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// The daemon child; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// An HTTP GET of the daemon: (status code, body). `None` while nothing listens yet.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_ready(&self) {
        wait_for("/readyz 200", || self.get("/readyz").is_some_and(|(c, _)| c == 200));
    }

    /// A sample of /metrics, `name{labels}` exactly.
    pub fn metric(&self, sample: &str) -> Option<u64> {
        let (_, body) = self.get("/metrics")?;
        body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// Sends `sig` and waits for the exit; returns the status and the logs.
    pub fn stop(mut self, sig: Signal) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("meshaccel-installer did not exit on {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.logs())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cgroup v2 directory standing in for a pod's, removed on drop.
pub struct Cgroup(pub PathBuf);

impl Cgroup {
    pub fn new(tag: &str) -> Self {
        let base = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
            "/sys/fs/cgroup/unified"
        } else {
            "/sys/fs/cgroup"
        };
        let p = Path::new(base).join(unique(tag));
        fs::create_dir(&p).unwrap();
        Cgroup(p)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}
