//! The per-CPU counters in `COUNTERS`, as `meshaccel status` and /metrics name them.

/// Index of a per-CPU counter in the `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Sockets put in the sockhash at establishment.
    SocketsInserted = 0,
    /// Sockhash updates the kernel refused (key taken, map full).
    InsertFailures = 1,
    /// Messages delivered straight into the peer socket.
    MsgRedirected = 2,
    /// Connections of accelerated pods left on plain TCP because the peer is not an
    /// accelerated socket of this node, or the client sent before pairing completed.
    RedirectMisses = 3,
    /// Bytes delivered by redirect.
    BytesRedirected = 4,
    /// Messages sent on plain TCP by connections decided plain.
    MsgPassed = 5,
    /// Tagged pairs left on plain TCP: the client had to send before the server end was
    /// paired, data moved before establishment (TCP Fast Open), or the key was taken.
    Ambiguous = 6,
    /// Connections switched to plain TCP for good because their reader fell
    /// [`MAX_BACKLOG`](crate::MAX_BACKLOG) bytes behind (the kernel's redirect path has no
    /// flow control).
    Backpressure = 7,
    /// Connections the pod's filter rules kept on plain TCP.
    Filtered = 8,
    /// Connection ends switched to plain TCP for good because they stream sends that TCP
    /// batches better (see [`ConnState::batchable`](crate::ConnState::batchable),
    /// [`STREAM_RUN`](crate::STREAM_RUN)).
    Streaming = 9,
    /// Streaming senders that then left the sockmap (nothing had been redirected into
    /// them), so their sends take TCP's own path, without the sockmap's per-send cost.
    LeftSockmap = 10,
    /// Connection ends kept on (or moved to) plain TCP because they use a blocking socket:
    /// the kernel's sockmap receive path fails blocking reads with EAGAIN when woken
    /// without redirected data (docs/design.md, "Only non-blocking ends are redirected").
    Blocking = 11,
}

impl Counter {
    pub const ALL: [Counter; 12] = [
        Counter::SocketsInserted,
        Counter::InsertFailures,
        Counter::MsgRedirected,
        Counter::RedirectMisses,
        Counter::BytesRedirected,
        Counter::MsgPassed,
        Counter::Ambiguous,
        Counter::Backpressure,
        Counter::Filtered,
        Counter::Streaming,
        Counter::LeftSockmap,
        Counter::Blocking,
    ];
    pub const LEN: u32 = Self::ALL.len() as u32;

    pub const fn name(self) -> &'static str {
        match self {
            Counter::SocketsInserted => "sockets_inserted",
            Counter::InsertFailures => "insert_failures",
            Counter::MsgRedirected => "msgs_redirected",
            Counter::RedirectMisses => "redirect_misses",
            Counter::BytesRedirected => "bytes_redirected",
            Counter::MsgPassed => "msgs_passed",
            Counter::Ambiguous => "ambiguous",
            Counter::Backpressure => "backpressure_fallbacks",
            Counter::Filtered => "filtered",
            Counter::Streaming => "streaming_fallbacks",
            Counter::LeftSockmap => "left_sockmap",
            Counter::Blocking => "blocking_plain",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
