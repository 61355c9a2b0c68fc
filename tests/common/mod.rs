//! What the integration tests share: a scratch path that does not outlive its test.
#![allow(dead_code)] // each test binary uses part of it

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// `<temp>/tinytune-<tag>-<pid>`: a test's own path under the system's temp folder. It is
/// removed when the test ends, so repeated runs leave nothing behind. A failing test keeps it
/// and prints where, so what the test wrote can be looked at.
pub struct Scratch(PathBuf);

impl Scratch {
    /// The path, not created (for a command that creates its output folder itself). Whatever is
    /// already there (a killed run of the same process id) is removed first.
    pub fn path(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("tinytune-{tag}-{}", std::process::id()));
        remove(&path);
        Scratch(path)
    }

    /// The same path, created as an empty folder.
    pub fn dir(tag: &str) -> Scratch {
        let scratch = Scratch::path(tag);
        std::fs::create_dir_all(&scratch.0).unwrap_or_else(|e| panic!("cannot create {}: {e}", scratch.0.display()));
        scratch
    }
}

fn remove(path: &Path) {
    // A folder, a file or nothing at all.
    if std::fs::remove_dir_all(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for a look (the test failed)", self.0.display());
        } else {
            remove(&self.0);
        }
    }
}

impl Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<OsStr> for Scratch {
    fn as_ref(&self) -> &OsStr {
        self.0.as_os_str()
    }
}
