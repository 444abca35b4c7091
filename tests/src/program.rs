//! Programs other than the testkit (Debian's, or the scripts in `tests/programs/`) run inside a
//! pod exactly as the testkit is (`Pod::command`: the pod's netns, its container cgroup, the
//! host's mount namespace), always with a deadline: how they ended and what they printed, for
//! comparing one run with another. A program still running at its deadline, or when its
//! [`Running`] is dropped (a failing test), is killed; whatever it forked dies with the pod's
//! cgroup.
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::pod::Pod;
use crate::run;

/// How a program ended and what it printed.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Outcome {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A program started in a pod; killed on drop.
pub struct Running {
    label: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Running {
    /// Starts `program args…` in `pod`, its stdin from `stdin` (else `/dev/null`).
    pub fn spawn(pod: &Pod, program: &str, args: &[&str], stdin: Option<&Path>) -> Result<Self> {
        let label = format!("{}: {program} {}", pod.name(), args.join(" "));
        let mut cmd = pod.command(Path::new(program), args)?;
        let input = match stdin {
            Some(p) => Stdio::from(File::open(p).with_context(|| format!("open {}", p.display()))?),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {label}"))?;
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            drain(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            drain(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Ok(Self { label, child, stdout, stderr, readers })
    }

    fn so_far(&self) -> Outcome {
        Outcome {
            code: None,
            signal: None,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned(),
        }
    }

    /// Waits until something listens on `port` in `pod`'s netns (`ss`); fails early, with
    /// its output, if the program exits first.
    pub fn wait_listening(&mut self, pod: &Pod, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let net = format!("--net={}", pod.netns_path().display());
        let filter = format!("sport = :{port}");
        loop {
            if let Some(status) = self.child.try_wait()? {
                let o = self.so_far();
                bail!(
                    "{}: exited ({status}) before listening; stdout: {:?}; stderr: {}",
                    self.label,
                    tail(&o.stdout_text()),
                    tail(&o.stderr)
                );
            }
            if !run("nsenter", &[&net, "--", "ss", "-Hltn", &filter])?.trim().is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: not listening on {port} after {timeout:?}; stderr: {}",
                    self.label,
                    tail(&self.so_far().stderr)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the program to exit by itself; past `timeout` it is killed and this fails,
    /// quoting what it printed.
    pub fn wait(mut self, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let o = self.so_far();
                bail!(
                    "{}: still running after {timeout:?}, killed; stdout: {:?}; stderr: {}",
                    self.label,
                    tail(&o.stdout_text()),
                    tail(&o.stderr)
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // The pipes close when the program (and anything it forked that kept them) is gone.
        while !self.readers.iter().all(|r| r.is_finished()) {
            if Instant::now() >= deadline {
                bail!("{}: exited ({status}) but its output stayed open past {timeout:?}", self.label);
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(Outcome { code: status.code(), signal: status.signal(), ..self.so_far() })
    }

    /// Asks the program to stop (SIGTERM), as a service manager would, then [`Self::wait`]s.
    pub fn stop(self, timeout: Duration) -> Result<Outcome> {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(timeout)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last 2000 characters: enough of a program's output for a failure message.
fn tail(s: &str) -> &str {
    let start = s.char_indices().rev().nth(2000).map_or(0, |(i, _)| i);
    &s[start..]
}

/// Runs `program args…` in `pod` to completion within `timeout`.
pub fn run_in(pod: &Pod, program: &str, args: &[&str], stdin: Option<&Path>, timeout: Duration) -> Result<Outcome> {
    Running::spawn(pod, program, args, stdin)?.wait(timeout)
}

/// A helper script or source file of `tests/programs/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs").join(name)
}

/// The sha256 of `bytes`, in hex (coreutils' `sha256sum`).
pub fn sha256(bytes: &[u8]) -> Result<String> {
    let mut child =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("run sha256sum")?;
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread: sha256sum's stdout is read only after.
    let input = bytes.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer.join().unwrap()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text.split_whitespace().next().context("sha256sum output")?.to_string())
}
