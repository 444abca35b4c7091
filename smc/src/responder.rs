//! `meshaccel rdma-responder --listen IP:PORT`: the other end of the reachability probe,
//! run on every node by the DaemonSet (hostNetwork). One thread, one CM event channel: for
//! each connect request an RC queue pair with one receive posted, then accept; a probe
//! request is answered with the nonce's complement and the connection dropped. At most
//! `--max-conns` connections at a time (more are rejected) and each lives at most
//! `--timeout-ms`, so a dead or one-way-broken peer costs bounded memory and time.
//!
//! A node without an RDMA device (or whose device is not up yet) is not an error: the
//! responder keeps trying to listen, so the DaemonSet's container runs (and its pod gets
//! Ready) on every node, and probes are answered as soon as a device appears.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sideway::rdmacm::communication_manager::{EventType, Identifier};
use slog::{debug, info, o, warn, Logger};

use super::probe::DEFAULT_TIMEOUT_MS;
use super::verbs::{self, Channel, Completion, Endpoint};

/// `meshaccel rdma-responder`'s options.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Where to listen for probes (an address of the node's RDMA netdev).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// How long one probe connection may live.
    #[arg(long = "timeout-ms", value_name = "N", default_value_t = DEFAULT_TIMEOUT_MS, value_parser = positive)]
    pub timeout_ms: u64,
    /// Probe connections at a time; more are rejected.
    #[arg(long = "max-conns", value_name = "N", default_value_t = 32, value_parser = positive)]
    pub max_conns: u64,
    /// critical, error, warning, info, debug or trace.
    #[arg(long = "log-level", value_name = "L", default_value = "info", value_parser = level)]
    pub log_level: slog::Level,
}

fn positive(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(0) => Err("must be positive".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn level(v: &str) -> Result<slog::Level, String> {
    meshaccel_node::logging::parse_level(v).ok_or_else(|| "want critical, error, warning, info, debug or trace".into())
}

impl Options {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The first retry of a failed listen, doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

pub fn main(opts: Options) -> Result<()> {
    let log = meshaccel_node::logging::logger("meshaccel", "", opts.log_level).new(o!("cmd" => "rdma-responder"));
    let mut retry = FIRST_RETRY;
    let r = loop {
        match Responder::bind(opts.listen) {
            Ok(r) => break r,
            Err(e) => {
                warn!(log, "cannot listen for RDMA reachability probes (no RDMA device?); retrying";
                    "listen" => %opts.listen, "retryInSecs" => retry.as_secs(), "error" => format!("{e:#}"));
                std::thread::sleep(retry);
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    };
    info!(log, "listening for RDMA reachability probes"; "listen" => %opts.listen,
          "timeoutMs" => opts.timeout_ms, "maxConns" => opts.max_conns);
    r.run(&opts, &log)
}

/// One accepted probe connection. Field order is drop order: QP before CM id.
struct Conn {
    ep: Endpoint,
    id: Arc<Identifier>,
    deadline: Instant,
}

pub struct Responder {
    // Before the channel: the id must be destroyed first. Only held, never read.
    _listener: Arc<Identifier>,
    ch: Channel,
}

impl Responder {
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let ch = Channel::new()?;
        let listener = ch.create_id()?;
        listener.bind_addr(addr).with_context(|| format!("rdma_bind_addr {addr}"))?;
        listener.listen(64).context("rdma_listen")?;
        Ok(Self { _listener: listener, ch })
    }

    /// Serves until an error of the event channel itself.
    pub fn run(&self, opts: &Options, log: &Logger) -> Result<()> {
        let mut conns: Vec<Conn> = Vec::new();
        loop {
            // Short waits while connections are in flight: their CQs are polled in between.
            let wait = if conns.is_empty() { Duration::from_secs(1) } else { Duration::from_millis(2) };
            let mut deadline = Instant::now() + wait;
            while let Some(ev) = self.ch.next(deadline)? {
                deadline = Instant::now(); // drain what is queued, then poll the CQs
                let (ty, id) = (ev.event_type(), ev.cm_id());
                // Acked before the id may be dropped: rdma_destroy_id waits for its events' acks.
                let _ = ev.ack();
                let Some(id) = id else { continue };
                match ty {
                    EventType::ConnectRequest if conns.len() as u64 >= opts.max_conns => {
                        warn!(log, "too many probes in flight, rejecting one"; "inFlight" => conns.len());
                        // Dropping the request's id rejects it.
                    }
                    EventType::ConnectRequest => match accept(&id) {
                        Ok(ep) => {
                            info!(log, "accepted a probe connection"; "inFlight" => conns.len() + 1);
                            conns.push(Conn { ep, id, deadline: Instant::now() + opts.timeout() })
                        }
                        Err(e) => warn!(log, "cannot accept a probe"; "error" => format!("{e:#}")),
                    },
                    EventType::Established => debug!(log, "probe connection established"),
                    EventType::TimewaitExit => {}
                    EventType::Disconnected
                    | EventType::ConnectError
                    | EventType::Unreachable
                    | EventType::Rejected
                    | EventType::DeviceRemoval => conns.retain(|c| !Arc::ptr_eq(&c.id, &id)),
                    other => debug!(log, "CM event"; "event" => ?other),
                }
            }
            let (now, before) = (Instant::now(), conns.len());
            conns.retain_mut(|c| match serve(c) {
                Ok(true) => {
                    info!(log, "answered a probe");
                    let _ = c.id.disconnect();
                    false
                }
                Ok(false) if now >= c.deadline => {
                    warn!(log, "probe connection timed out (peer silent or path one-way)");
                    false
                }
                Ok(false) => true,
                Err(e) => {
                    warn!(log, "probe connection failed"; "error" => format!("{e:#}"));
                    false
                }
            });
            if before != conns.len() {
                debug!(log, "connections released"; "inFlight" => conns.len());
            }
        }
    }
}

fn accept(id: &Arc<Identifier>) -> Result<Endpoint> {
    let mut ep = Endpoint::new(id)?;
    ep.init(id)?;
    ep.ready(id)?;
    id.accept(ep.conn_param()).context("rdma_accept")?;
    Ok(ep)
}

/// Advances one connection: answers its request; `true` once the answer is acknowledged.
fn serve(c: &mut Conn) -> Result<bool> {
    while let Some(done) = c.ep.poll()? {
        match done {
            Completion::Received(buf, len) => {
                let reply = verbs::reply_to(&buf[..len]).context("not a probe request")?;
                c.ep.send(&reply)?;
            }
            Completion::Sent => return Ok(true),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: Options,
    }

    fn parse(s: &str) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("rdma-responder").chain(s.split_whitespace())).map(|c| c.opts)
    }

    #[test]
    fn options() {
        let o = parse("--listen 10.0.0.1:7471 --timeout-ms 500").unwrap();
        assert_eq!(o.listen, "10.0.0.1:7471".parse().unwrap());
        assert_eq!(o.timeout(), Duration::from_millis(500));
        assert_eq!((o.max_conns, o.log_level), (32, slog::Level::Info));
        assert_eq!(parse("--listen 10.0.0.1:1 --log-level debug").unwrap().log_level, slog::Level::Debug);
        for bad in [
            "",
            "--listen",
            "--listen 10.0.0.1",
            "--listen 10.0.0.1:1 --max-conns 0",
            "--listen 10.0.0.1:1 --timeout-ms 0",
            "--listen 10.0.0.1:1 --log-level loud",
            "--listen 10.0.0.1:1 --x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
