//! A CNI runtime in the manner of libcni: invokes plugin binaries and runs conflists.
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// What one plugin execution produced.
#[derive(Debug)]
pub struct Invocation {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit: what a runtime waits for this plugin.
    pub elapsed: Duration,
    /// Peak resident memory of the plugin process (`ru_maxrss` of wait4), KiB.
    pub max_rss_kib: u64,
}

/// One plugin's run within a list.
#[derive(Clone, Debug)]
pub struct Timing {
    /// The plugin's type.
    pub plugin: String,
    pub elapsed: Duration,
    pub max_rss_kib: u64,
}

/// Each plugin of a list, in the order they ran.
pub type Timings = Vec<Timing>;

impl Timing {
    fn of(plugin: &Value, inv: &Invocation) -> Self {
        Timing {
            plugin: plugin["type"].as_str().unwrap_or_default().to_string(),
            elapsed: inv.elapsed,
            max_rss_kib: inv.max_rss_kib,
        }
    }
}

impl Invocation {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as JSON: the result on success, the CNI error object on failure.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("plugin stdout is not JSON: {:?}", self.stdout))
    }

    /// The CNI error object a failed call printed; an error if the call succeeded.
    pub fn error(&self) -> Result<CniError> {
        if self.success() {
            bail!("the plugin succeeded: stdout {:?} stderr {:?}", self.stdout, self.stderr);
        }
        serde_json::from_str(&self.stdout).with_context(|| {
            format!("stdout of a failed plugin is not a CNI error: {:?} (stderr {:?})", self.stdout, self.stderr)
        })
    }

    /// The error of a call that had to fail with `code` and a message saying `says` (in
    /// `msg` or `details`).
    pub fn expect_error(&self, code: u32, says: &str) -> Result<CniError> {
        let e = self.error()?;
        if e.code != code || e.msg.is_empty() || !format!("{}: {}", e.msg, e.details).contains(says) {
            bail!("expected code {code} saying {says:?}, got {e:?}");
        }
        Ok(e)
    }
}

/// An ADD result without the empty `dns: {}` Go plugins print: rscni (so meshaccel) and
/// containerd drop it, and it carries nothing, so results are compared without it.
pub fn without_empty_dns(result: &Value) -> Value {
    let mut v = result.clone();
    if v.get("dns").is_some_and(|d| d == &json!({})) {
        v.as_object_mut().expect("result object").remove("dns");
    }
    v
}

/// The spec's error result.
#[derive(Clone, Debug, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one plugin binary with exactly the given `CNI_*` variables (inherited ones are
/// removed) and `stdin`. A plugin still running after a minute is killed and reported.
pub fn invoke(plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Invocation> {
    let mut cmd = Command::new(plugin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let mut child = cmd
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", plugin.display()))?;
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || input.write_all(&stdin));
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let Some((status, max_rss_kib)) = wait_within(&mut child, PLUGIN_TIMEOUT)? else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{} did not finish within {PLUGIN_TIMEOUT:?}", plugin.display());
    };
    let elapsed = started.elapsed();
    let _ = writer.join(); // EPIPE when the plugin does not read stdin is its business
    Ok(Invocation { status, stdout: out.join().unwrap(), stderr: err.join().unwrap(), elapsed, max_rss_kib })
}

/// Reaps an exited child with wait4, for its peak RSS (KiB) next to its status.
fn reap(child: &Child) -> Result<(ExitStatus, u64)> {
    use std::os::unix::process::ExitStatusExt;
    // SAFETY: rusage is plain old data, valid when zeroed.
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: waits for our own child; status and usage are ours to write.
        let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
        if r >= 0 {
            return Ok((ExitStatus::from_raw(status), usage.ru_maxrss as u64));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
}

/// Waits for `child` to exit, at most `timeout` (`None` then), and reaps it (see [`reap`]).
/// poll() on a pidfd wakes at the exit itself, so `elapsed` is not rounded up to a polling
/// period: the benchmark times plugins with it.
fn wait_within(child: &mut Child, timeout: Duration) -> Result<Option<(ExitStatus, u64)>> {
    // SAFETY: no pointers; a non-negative result is a new fd that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: see above.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
    loop {
        match poll(&mut [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)], ms) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(reap(child)?)),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll pidfd"),
        }
    }
}

