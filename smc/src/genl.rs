//! A blocking generic netlink client for the two SMC families, over netlink-packet-generic
//! (message framing, the nlctrl family lookup) and netlink-sys (the socket).
//!
//! Blocking on purpose: a CNI call is one short-lived thread that may be inside a pod's
//! netns (a netlink socket belongs to the netns it was created in), where an async runtime
//! would only add threads that are not.
use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;

use netlink_packet_core::{
    DecodeError, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator,
    ParseableParametrized, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// One generic netlink family: its registered name and protocol version.
pub trait Family: Debug + Clone {
    const NAME: &'static str;
    const VERSION: u8;
}

/// One attribute, raw: the SMC families only use strings, integers and nests, decoded by
/// the callers that know which is which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: u16,
    pub value: Vec<u8>,
}

impl Attr {
    /// A NUL-terminated string, as the kernel's `NLA_NUL_STRING` policy wants.
    pub fn string(kind: u16, s: &str) -> Self {
        let mut value = s.as_bytes().to_vec();
        value.push(0);
        Self { kind, value }
    }

    pub fn u8(kind: u16, v: u8) -> Self {
        Self { kind, value: vec![v] }
    }

    pub fn as_str(&self) -> String {
        let end = self.value.iter().position(|&b| b == 0).unwrap_or(self.value.len());
        String::from_utf8_lossy(&self.value[..end]).into_owned()
    }

    /// Unsigned integers of 1, 2, 4 or 8 bytes, native endian.
    pub fn as_u64(&self) -> Option<u64> {
        let v = &self.value;
        Some(match v.len() {
            1 => v[0].into(),
            2 => u16::from_ne_bytes(v[..2].try_into().ok()?).into(),
            4 => u32::from_ne_bytes(v[..4].try_into().ok()?).into(),
            8 => u64::from_ne_bytes(v[..8].try_into().ok()?),
            _ => return None,
        })
    }

    /// The attributes inside a nested attribute.
    pub fn nested(&self) -> Result<Vec<Attr>, DecodeError> {
        parse_attrs(&self.value)
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        self.value.len()
    }
    fn kind(&self) -> u16 {
        self.kind
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.value);
    }
}

pub fn parse_attrs(buf: &[u8]) -> Result<Vec<Attr>, DecodeError> {
    NlasIterator::new(buf)
        .map(|nla| {
            let nla: NlaBuffer<&[u8]> = nla?;
            Ok(Attr { kind: nla.kind(), value: nla.value().to_vec() })
        })
        .collect()
}

/// The find-first of a message's attributes.
pub fn find(attrs: &[Attr], kind: u16) -> Option<&Attr> {
    attrs.iter().find(|a| a.kind == kind)
}

/// A message of family `F`.
#[derive(Clone, Debug)]
pub struct Msg<F: Family> {
    pub cmd: u8,
    pub attrs: Vec<Attr>,
    _family: PhantomData<F>,
}

impl<F: Family> Msg<F> {
    pub fn new(cmd: u8, attrs: Vec<Attr>) -> Self {
        Self { cmd, attrs, _family: PhantomData }
    }
}

impl<F: Family> GenlFamily for Msg<F> {
    fn family_name() -> &'static str {
        F::NAME
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        F::VERSION
    }
}

impl<F: Family> Emitable for Msg<F> {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl<F: Family> ParseableParametrized<[u8], GenlHeader> for Msg<F> {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Self::new(header.cmd, parse_attrs(buf)?))
    }
}

/// Why a request failed: the family is not registered (module not loaded, or a kernel
/// without it) or the kernel refused the request.
#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    #[error("generic netlink family {0} is not registered (kernel module not loaded?)")]
    NoFamily(&'static str),
    #[error("{family}: {source}")]
    Kernel { family: &'static str, source: io::Error },
    #[error("{family}: malformed answer: {what}")]
    Decode { family: &'static str, what: String },
}

impl GenlError {
    /// The errno of a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            GenlError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A netlink socket in the caller's netns, bound to one family.
pub struct Genl<F: Family> {
    sock: Socket,
    family_id: u16,
    seq: u32,
    _family: PhantomData<F>,
}

fn kernel_err(family: &'static str, source: io::Error) -> GenlError {
    GenlError::Kernel { family, source }
}

impl<F: Family> Genl<F> {
    /// Opens a socket and resolves the family (the kernel loads the family's module on
    /// this lookup where module autoloading is allowed).
    pub fn open() -> Result<Self, GenlError> {
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(|e| kernel_err(F::NAME, e))?;
        sock.bind_auto().map_err(|e| kernel_err(F::NAME, e))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| kernel_err(F::NAME, e))?;
        let mut ctl = RawGenl { sock: &sock, seq: 0, family: F::NAME };
        let get = GenlCtrl { cmd: GenlCtrlCmd::GetFamily, nlas: vec![GenlCtrlAttrs::FamilyName(F::NAME.into())] };
        let answers = match ctl.exchange(GenlMessage::from_payload(get), false) {
            Ok(a) => a,
            Err(e) if e.errno() == Some(libc::ENOENT) => return Err(GenlError::NoFamily(F::NAME)),
            Err(e) => return Err(e),
        };
        let family_id = answers
            .iter()
            .flat_map(|m: &GenlMessage<GenlCtrl>| m.payload.nlas.iter())
            .find_map(|a| if let GenlCtrlAttrs::FamilyId(id) = a { Some(*id) } else { None })
            .ok_or(GenlError::Decode { family: F::NAME, what: "nlctrl answer has no family id".into() })?;
        let seq = ctl.seq;
        Ok(Self { sock, family_id, seq, _family: PhantomData })
    }

    /// A request that changes something; the kernel's ACK or error is the answer.
    pub fn call(&mut self, cmd: u8, attrs: Vec<Attr>) -> Result<(), GenlError> {
        self.exchange(cmd, attrs, false).map(drop)
    }

    /// A dump request: every message of the answer.
    pub fn dump(&mut self, cmd: u8, attrs: Vec<Attr>) -> Result<Vec<Msg<F>>, GenlError> {
        self.exchange(cmd, attrs, true)
    }

    fn exchange(&mut self, cmd: u8, attrs: Vec<Attr>, dump: bool) -> Result<Vec<Msg<F>>, GenlError> {
        let mut msg = GenlMessage::from_payload(Msg::<F>::new(cmd, attrs));
        msg.set_resolved_family_id(self.family_id);
        let mut raw = RawGenl { sock: &self.sock, seq: self.seq, family: F::NAME };
        let out = raw.exchange(msg, dump);
        self.seq = raw.seq;
        Ok(out?.into_iter().map(|m| m.payload).collect())
    }
}

struct RawGenl<'a> {
    sock: &'a Socket,
    seq: u32,
    family: &'static str,
}

impl RawGenl<'_> {
    fn exchange<P>(&mut self, payload: GenlMessage<P>, dump: bool) -> Result<Vec<GenlMessage<P>>, GenlError>
    where
        P: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        let family = self.family;
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(|e| kernel_err(family, e))?;

        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| kernel_err(family, e))?;
            let mut off = 0;
            while off < data.len() {
                let msg = NetlinkMessage::<GenlMessage<P>>::deserialize(&data[off..])
                    .map_err(|e| GenlError::Decode { family, what: e.to_string() })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(GenlError::Decode { family, what: "zero-length message".into() });
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue; // a late answer to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out), // ACK
                    NetlinkPayload::Error(e) => return Err(kernel_err(family, e.to_io())),
                    NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }
}
