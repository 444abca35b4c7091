//! Map sizes and the redirect backlog bound.

/// Sizing of the sockhash and of `BACKLOG`: two entries per accelerated connection, so
/// 2^21 holds 1,048,576 concurrent connections (docs/scale.md). Neither map preallocates
/// its entries; the kernel allocates the buckets up front (16 B each).
pub const SOCKS_MAX_ENTRIES: u32 = 1 << 21;

/// Sized for every listening socket of a node's accelerated pods; LRU, so closed
/// listeners' entries need no removal.
pub const LISTENERS_MAX_ENTRIES: u32 = 1 << 16;

/// Pairing decisions awaiting the client's first send; LRU, so it needs no cleanup. An
/// entry lives from the handshake until the client's first send, so only connections whose
/// client has not sent yet hold one (a pre-opened pool connection). An LRU is preallocated
/// (112 B per entry with the 40-byte key, 104 B measured with the earlier 32-byte one): 2^18
/// (29 MB) rather than one per possible connection (2^20 would be 117 MB on every node). Evicting one makes that connection's client end plain
/// (docs/scale.md).
pub const DECISIONS_MAX_ENTRIES: u32 = 1 << 18;

/// Redirected bytes a reader may have outstanding before its sender falls back to plain
/// TCP (whose receive window then applies). The kernel charges redirected data to the
/// receiver without checking its receive buffer, so without this bound one stalled reader
/// could pin memory up to the node-wide TCP limit.
pub const MAX_BACKLOG: i64 = 4 << 20;
