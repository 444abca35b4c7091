//! The `meshaccel` plugin binary in the host's CNI bin dir(s).
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use meshaccel_installer::conflist::PLUGIN_TYPE;
use meshaccel_node::files;

const MODE: u32 = 0o755;

/// Where the runtime looks the plugin up by its `type`.
fn target(dir: &Path) -> PathBuf {
    dir.join(PLUGIN_TYPE)
}

/// The installed copy is `content`, executable.
fn is_current(path: &Path, content: &[u8]) -> io::Result<bool> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.permissions().mode() & 0o777 != MODE || meta.len() != content.len() as u64 {
        return Ok(false);
    }
    Ok(fs::read(path)? == content)
}

/// Copies `content` into every dir where it is missing or differs (temp file + rename, so a
/// runtime exec'ing the plugin meanwhile runs either the old or the new one). Returns the
/// paths written.
pub fn install(content: &[u8], dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for dir in dirs {
        let path = target(dir);
        if is_current(&path, content).with_context(|| format!("read {}", path.display()))? {
            continue;
        }
        files::write_atomic(&path, content, MODE)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}{}", path.display(), files::read_only_hint(&e)))?;
        written.push(path);
    }
    Ok(written)
}

/// Why the binaries are not what [`install`] would leave, if they are not.
pub fn verify(content: &[u8], dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs {
        let path = target(dir);
        anyhow::ensure!(is_current(&path, content)?, "{} is missing or not the current plugin", path.display());
    }
    Ok(())
}

/// Removes the plugin from every dir. Returns the paths removed.
pub fn remove(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for dir in dirs {
        let path = target(dir);
        if files::remove_if_exists(&path).with_context(|| format!("remove {}", path.display()))? {
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_when_content_or_mode_differs() {
        let dir = std::env::temp_dir().join(format!("meshaccel-bins-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dirs = vec![dir.clone()];
        assert_eq!(install(b"v1", &dirs).unwrap(), vec![dir.join("meshaccel")]);
        assert!(install(b"v1", &dirs).unwrap().is_empty(), "unchanged: not rewritten");
        verify(b"v1", &dirs).unwrap();
        assert!(verify(b"v2", &dirs).is_err());
        fs::set_permissions(dir.join("meshaccel"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(install(b"v1", &dirs).unwrap().len(), 1, "mode drift repaired");
        assert_eq!(install(b"v2", &dirs).unwrap().len(), 1, "content change copied");
        assert_eq!(fs::read(dir.join("meshaccel")).unwrap(), b"v2");
        assert_eq!(remove(&dirs).unwrap().len(), 1);
        assert!(remove(&dirs).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
