//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) for the fmod_ret loader:
//! the id of a function (the attach target) and the byte offsets of struct members (the
//! program walks `current->nsproxy->net_ns->net_cookie` with bpf_probe_read_kernel).
//!
//! Why not a crate: aya's `Btf` keeps member offsets private and only answers id look-ups,
//! and the one full BTF crate for Rust (btf-rs) is LGPL, which this Apache-2.0 binary does
//! not take in. The format is small and stable (Documentation/bpf/btf.rst).
use anyhow::{bail, ensure, Context, Result};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_TYPE_TAG: u32 = 18;

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name_off: u32,
    kind: u32,
    /// The referenced type for modifiers/typedefs.
    type_id: u32,
    members: Vec<Member>,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id - 1.
    types: Vec<Type>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let s = b.get(off..off + 4).context("BTF truncated")?;
    Ok(u32::from_ne_bytes(s.try_into().unwrap()))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self> {
        Self::parse(&std::fs::read(VMLINUX).with_context(|| format!("read {VMLINUX} (kernel without BTF?)"))?)
    }

    pub fn parse(b: &[u8]) -> Result<Self> {
        ensure!(b.len() >= 24 && u16::from_ne_bytes([b[0], b[1]]) == 0xeb9f, "not BTF (bad magic)");
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let tsec = b.get(hdr_len + type_off..hdr_len + type_off + type_len).context("BTF type section out of range")?;
        let strings = b.get(hdr_len + str_off..hdr_len + str_off + str_len).context("BTF strings out of range")?.to_vec();
        let mut types = Vec::new();
        let mut off = 0;
        while off < tsec.len() {
            let (name_off, info, type_id) = (u32_at(tsec, off)?, u32_at(tsec, off + 4)?, u32_at(tsec, off + 8)?);
            off += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4,                // INT, VAR, DECL_TAG
                3 => 12,                         // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + 12 * i;
                        let raw = u32_at(tsec, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(tsec, m)?,
                            type_id: u32_at(tsec, m + 4)?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    12 * vlen
                }
                6 | 13 => 8 * vlen,              // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen,            // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0,       // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                k => bail!("BTF kind {k} unknown to this reader"),
            };
            off += extra;
            types.push(Type { name_off, kind, type_id, members });
        }
        Ok(Self { strings, types })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    fn by_id(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    fn find(&self, kind: u32, name: &str) -> Option<(u32, &Type)> {
        self.types
            .iter()
            .enumerate()
            .find(|(_, t)| t.kind == kind && self.name(t.name_off) == name.as_bytes())
            .map(|(i, t)| (i as u32 + 1, t))
    }

    /// The BTF id of a kernel function (an fentry/fexit/fmod_ret attach target).
    pub fn func_id(&self, name: &str) -> Result<u32> {
        Ok(self.find(KIND_FUNC, name).with_context(|| format!("kernel BTF has no function {name}"))?.0)
    }

    /// Strips typedefs and modifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        loop {
            let t = self.by_id(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.type_id,
                _ => return Some(t),
            }
        }
    }

    fn member_bits(&self, t: &Type, member: &str) -> Option<u32> {
        for m in &t.members {
            if self.name(m.name_off) == member.as_bytes() {
                return Some(m.bit_offset);
            }
            // Members of anonymous structs and unions are reached through them.
            if m.name_off == 0 {
                let inner = self.resolve(m.type_id)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                    if let Some(bits) = self.member_bits(inner, member) {
                        return Some(m.bit_offset + bits);
                    }
                }
            }
        }
        None
    }

    /// Byte offset of `member` in `struct <name>`.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let (_, t) = self.find(KIND_STRUCT, name).with_context(|| format!("kernel BTF has no struct {name}"))?;
        let bits = self.member_bits(t, member).with_context(|| format!("struct {name} has no member {member}"))?;
        ensure!(bits % 8 == 0, "{name}.{member} is a bitfield");
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_the_loader_needs_in_the_running_kernel() {
        let btf = Btf::from_sys_fs().unwrap();
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
        assert!(btf.member_offset("net", "no_such_member").is_err());
        assert!(btf.func_id("no_such_function_here").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, really not").is_err());
    }
}
