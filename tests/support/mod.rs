//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod dnsmasq;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "meshwork-{tag}-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` atomically: a temp file in the same directory, then a rename over it.
    pub fn write_atomic(&self, name: &str, content: &str) -> PathBuf {
        let tmp = self.0.join(format!(".{name}.tmp"));
        let dst = self.0.join(name);
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
        dst
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
