//! Names of the programs and maps inside the BPF object. User space finds them by these
//! names and pins them under the same names (see `meshaccel_installer::pins`).

pub const PROG_SOCKOPS: &str = "meshaccel_sockops";
pub const PROG_SKMSG: &str = "meshaccel_skmsg";
pub const MAP_SOCKS: &str = "SOCKS";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_POD_CONFIG: &str = "POD_CONFIG";
pub const MAP_CONN_STATE: &str = "CONN_STATE";
pub const MAP_DECISION: &str = "DECISION";
pub const MAP_NODE: &str = "NODE";
pub const MAP_BACKLOG: &str = "BACKLOG";
pub const PROG_CONSUMED: &str = "meshaccel_consumed";
pub const PROG_SOCK_CREATE: &str = "meshaccel_sock_create";
pub const MAP_OWNER: &str = "OWNER";
pub const MAP_LISTENERS: &str = "LISTENERS";
/// Every map of the object: each is pinned under `maps/<name>`.
pub const MAPS: [&str; 9] = [
    MAP_SOCKS,
    MAP_COUNTERS,
    MAP_POD_CONFIG,
    MAP_CONN_STATE,
    MAP_DECISION,
    MAP_NODE,
    MAP_BACKLOG,
    MAP_OWNER,
    MAP_LISTENERS,
];
/// The kernel function whose return tells how much a reader took from a sockmap queue.
pub const CONSUMED_HOOK: &str = "tcp_bpf_recvmsg";
