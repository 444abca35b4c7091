//! What a feature did for one attachment, so DEL, CHECK, GC and `meshaccel status` can act
//! on it without the netns or prevResult (containerd's second DEL has neither).
//!
//! One JSON file per attachment in the feature's directory, written atomically, stamped
//! with the record type's schema version. The bpffs pins and the kernel remain the truth
//! for what is set up; a record says why and for which pod.
use std::fs;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::pins::AttachmentId;

/// A record type: its JSON form and the version of that form.
pub trait Record: Serialize + DeserializeOwned {
    /// Bumped when a field changes meaning; a reader refuses records of a newer version
    /// than its own (written by a newer meshaccel) instead of misreading them.
    const SCHEMA: u32;
}

/// The key under which the version is stored, next to the record's own fields. Records
/// written before versioning have none and are version 1.
const SCHEMA_KEY: &str = "schema";

pub struct Store<T> {
    dir: PathBuf,
    _record: PhantomData<fn() -> T>,
}

impl<T: Record> Store<T> {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), _record: PhantomData }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &AttachmentId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, id: &AttachmentId, record: &T) -> io::Result<()> {
        let mut v = serde_json::to_value(record)?;
        let Value::Object(fields) = &mut v else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a record must be a JSON object"));
        };
        fields.insert(SCHEMA_KEY.into(), T::SCHEMA.into());
        fs::create_dir_all(&self.dir)?;
        let path = self.file(id);
        let tmp = path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&v)?)?;
        // No fsync: the rename keeps the record whole across a crash of the process, and
        // what it describes (bpffs pins, the pod) does not survive a crash of the node. On a
        // disk-backed state dir an fsync cost ADD 0.7 ms p50, 8 ms p99 here (docs/scale.md).
        fs::rename(&tmp, &path)
    }

    pub fn load(&self, id: &AttachmentId) -> io::Result<Option<T>> {
        let bytes = match fs::read(self.file(id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let v: Value = serde_json::from_slice(&bytes)?;
        let schema = v.get(SCHEMA_KEY).map_or(Some(1), Value::as_u64);
        match schema {
            Some(s) if s <= u64::from(T::SCHEMA) => Ok(Some(serde_json::from_value(v)?)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: record schema {} is not one this meshaccel reads (≤ {}): written by a newer version?",
                    self.file(id).display(),
                    v[SCHEMA_KEY],
                    T::SCHEMA
                ),
            )),
        }
    }

    /// Removes the record; absent is fine (DEL is idempotent).
    pub fn remove(&self, id: &AttachmentId) -> io::Result<()> {
        crate::files::remove_if_exists(&self.file(id)).map(drop)
    }

    /// Every record, sorted by attachment (unreadable ones are skipped, not fatal: one bad
    /// file must not stop GC from collecting the others).
    pub fn list(&self) -> io::Result<Vec<(AttachmentId, T)>> {
        let dir = match fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in dir {
            let name = entry?.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            let Some(id) = AttachmentId::from_dir_name(stem) else { continue };
            if let Ok(Some(r)) = self.load(&id) {
                out.push((id, r));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Note {
        text: String,
    }
    impl Record for Note {
        const SCHEMA: u32 = 2;
    }

    fn temp_store(tag: &str) -> Store<Note> {
        Store::new(std::env::temp_dir().join(format!("meshaccel-records-{tag}-{}", std::process::id())))
    }

    #[test]
    fn save_load_list_remove_round_trip() {
        let s = temp_store("rt");
        let id = AttachmentId::new("cid", "eth0").unwrap();
        let n = Note { text: "x".into() };
        assert_eq!(s.load(&id).unwrap(), None);
        s.save(&id, &n).unwrap();
        assert_eq!(s.load(&id).unwrap(), Some(n.clone()));
        assert_eq!(s.list().unwrap(), vec![(id.clone(), n)]);
        s.remove(&id).unwrap();
        s.remove(&id).unwrap();
        assert!(s.list().unwrap().is_empty());
        fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn records_carry_their_schema_and_newer_ones_are_refused() {
        let s = temp_store("schema");
        let id = AttachmentId::new("cid", "eth0").unwrap();
        s.save(&id, &Note { text: "x".into() }).unwrap();
        let on_disk: Value = serde_json::from_slice(&fs::read(s.file(&id)).unwrap()).unwrap();
        assert_eq!(on_disk[SCHEMA_KEY], 2);
        // Unversioned (written before versioning): version 1, read.
        fs::write(s.file(&id), br#"{"text": "old"}"#).unwrap();
        assert_eq!(s.load(&id).unwrap(), Some(Note { text: "old".into() }));
        fs::write(s.file(&id), br#"{"text": "new", "schema": 3}"#).unwrap();
        let e = s.load(&id).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(s.list().unwrap().is_empty(), "an unreadable record is skipped by list");
        fs::remove_dir_all(s.dir()).unwrap();
    }
}
