//! SMC-R for pods: at ADD, inside the pod's netns, make the pod's TCP run over RDMA; at
//! DEL, undo it. The CNI verbs reach it as the [`feature::Smc`] feature, which records
//! what ADD did ([`record`]); the per-pod work is [`pod`]: ADD's `setup`, DEL's `teardown`,
//! CHECK's `verify`. Its conf is `meshaccel_node::conf::smc`, validated with the rest of
//! the plugin's entry.
//!
//! * PNET table ([`pnet`]): `<PNETID> → <CNI_IFNAME>` in the pod netns, and the RDMA device
//!   port carrying the same PNET ID in the initial netns (global, shared, never removed).
//! * TCP→SMC conversion for this pod only ([`convert`]): `net.smc.tcp2smc` on kernels that
//!   have it (Alibaba Cloud Linux), else the `update_socket_protocol` fmod_ret program
//!   ([`fmodret`]) with the pod's netns cookie in its map.
//! * `net.smc.*` sysctls in the pod netns ([`sysctl`]), old values saved for DEL.
//! * Nothing is enabled until RDMA has been verified both ways to the configured peers
//!   ([`reach`], [`probe`]; the peers run [`responder`]; `dns:` peers are resolved by [`dns`]),
//!   and pods already on SMC follow later verdicts ([`gate`]: suspended while the path is not
//!   verified).
pub mod convert;
pub mod dns;
pub mod feature;
pub mod fmodret;
pub mod gate;
pub mod genl;
pub mod netns;
pub mod pnet;
pub mod pod;
pub mod probe;
pub mod rdma;
pub mod reach;
pub mod record;
pub mod report;
pub mod responder;
pub mod smcgen;
pub mod syncheck;
pub mod sysctl;
pub mod ueid;
pub mod verbs;

pub use convert::Mode;
pub use meshaccel_node::conf::SmcConf;
pub use pod::{SmcError, SmcState};
