//! meshaccel's node-side library: the bpffs pin layout and the loader shared by the CNI
//! plugin and the installer daemon, and the installer's adoption of running pods.
pub mod adopt;
pub mod bpf;
pub mod cgroup;
pub mod confdir;
pub mod conflist;
pub mod cri;
pub mod files;
pub mod kernel_layout;
pub mod pins;
pub mod rules;
pub mod state;
mod sys;

pub use sys::CgroupLinkInfo;
