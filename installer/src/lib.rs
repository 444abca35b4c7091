//! meshaccel's node-side library: the bpffs pin layout and the loader shared by the CNI
//! plugin and the installer daemon.
pub mod bpf;
pub mod pins;
mod sys;

pub use sys::CgroupLinkInfo;
