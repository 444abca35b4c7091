//! What every meshaccel process on a node shares — the CNI plugin, the installer daemon,
//! the SMC crate and the tests:
//!
//! * the bpffs pin layout ([`pins`]) and the BPF object's loading, upgrade and per-pod
//!   attachment ([`bpf`], with the kernel's [`btf`] and the raw bpf(2) calls in [`sys`]);
//! * the plugin's conf entry parsed into typed settings ([`conf`]);
//! * per-attachment records with a schema version ([`records`]);
//! * the acceleration feature abstraction and its failure policy ([`feature`]), and the
//!   same-node feature built on it ([`sockmap`]);
//! * pod cgroup lookup ([`cgroup`]), filter rules ([`rules`]), JSON logs ([`logging`]),
//!   small file helpers ([`files`]) and, with feature `cri`, a CRI client ([`cri`]).
pub mod bpf;
pub mod btf;
pub mod cgroup;
pub mod conf;
pub mod cri;
pub mod fault;
pub mod feature;
pub mod files;
pub mod log_forward;
pub mod logging;
pub mod pins;
pub mod records;
pub mod rules;
pub mod sockmap;
pub mod sys;

pub use sys::CgroupLinkInfo;
