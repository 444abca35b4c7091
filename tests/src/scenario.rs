//! Traffic scenarios shared by the tests, run with `meshaccel-testkit` inside pods.
use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;

use crate::node::TestNode;
use crate::pod::Pod;
use crate::process::Proc;

/// Generous: debug builds on 2 cores with other tests running in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A `done` report without errors, or an error quoting it.
pub fn clean(done: Value) -> Result<Value> {
    ensure!(done["errors"].as_array().is_some_and(|e| e.is_empty()), "errors reported: {done:#}");
    Ok(done)
}

/// Starts a `serve` in `pod` and waits until it listens.
pub fn server(pod: &Pod, listen: &str, mode: &str, extra: &[&str]) -> Result<Proc> {
    let mut args = vec!["serve", "--listen", listen, "--mode", mode];
    args.extend_from_slice(extra);
    let mut p = pod.testkit(&args)?;
    p.expect_event("listening", TIMEOUT)?;
    Ok(p)
}

/// Starts a `client` in `pod`.
pub fn client(pod: &Pod, connect: &str, mode: &str, extra: &[&str]) -> Result<Proc> {
    let mut args = vec!["client", "--connect", connect, "--mode", mode];
    args.extend_from_slice(extra);
    pod.testkit(&args)
}

/// `conns` parallel connections from `from` to an echo server in `to`, each sending
/// `bytes` random bytes and checking that exactly those bytes come back, with `io`
/// (`blocking` or `poll`, see meshaccel-testkit). Returns the client's and the server's
/// reports, both checked to be free of errors.
pub fn echo_traffic(
    to: &Pod,
    listen: &str,
    from: &Pod,
    connect: &str,
    conns: u32,
    bytes: u64,
    io: &str,
) -> Result<(Value, Value)> {
    let (c, b) = (conns.to_string(), bytes.to_string());
    let server = server(to, listen, "echo", &["--conns", &c, "--io", io])?;
    let client = client(from, connect, "verify", &["--conns", &c, "--bytes", &b, "--seed", &c, "--io", io])?;
    let client_done = clean(client.finish(TIMEOUT)?)?;
    let server_done = clean(server.finish(TIMEOUT)?)?;
    Ok((client_done, server_done))
}

/// A server pod and a client pod, both accelerated or both opted out by annotation: the
/// same scenario run on both shows whether redirected TCP behaves as plain TCP.
pub fn pod_pair(node: &TestNode, accelerated: bool) -> Result<(Pod, Pod)> {
    Ok(if accelerated {
        (node.accelerated_pod("server")?, node.accelerated_pod("client")?)
    } else {
        (node.opted_out_pod("server")?, node.opted_out_pod("client")?)
    })
}

/// The report of the only connection in a `done` report.
pub fn only_conn(done: &Value) -> Value {
    done["conns"][0].clone()
}
