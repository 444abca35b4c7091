//! Replacing a file so that a reader (the runtime loading a conflist, exec of a plugin) sees
//! either the old or the new content, never a partial one.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The temporary sibling of `path`: hidden and without a `.conf`/`.conflist`/`.json`
/// extension, so neither the runtime nor our own scan ever reads it as a configuration.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.meshaccel-tmp"))
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, syncs it and renames it
/// over `path`, then syncs the directory so the rename survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        // The umask may have narrowed `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive `flock` on `path` (a directory, or a lock file created if missing), held
/// until the returned value is dropped: concurrent CNI invocations and the installer
/// serialise loading, unloading and cached verdicts on it.
pub fn lock_exclusive(path: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    let f = if path.is_dir() {
        fs::File::open(path)?
    } else {
        fs::File::options().create(true).truncate(false).write(true).open(path)?
    };
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
}

/// Removes a file; absent is fine. Returns whether it existed.
pub fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A hint for errors that mean "this directory is mounted read-only or not writable".
pub fn read_only_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EROFS) => " (read-only file system: mount the directory read-write)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied: the installer needs write access)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_content_and_mode_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("meshaccel-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.conflist");
        fs::write(&p, b"old").unwrap();
        write_atomic(&p, b"new", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert!(!temp_path(&p).exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
