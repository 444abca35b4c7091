//! RDMA CM + verbs plumbing shared by the reachability prober and its responder (over the
//! `sideway` crate): one RC queue pair per connection, one small receive buffer, sends
//! inline, and every wait bounded by a deadline. Nothing here touches SMC.
//!
//! `sideway` reaches libibverbs and librdmacm through `rdma-mummy-sys`, which dlopens them
//! at run time: the binary links to neither, and a node without them gets an error here
//! (EOPNOTSUPP) instead of a plugin that cannot start.
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use sideway::ibverbs::completion::{BasicCompletionQueue, WorkCompletionStatus};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair, QueuePairState, SetInlineData, SetScatterGatherEntry, WorkRequestFlags,
};
use sideway::ibverbs::AccessFlags;
use sideway::rdmacm::communication_manager::{
    ConnectionParameter, CreateEventChannelErrorKind, Event, EventChannel, EventType, GetEventErrorKind, Identifier,
    PortSpace,
};

/// Probe messages: a 4-byte tag and a 16-byte nonce. The responder answers the request tag
/// with the reply tag and the nonce's bitwise complement, so an echo (or a stale buffer)
/// cannot pass for an answer.
pub const MSG_LEN: usize = 20;
pub const REQUEST_TAG: &[u8; 4] = b"MAQ1";
pub const REPLY_TAG: &[u8; 4] = b"MAR1";

/// Transport retries of the RC queue pair. The CM's default is 7, which rxe (and the IB
/// spec) treat as "retry for ever"; a probe must give up instead.
const RETRY_COUNT: u8 = 3;

const SEND_ID: u64 = 1;
const RECV_ID: u64 = 2;

/// The answer to a request: `None` when `msg` is not a probe request.
pub fn reply_to(msg: &[u8]) -> Option<[u8; MSG_LEN]> {
    let nonce = msg.strip_prefix(REQUEST_TAG.as_slice()).filter(|n| n.len() == MSG_LEN - 4)?;
    let mut out = [0u8; MSG_LEN];
    out[..4].copy_from_slice(REPLY_TAG);
    for (o, n) in out[4..].iter_mut().zip(nonce) {
        *o = !n;
    }
    Some(out)
}

pub fn request(nonce: &[u8; MSG_LEN - 4]) -> [u8; MSG_LEN] {
    let mut out = [0u8; MSG_LEN];
    out[..4].copy_from_slice(REQUEST_TAG);
    out[4..].copy_from_slice(nonce);
    out
}

/// A CM event channel in non-blocking mode, read under deadlines.
pub struct Channel(pub Arc<EventChannel>);

impl Channel {
    pub fn new() -> Result<Self> {
        let ch = EventChannel::new().map_err(|e| {
            let missing =
                matches!(&e.0, CreateEventChannelErrorKind::Rdmacm(io) if io.raw_os_error() == Some(libc::EOPNOTSUPP));
            if missing {
                anyhow!(
                    "librdmacm.so.1/libibverbs.so.1 not loadable (install librdmacm1, libibverbs1, ibverbs-providers)"
                )
            } else {
                anyhow!(e).context("rdma_create_event_channel (is rdma_ucm loaded, /dev/infiniband/rdma_cm present?)")
            }
        })?;
        ch.set_nonblocking(true).context("event channel O_NONBLOCK")?;
        Ok(Self(ch))
    }

    pub fn create_id(&self) -> Result<Arc<Identifier>> {
        self.0.create_id(PortSpace::Tcp).context("rdma_create_id")
    }

    /// The next event, or `None` once `deadline` has passed.
    pub fn next(&self, deadline: Instant) -> Result<Option<Event>> {
        loop {
            match self.0.get_cm_event() {
                Ok(ev) => return Ok(Some(ev)),
                Err(e) if matches!(e.0, GetEventErrorKind::NoEvent) => {}
                Err(e) => return Err(anyhow!(e).context("rdma_get_cm_event")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // SAFETY: the channel (and so its fd) outlives this call.
            let fd = unsafe { BorrowedFd::borrow_raw(self.0.as_raw_fd()) };
            let ms = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as u32).unwrap_or(PollTimeout::MAX);
            match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], ms) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(anyhow!(e).context("poll on the CM event channel")),
            }
        }
    }

    /// Waits for `want` on `id`; any other event for it is a failure named after it.
    pub fn expect(&self, id: &Arc<Identifier>, want: EventType, deadline: Instant, step: &str) -> Result<()> {
        loop {
            let Some(ev) = self.next(deadline)? else { bail!("timed out waiting for {step}") };
            if !ev.cm_id().is_some_and(|i| Arc::ptr_eq(&i, id)) {
                continue; // a late event of an earlier id: not ours
            }
            let (ty, status) = (ev.event_type(), ev.status());
            let _ = ev.ack();
            if ty == want {
                return Ok(());
            }
            bail!("{step}: got {ty:?} (status {status}{})", describe_status(status));
        }
    }
}

fn describe_status(status: i32) -> String {
    match status {
        0 => String::new(),
        s if s < 0 => format!(": {}", std::io::Error::from_raw_os_error(-s)),
        // Positive: an IB CM reject reason.
        8 => ": IB CM reject reason 8, invalid service ID: nothing listens on that port".into(),
        s => format!(": IB CM reject reason {s}"),
    }
}

