//! The two-way RDMA reachability probe (`smc.probe`), over RDMA CM and verbs, never SMC.
//!
//! For each peer (a `meshaccel rdma-responder` of another node): resolve address and route,
//! connect (the CM's REQ → REP → RTU crosses both directions), then one RC SEND each way:
//! a random nonce out, its complement back. All of it under one hard deadline, so a path
//! that works one way only costs at most `timeoutMs` and yields a failed verdict with the
//! step that did not answer — never an SMC connection that hangs.
pub use meshaccel_node::conf::smc::{ProbeConf, DEFAULT_TIMEOUT_MS};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sideway::rdmacm::communication_manager::EventType;

use super::verbs::{self, Channel, Completion, Endpoint, MSG_LEN};

/// One peer's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerResult {
    pub peer: String,
    pub ok: bool,
    /// How long the probe took (≤ the timeout, plus scheduling).
    pub elapsed_ms: u64,
    pub detail: String,
}

/// Threads probing at once: `dns:` peers may resolve to every node of a large cluster.
const PARALLEL: usize = 64;

/// Probes every peer, [`PARALLEL`] at a time, from the calling thread's netns (threads
/// inherit it).
pub fn probe_all(peers: &[SocketAddr], timeout: Duration) -> Vec<PeerResult> {
    peers.chunks(PARALLEL).flat_map(|batch| probe_batch(batch, timeout)).collect()
}

fn probe_batch(peers: &[SocketAddr], timeout: Duration) -> Vec<PeerResult> {
    std::thread::scope(|s| {
        let handles: Vec<_> = peers.iter().map(|&p| s.spawn(move || probe_peer(p, timeout))).collect();
        handles
            .into_iter()
            .zip(peers)
            .map(|(h, p)| {
                h.join().unwrap_or_else(|_| PeerResult {
                    peer: p.to_string(),
                    ok: false,
                    elapsed_ms: 0,
                    detail: "probe thread panicked".into(),
                })
            })
            .collect()
    })
}

pub fn probe_peer(peer: SocketAddr, timeout: Duration) -> PeerResult {
    let start = Instant::now();
    let r = exchange(peer, start + timeout);
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let detail = match &r {
        Ok(()) => format!("answered both ways in {elapsed_ms} ms"),
        Err(e) => format!("{e:#} (after {elapsed_ms} ms, timeout {} ms)", timeout.as_millis()),
    };
    PeerResult { peer: peer.to_string(), ok: r.is_ok(), elapsed_ms, detail }
}

fn exchange(peer: SocketAddr, deadline: Instant) -> Result<()> {
    // CM timeouts in ms, at least 1 (0 would mean "default").
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let ch = Channel::new()?;
    let id = ch.create_id()?;
    id.resolve_addr(None, peer, left()).context("rdma_resolve_addr")?;
    ch.expect(&id, EventType::AddressResolved, deadline, "address resolution")?;
    id.resolve_route(left()).context("rdma_resolve_route")?;
    ch.expect(&id, EventType::RouteResolved, deadline, "route resolution")?;
    // Declared after `id`: the QP is destroyed before the CM id.
    let mut ep = Endpoint::new(&id)?;
    ep.init(&id)?;
    id.connect(ep.conn_param()).context("rdma_connect")?;
    ch.expect(&id, EventType::ConnectResponse, deadline, "the connect response (REQ → peer, REP → here)")?;
    ep.ready(&id)?;
    id.establish().context("rdma_establish (RTU)")?;

    let mut nonce = [0u8; MSG_LEN - 4];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let want = verbs::reply_to(&verbs::request(&nonce)).expect("a request has a reply");
    ep.send(&verbs::request(&nonce))?;
    let (mut acked, mut answered) = (false, false);
    while !(acked && answered) {
        match ep.wait(deadline)? {
            None if !acked => bail!("timed out waiting for the peer to acknowledge our SEND (here → peer)"),
            None => bail!("timed out waiting for the peer's SEND (peer → here)"),
            Some(Completion::Sent) => acked = true,
            Some(Completion::Received(buf, len)) => {
                ensure!(len == MSG_LEN && buf == want, "wrong answer from the peer ({len} bytes, not our nonce's)");
                answered = true;
            }
        }
    }
    let _ = id.disconnect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_answer_only_requests() {
        let nonce = [7u8; MSG_LEN - 4];
        let req = verbs::request(&nonce);
        let rep = verbs::reply_to(&req).unwrap();
        assert_eq!(&rep[..4], verbs::REPLY_TAG);
        assert!(rep[4..].iter().all(|&b| b == !7u8));
        assert_eq!(verbs::reply_to(&rep), None, "a reply is not a request");
        assert_eq!(verbs::reply_to(&req[..10]), None);
    }

    /// Where no RDMA device (or library) exists, as on the development machines, the probe
    /// fails fast with a reason instead of hanging or succeeding.
    #[test]
    fn without_a_reachable_responder_the_verdict_fails_within_the_timeout() {
        let timeout = Duration::from_millis(300);
        let r = probe_peer("192.0.2.1:7471".parse().unwrap(), timeout);
        assert!(!r.ok, "{r:?}");
        assert!(!r.detail.is_empty());
        // Bounded, not fast: a hang would be the bug (timing is for benchmarks).
        assert!(r.elapsed_ms < 10_000, "{r:?}");
    }
}
