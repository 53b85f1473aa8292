//! The worker's scratch space. Each worker process works in a directory of its own
//! under `WORK_DIR`, locked for as long as the process lives; a task gets a fresh
//! directory inside it that is removed when the task is over, whatever the ending. At
//! start, directories whose lock nobody holds (a crashed predecessor's) are removed.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

const PREFIX: &str = "worker-";
const LOCK: &str = ".lock";

pub struct WorkArea {
    root: PathBuf,
    _lock: File,
}

impl WorkArea {
    /// Claims a directory for this process under `base`, after removing stale ones.
    /// Returns the area and how many stale directories were removed.
    pub fn open(base: &Path, identity: &str) -> io::Result<(Self, usize)> {
        std::fs::create_dir_all(base)?;
        let removed = remove_stale(base)?;
        let name: String = identity
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let root = base.join(format!("{PREFIX}{name}"));
        std::fs::create_dir_all(&root)?;
        let lock = File::create(root.join(LOCK))?;
        lock.try_lock().map_err(|e| {
            io::Error::other(format!(
                "{} is in use by another worker: {e}",
                root.display()
            ))
        })?;
        Ok((Self { root, _lock: lock }, removed))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh directory for one task on one job; removed when the last holder drops
    /// it (the task, or a blocking thread still winding down after it).
    pub fn task_dir(&self, task: &str, job: Uuid) -> io::Result<Arc<tempfile::TempDir>> {
        tempfile::Builder::new()
            .prefix(&format!("{task}-{job}-"))
            .tempdir_in(&self.root)
            .map(Arc::new)
    }
}

impl Drop for WorkArea {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Removes every `worker-*` directory under `base` whose lock is free.
fn remove_stale(base: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(base)?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) || !entry.path().is_dir() {
            continue;
        }
        let held = match File::open(entry.path().join(LOCK)) {
            Ok(file) => file.try_lock_shared().is_err(),
            Err(_) => false,
        };
        if !held {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_areas_go_live_ones_stay_and_task_dirs_vanish_when_dropped() {
        let base = tempfile::tempdir().expect("base");
        let stale = base.path().join("worker-crashed");
        std::fs::create_dir_all(stale.join("scan-x")).expect("stale dir");
        std::fs::write(stale.join(LOCK), b"").expect("stale lock");
        let (live, removed) = WorkArea::open(base.path(), "host:1:abc").expect("first");
        assert_eq!(removed, 1);
        assert!(!stale.exists());

        let (other, removed) = WorkArea::open(base.path(), "host:2:def").expect("second");
        assert_eq!(removed, 0, "a live worker's area is not stale");
        assert!(live.root().exists());

        let dir = live.task_dir("scan", Uuid::nil()).expect("task dir");
        let path = dir.path().to_owned();
        std::fs::write(path.join("f"), b"x").expect("write");
        drop(dir);
        assert!(!path.exists());
        let root = other.root().to_owned();
        drop(other);
        assert!(!root.exists());
    }
}