/// The per-attachment half of a CNI call (libcni's `RuntimeConf`).
#[derive(Clone, Debug, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    /// Empty for the DEL a runtime sends after the netns is gone.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs, in the order given.
    pub args: Vec<(String, String)>,
    /// Values for plugins declaring the capability, e.g. `io.kubernetes.cri.pod-annotations`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    pub fn env(&self, command: &str, cni_path: &[PathBuf]) -> Vec<(String, String)> {
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path: Vec<String> = cni_path.iter().map(|p| p.display().to_string()).collect();
        [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", args.join(";")),
            ("CNI_PATH", path.join(":")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A conflist and where its plugins are found.
#[derive(Clone, Debug)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    pub cni_path: Vec<PathBuf>,
}

impl NetworkList {
    /// The stdin of one plugin, built as libcni builds it: `name` and `cniVersion` of the
    /// list, `prevResult`, and `runtimeConfig` with the capabilities the plugin declares.
    pub fn plugin_stdin(&self, plugin: &Value, rt: &RuntimeConf, prev: Option<&Value>) -> Value {
        let mut conf = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("name".into(), json!(self.name));
        conf.insert("cniVersion".into(), json!(self.cni_version));
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let runtime: Map<String, Value> = plugin["capabilities"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .filter_map(|(cap, _)| Some((cap.clone(), rt.capability_args.get(cap)?.clone())))
            .collect();
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }

    fn binary(&self, plugin: &Value) -> Result<PathBuf> {
        let ty = plugin["type"].as_str().context("plugin conf without type")?;
        self.cni_path
            .iter()
            .map(|d| d.join(ty))
            .find(|p| p.exists())
            .with_context(|| format!("plugin {ty} not found in {:?}", self.cni_path))
    }

    /// Runs one plugin and returns what it did, success or not.
    pub fn call(&self, command: &str, plugin: &Value, rt: &RuntimeConf, prev: Option<&Value>) -> Result<Invocation> {
        let stdin = self.plugin_stdin(plugin, rt, prev);
        invoke(&self.binary(plugin)?, &rt.env(command, &self.cni_path), stdin.to_string().as_bytes())
    }

    /// Runs one plugin; a failure carries the plugin's error object and stderr.
    pub fn exec(&self, command: &str, plugin: &Value, rt: &RuntimeConf, prev: Option<&Value>) -> Result<Invocation> {
        let inv = self.call(command, plugin, rt, prev)?;
        if !inv.success() {
            bail!(
                "{command} of plugin {} failed ({}): stdout {} stderr {}",
                plugin["type"],
                inv.status,
                inv.stdout.trim(),
                inv.stderr.trim()
            );
        }
        Ok(inv)
    }

    /// ADD through the whole list; returns the final result (what libcni caches).
    pub fn add(&self, rt: &RuntimeConf) -> Result<Value> {
        Ok(self.add_timed(rt)?.0)
    }

    /// [`Self::add`], also returning how long each plugin took.
    pub fn add_timed(&self, rt: &RuntimeConf) -> Result<(Value, Timings)> {
        let (mut prev, mut timings): (Option<Value>, Timings) = (None, vec![]);
        for plugin in &self.plugins {
            let inv = self.exec("ADD", plugin, rt, prev.as_ref())?;
            timings.push(Timing::of(plugin, &inv));
            prev = Some(inv.json()?);
        }
        Ok((prev.context("empty plugin list")?, timings))
    }

    /// CHECK in list order with the cached result.
    pub fn check(&self, rt: &RuntimeConf, cached: &Value) -> Result<()> {
        for plugin in &self.plugins {
            self.exec("CHECK", plugin, rt, Some(cached))?;
        }
        Ok(())
    }

    /// DEL in reverse order, every plugin getting the cached result (if any) as prevResult;
    /// like libcni, the first failure ends it.
    pub fn del(&self, rt: &RuntimeConf, cached: Option<&Value>) -> Result<()> {
        self.del_timed(rt, cached).map(drop)
    }

    /// [`Self::del`], also returning how long each plugin took.
    pub fn del_timed(&self, rt: &RuntimeConf, cached: Option<&Value>) -> Result<Timings> {
        let mut timings = vec![];
        for plugin in self.plugins.iter().rev() {
            let inv = self.exec("DEL", plugin, rt, cached)?;
            timings.push(Timing::of(plugin, &inv));
        }
        Ok(timings)
    }
}
