//! Writing files so that a crash leaves either the old version or the new one, never a torn
//! mix: each file goes to a temporary name, is flushed to the disk (`fsync`), and is renamed
//! over the old one; then the folder itself is flushed, so the rename survives a power cut.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Flush a folder's entries (the renames into it) to the disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // Opening a directory for reading and fsyncing it is how POSIX persists its entries; other
    // systems have no such call and commit renames themselves.
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))?;
    Ok(())
}

/// Write one file atomically and durably.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
}

/// Write files into `dir` (created), each atomically and durably. Names may contain one level of
/// subfolder (`best/adapter_config.json`).
pub fn write_files(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent().filter(|p| *p != dir) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        write_file(&path, bytes)?;
    }
    sync_dir(dir)
}
