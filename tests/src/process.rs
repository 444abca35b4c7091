//! A helper process speaking JSON lines on stdout and taking commands on stdin.
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Lines skipped while waiting for an event, quoted when the wait fails.
    skipped: Vec<String>,
}

impl Proc {
    pub fn spawn(label: &str, mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {label}: {cmd:?}"))?;
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || stdout.lines().map_while(|l| l.ok()).try_for_each(|l| tx.send(l)));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Self { label: label.to_string(), stdin: child.stdin.take(), child, lines, stderr, skipped: vec![] })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line that is a JSON object with `"event": event`; other lines are
    /// skipped. Fails when the process exits or `timeout` passes first.
    pub fn expect_event(&mut self, event: &str, timeout: Duration) -> Result<Value> {
        self.expect_one_of(&[event], timeout)
    }

    /// The next event that is one of `events`.
    pub fn expect_one_of(&mut self, events: &[&str], timeout: Duration) -> Result<Value> {
        let event = events.join("|");
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) if events.iter().any(|e| v["event"] == *e) => return Ok(v),
                    _ => self.skipped.push(line),
                },
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: no {event:?} event within {timeout:?}; {}", self.label, self.output())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    // The stderr reader may still be draining.
                    thread::sleep(Duration::from_millis(50));
                    bail!("{}: exited ({status}) before {event:?}; {}", self.label, self.output())
                }
            }
        }
    }

    /// Like [`Self::expect_event`], but `Ok(None)` when `timeout` passes first: for asserting
    /// that something does *not* happen.
    pub fn poll_event(&mut self, event: &str, timeout: Duration) -> Result<Option<Value>> {
        match self.expect_event(event, timeout) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.to_string().contains(&format!("no {event:?} event within")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn output(&self) -> String {
        format!("stdout so far: {:?}; stderr: {}", self.skipped, self.stderr())
    }

    /// Sends one line to the process's stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}").with_context(|| format!("{}: write stdin", self.label))
    }

    /// Waits for the final `done` event and the exit of the process.
    pub fn finish(mut self, timeout: Duration) -> Result<Value> {
        let done = self.expect_event("done", timeout)?;
        self.stdin.take();
        self.child.wait()?;
        Ok(done)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
