//! The running kernel's BTF (through btf-rs): the field offsets and function ids the BPF
//! programs need. aya's programs carry no CO-RE relocations and the TCP→SMC program is
//! assembled by hand, so both take what they need from here at load time.
//!
//! Whether a socket reads in blocking mode is its file's `O_NONBLOCK`, reachable from a
//! `struct sock` as `sk->sk_socket->file->f_flags`: [`Layout`], handed to the programs
//! through the `NODE` array (meshaccel_common::node).
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use btf_rs::{Backend, Btf, Type};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A kernel's BTF.
pub struct KernelBtf(Btf);

impl KernelBtf {
    /// The running kernel's.
    pub fn running() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        // mmap keeps the parse lazy; sysfs files are mmap-able only from 6.18 on (ENODEV
        // before), where the whole file is read and parsed instead.
        Btf::from_file_with_backend(path, Backend::Mmap)
            .or_else(|_| Btf::from_file_with_backend(path, Backend::Cache))
            .map(Self)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("read kernel BTF {}", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Btf::from_bytes(bytes).map(Self).map_err(|e| anyhow!("not BTF: {e}"))
    }

    /// Byte offset of `member` in `struct strukt`, looking into anonymous structs and unions.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32> {
        let btf = &self.0;
        let types = btf
            .resolve_types_by_name(strukt)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("struct {strukt}"))?;
        let Some(Type::Struct(s)) = types.into_iter().find(|t| matches!(t, Type::Struct(_))) else {
            bail!("kernel BTF has no struct {strukt}");
        };
        let bits = find_member(btf, &s, member)?
            .with_context(|| format!("kernel BTF: struct {strukt} has no member {member}"))?;
        ensure!(bits % 8 == 0, "{strukt}.{member} is a bitfield");
        Ok(bits / 8)
    }

    /// The BTF id of a kernel function (an fentry/fexit/fmod_ret attach target).
    pub fn func_id(&self, name: &str) -> Result<u32> {
        let ids = self.0.resolve_ids_by_name(name).unwrap_or_default();
        ids.into_iter()
            .find(|&id| matches!(self.0.resolve_type_by_id(id), Ok(Type::Func(_))))
            .with_context(|| format!("kernel BTF has no function {name}"))
    }
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>> {
    for m in &s.members {
        let name = btf.resolve_name(m).map_err(|e| anyhow!("{e}"))?;
        if name == member {
            return Ok(Some(m.bit_offset()));
        }
        // Members of anonymous structs and unions are reached through them.
        if name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = btf.resolve_chained_type(m).map_err(|e| anyhow!("{e}"))? {
                if let Some(bits) = find_member(btf, &inner, member)? {
                    return Ok(Some(m.bit_offset() + bits));
                }
            }
        }
    }
    Ok(None)
}

/// Byte offsets of `struct sock.sk_socket`, `struct socket.file`, `struct file.f_flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub sk_socket: u32,
    pub socket_file: u32,
    pub file_flags: u32,
}

impl Layout {
    /// The running kernel's layout.
    pub fn of_running_kernel() -> Result<Self> {
        Self::of(&KernelBtf::running()?)
    }

    pub fn of(btf: &KernelBtf) -> Result<Self> {
        Ok(Self {
            sk_socket: btf.member_offset("sock", "sk_socket")?,
            socket_file: btf.member_offset("socket", "file")?,
            file_flags: btf.member_offset("file", "f_flags")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs only a readable kernel BTF (no root): the offsets the programs will use on
    /// this machine are found, distinct and inside their structures' first pages.
    #[test]
    fn the_running_kernel_has_the_fields_the_programs_read() {
        let l = Layout::of_running_kernel().unwrap();
        assert!(l.sk_socket > 0 && l.sk_socket < 4096, "{l:?}");
        assert!(l.socket_file > 0 && l.socket_file < 256, "{l:?}");
        assert!(l.file_flags > 0 && l.file_flags < 256, "{l:?}");
    }

    #[test]
    fn finds_what_the_smc_loader_needs_in_the_running_kernel() {
        let btf = KernelBtf::running().unwrap();
        let id = btf.func_id("update_socket_protocol").unwrap();
        // aya parses the same BTF independently: the ids must agree.
        let aya = aya::Btf::from_sys_fs().unwrap();
        assert_eq!(aya.id_by_type_name_kind("update_socket_protocol", aya_obj::btf::BtfKind::Func).unwrap(), id);
        // struct sock_common starts with skc_addrpair/skc_daddr (an anonymous union at 0)
        // and has skc_family at byte 16 on every 64-bit kernel.
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(btf.member_offset("sock_common", "skc_family").unwrap(), 16);
        let nsproxy = btf.member_offset("task_struct", "nsproxy").unwrap();
        assert!(nsproxy > 0 && nsproxy.is_multiple_of(8), "{nsproxy}");
        assert!(btf.member_offset("net", "net_cookie").unwrap().is_multiple_of(8));
        assert!(btf.func_id("no_such_function_here").is_err());
    }

    #[test]
    fn a_missing_member_is_an_error_naming_it() {
        let e = KernelBtf::running().unwrap().member_offset("file", "no_such_member").unwrap_err();
        assert!(format!("{e:#}").contains("no member no_such_member"), "{e:#}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(KernelBtf::from_bytes(b"not btf at all, really not").is_err());
    }
}