/// One connection's verbs objects. Field order is drop order: the QP goes before the CQ it
/// uses, the MR before the buffer it registers.
pub struct Endpoint {
    qp: BasicQueuePair,
    cq: Arc<BasicCompletionQueue>,
    mr: Arc<MemoryRegion>,
    buf: Box<[u8; MSG_LEN]>,
}

/// What one completion said.
pub enum Completion {
    Sent,
    Received([u8; MSG_LEN], usize),
}

impl Endpoint {
    /// Verbs objects on the device the CM id is bound to (after address resolution, or on
    /// a connect request).
    pub fn new(id: &Identifier) -> Result<Self> {
        let ctx = id.get_device_context().context("CM id has no RDMA device")?;
        let pd = ctx.alloc_pd().context("ibv_alloc_pd")?;
        let mut cq = ctx.create_cq_builder().setup_cqe(4).build().context("ibv_create_cq")?;
        // One completion per ibv_poll_cq: `poll` hands out one and drops the poller, which
        // would lose the rest of a batch (the send's and the receive's can arrive together).
        Arc::get_mut(&mut cq).context("fresh CQ shared")?.setup_poll_batch(std::num::NonZeroU32::MIN);
        let mut buf = Box::new([0u8; MSG_LEN]);
        // SAFETY: `buf` is heap memory owned by the Endpoint and dropped after the MR.
        let mr =
            unsafe { pd.reg_mr(buf.as_mut_ptr() as usize, MSG_LEN, AccessFlags::LocalWrite) }.context("ibv_reg_mr")?;
        let qp = pd
            .create_qp_builder()
            .setup_max_send_wr(1)
            .setup_max_recv_wr(1)
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .setup_max_inline_data(MSG_LEN as u32)
            .setup_send_cq(cq.clone())
            .setup_recv_cq(cq.clone())
            .build()
            .context("ibv_create_qp")?;
        Ok(Self { qp, cq, mr, buf })
    }

    pub fn qp_number(&self) -> u32 {
        self.qp.qp_number()
    }

    pub fn conn_param(&self) -> ConnectionParameter {
        let mut p = ConnectionParameter::default();
        p.setup_qp_number(self.qp_number());
        p
    }

    /// RESET → INIT, and the one receive posted: before connecting (active side) or
    /// accepting (passive side), so the peer's SEND always finds it.
    pub fn init(&mut self, id: &Identifier) -> Result<()> {
        self.modify(id, QueuePairState::Init)?;
        self.post_recv()
    }

    /// INIT → RTR → RTS with what the CM negotiated (the active side can do this only once
    /// the REP is in), transport retries bounded.
    pub fn ready(&mut self, id: &Identifier) -> Result<()> {
        self.modify(id, QueuePairState::ReadyToReceive)?;
        self.modify(id, QueuePairState::ReadyToSend)
    }

    fn modify(&mut self, id: &Identifier, state: QueuePairState) -> Result<()> {
        let mut attr = id.get_qp_attr(state).with_context(|| format!("rdma_init_qp_attr {state:?}"))?;
        if state == QueuePairState::ReadyToSend {
            attr.setup_retry_cnt(RETRY_COUNT).setup_rnr_retry(RETRY_COUNT);
        }
        self.qp.modify(&attr).with_context(|| format!("modify QP to {state:?}"))
    }

    fn post_recv(&mut self) -> Result<()> {
        let (lkey, addr) = (self.mr.lkey(), self.buf.as_mut_ptr() as u64);
        let mut g = self.qp.start_post_recv();
        // SAFETY: the buffer is registered under `lkey` and lives as long as the QP.
        unsafe { g.construct_wr(RECV_ID).setup_sge(lkey, addr, MSG_LEN as u32) };
        g.post().context("ibv_post_recv")
    }

    pub fn send(&mut self, msg: &[u8; MSG_LEN]) -> Result<()> {
        let mut g = self.qp.start_post_send();
        g.construct_wr(SEND_ID, WorkRequestFlags::Signaled).setup_send().setup_inline_data(msg);
        g.post().context("ibv_post_send")
    }

    /// One completion, if any is there now; a failed one is an error naming its status.
    pub fn poll(&mut self) -> Result<Option<Completion>> {
        let Ok(mut poller) = self.cq.start_poll() else { return Ok(None) };
        let Some(wc) = poller.next() else { return Ok(None) };
        let (id, status, len) = (wc.wr_id(), wc.status(), wc.byte_len() as usize);
        drop(poller);
        if status != WorkCompletionStatus::Success as u32 {
            let what = if id == SEND_ID { "send" } else { "receive" };
            bail!("{what} completed with {:?}", WorkCompletionStatus::from(status));
        }
        Ok(Some(if id == SEND_ID { Completion::Sent } else { Completion::Received(*self.buf, len.min(MSG_LEN)) }))
    }

    /// Polls until a completion arrives or `deadline` passes (`None`). Short sleeps: a
    /// probe lasts milliseconds, and a completion channel would add a second fd to watch.
    pub fn wait(&mut self, deadline: Instant) -> Result<Option<Completion>> {
        loop {
            if let Some(c) = self.poll()? {
                return Ok(Some(c));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
