//! Where the fields the programs read live in the running kernel's structures.
//!
//! Whether a socket reads in blocking mode is its file's `O_NONBLOCK`, reachable from a
//! `struct sock` as `sk->sk_socket->file->f_flags`. aya's programs carry no CO-RE
//! relocations, so the offsets come from the kernel's own BTF at load time and reach the
//! programs through the `NODE` array (meshaccel_common::node).
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Backend, Btf, Type};

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

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
        Self::from_btf(Path::new(VMLINUX_BTF))
    }

    pub fn from_btf(path: &Path) -> Result<Self> {
        // mmap keeps the parse lazy; sysfs files are mmap-able only from 6.18 on (ENODEV
        // before), where the whole file is read and parsed instead.
        let btf = Btf::from_file_with_backend(path, Backend::Mmap)
            .or_else(|_| Btf::from_file_with_backend(path, Backend::Cache))
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("read kernel BTF {}", path.display()))?;
        Ok(Self {
            sk_socket: member_offset(&btf, "sock", "sk_socket")?,
            socket_file: member_offset(&btf, "socket", "file")?,
            file_flags: member_offset(&btf, "file", "f_flags")?,
        })
    }
}

/// Byte offset of `member` in `struct strukt`, looking into anonymous structs and unions.
fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32> {
    let types = btf.resolve_types_by_name(strukt).map_err(|e| anyhow!("{e}")).with_context(|| format!("struct {strukt}"))?;
    let Some(Type::Struct(s)) = types.into_iter().find(|t| matches!(t, Type::Struct(_))) else {
        bail!("kernel BTF has no struct {strukt}");
    };
    find_member(btf, &s, member)?
        .map(|bits| bits / 8)
        .with_context(|| format!("kernel BTF: struct {strukt} has no member {member}"))
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>> {
    for m in &s.members {
        let name = btf.resolve_name(m).map_err(|e| anyhow!("{e}"))?;
        if name == member {
            return Ok(Some(m.bit_offset()));
        }
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
    fn a_missing_member_is_an_error_naming_it() {
        let btf = Btf::from_file_with_backend(VMLINUX_BTF, Backend::Mmap).unwrap();
        let e = member_offset(&btf, "file", "no_such_member").unwrap_err();
        assert!(format!("{e:#}").contains("no member no_such_member"), "{e:#}");
    }
}
