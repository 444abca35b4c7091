//! The CNI configuration directory as the runtime reads it, and our entry in it.
//!
//! containerd (go-cni) and CRI-O use the lexicographically first `*.conf`, `*.conflist` or
//! `*.json` file as the pod network; so do we. A single `.conf`/`.json` is converted into a
//! `.conflist` beside it (the original removed) because only a list can chain plugins.
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::conflist::{self, Format};
use meshaccel_node::files;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no CNI network configuration (*.conf, *.conflist, *.json) in {0}; waiting for the primary CNI to write one"
    )]
    NoConfig(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {source}; left untouched")]
    Invalid { path: PathBuf, source: conflist::Error },
    #[error("cannot write {path}: {source}{hint}", hint = files::read_only_hint(source))]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot convert {from} into a conflist: {to} exists and has no meshaccel entry; left untouched")]
    TargetExists { from: PathBuf, to: PathBuf },
    #[error("{path} does not end with the current meshaccel entry")]
    NotChained { path: PathBuf },
    #[error("{path} is a single-plugin configuration; it cannot chain meshaccel")]
    NotAList { path: PathBuf },
}

/// What [`install`] did to make the chain current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    Rewrote,
    /// A `.conf`/`.json` replaced by the `.conflist` in [`Chained::path`].
    Converted {
        from: PathBuf,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chained {
    /// The conflist the runtime now uses.
    pub path: PathBuf,
    /// Its network `name` (attachment records carry it).
    pub network: String,
    pub change: Change,
}

/// Every file the runtime would consider, sorted as it sorts them (by byte value).
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::Read { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        // libcni skips directories only; a symlink to a file counts.
        if Format::of(&path).is_some() && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The file the runtime uses as the pod network.
pub fn primary(dir: &Path) -> Result<PathBuf, Error> {
    config_files(dir)?.into_iter().next().ok_or_else(|| Error::NoConfig(dir.to_path_buf()))
}

fn read(path: &Path) -> Result<(Map<String, Value>, Format, u32), Error> {
    let format = Format::of(path).expect("config_files only returns known formats");
    let bytes = fs::read(path).map_err(|source| Error::Read { path: path.into(), source })?;
    let mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    let list = conflist::parse(&bytes, format).map_err(|source| Error::Invalid { path: path.into(), source })?;
    Ok((list, format, mode))
}

fn write(path: &Path, list: &Map<String, Value>, mode: u32) -> Result<(), Error> {
    files::write_atomic(path, &conflist::render(list), mode)
        .map_err(|source| Error::Write { path: path.into(), source })
}

fn network(list: &Map<String, Value>) -> String {
    list.get("name").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Makes the primary configuration end with `entry`, touching it only when it does not.
/// An unreadable or invalid file is left as it is.
pub fn install(dir: &Path, entry: &Value) -> Result<Chained, Error> {
    let path = primary(dir)?;
    let (mut list, format, mode) = read(&path)?;
    let changed = conflist::chain(&mut list, entry);
    let network = network(&list);
    match format {
        Format::List => {
            if changed {
                write(&path, &list, mode)?;
            }
            Ok(Chained { path, network, change: if changed { Change::Rewrote } else { Change::None } })
        }
        Format::Single => {
            let to = path.with_extension("conflist");
            // Our own earlier conversion may be there (the primary CNI rewrote its .conf);
            // anybody else's file is not ours to overwrite.
            if to.exists() && !read(&to).is_ok_and(|(l, _, _)| conflist::has_entry(&l)) {
                return Err(Error::TargetExists { from: path, to });
            }
            write(&to, &list, mode)?;
            files::remove_if_exists(&path).map_err(|source| Error::Write { path: path.clone(), source })?;
            Ok(Chained { path: to, network, change: Change::Converted { from: path } })
        }
    }
}

/// Whether the runtime would run `entry` last in the pod network's chain.
pub fn verify(dir: &Path, entry: &Value) -> Result<Chained, Error> {
    let path = primary(dir)?;
    let (list, format, _) = read(&path)?;
    if format != Format::List {
        return Err(Error::NotAList { path });
    }
    if !conflist::is_chained(&list, entry) {
        return Err(Error::NotChained { path });
    }
    Ok(Chained { network: network(&list), path, change: Change::None })
}

/// Removes our entry from every configuration in the directory that has one (an earlier
/// primary may still carry it). Files we cannot parse are not ours and are skipped.
/// Returns the files rewritten.
pub fn uninstall(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let files = match config_files(dir) {
        Err(Error::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        other => other?,
    };
    let mut rewritten = Vec::new();
    for path in files {
        let Ok((mut list, Format::List, mode)) = read(&path) else { continue };
        if conflist::unchain(&mut list) {
            write(&path, &list, mode)?;
            rewritten.push(path);
        }
    }
    Ok(rewritten)
}
