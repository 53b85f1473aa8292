//! The worker's scratch space. Each worker process works in a directory of its own
//! under `WORK_DIR`, locked for as long as the process lives; a task gets a fresh
//! directory inside it that is removed when the task is over, whatever the ending. At
//! start, directories whose lock nobody holds (a crashed predecessor's) are removed.
//!
//! Several workers may share one `WORK_DIR` and start at the same moment, so neither
//! claiming nor sweeping may get in another's way: an area appears under its final
//! name only with its lock already held (it is built under a staging name and renamed
//! into place), a sweeper removes an area only while holding its lock, and an area that
//! vanishes under a sweeper (another sweeper got there first) counts as removed.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

const PREFIX: &str = "worker-";
/// Where an area is built before it is renamed into place with its lock held.
const STAGING: &str = ".staging-";
const LOCK: &str = ".lock";
/// A staging directory without a lock this old was left by a process that died while
/// making it (a live one locks it at once).
const STAGING_ABANDONED: Duration = Duration::from_secs(600);

pub struct WorkArea {
    root: PathBuf,
    _lock: File,
}

impl WorkArea {
    /// Claims a directory for this process under `base`, then removes stale ones.
    /// Returns the area and what the sweep did: a stale directory that cannot be removed
    /// is left (and reported), never a reason not to start.
    pub fn open(base: &Path, identity: &str) -> io::Result<(Self, Swept)> {
        std::fs::create_dir_all(base)?;
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
        let staging = tempfile::Builder::new()
            .prefix(STAGING)
            .tempdir_in(base)?
            .keep();
        let claimed = File::create(staging.join(LOCK)).and_then(|lock| {
            lock.try_lock().map_err(|e| {
                io::Error::other(format!("{} cannot be locked: {e}", staging.display()))
            })?;
            // Renaming keeps the open, locked file: the area appears already held.
            std::fs::rename(&staging, &root).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{} is in use by another worker: {e}", root.display()),
                )
            })?;
            Ok(lock)
        });
        let lock = match claimed {
            Ok(lock) => lock,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(err);
            }
        };
        let area = Self { root, _lock: lock };
        let swept = remove_stale(base, &area.root);
        Ok((area, swept))
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

/// What the start-up sweep removed, and what it had to leave.
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: usize,
    pub left: Vec<(PathBuf, io::Error)>,
}

/// Removes every area under `base` (but `own`) whose lock is free, and staging
/// directories a dead process left.
fn remove_stale(base: &Path, own: &Path) -> Swept {
    let mut swept = Swept::default();
    let entries = match std::fs::read_dir(base) {
        Ok(entries) => entries,
        Err(e) => {
            swept.left.push((base.to_owned(), e));
            return swept;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let staging = name.starts_with(STAGING);
        if path == own || !(name.starts_with(PREFIX) || staging) || !path.is_dir() {
            continue;
        }
        // A staging directory is its maker's until it is renamed (moments later): only
        // one left long ago is a dead process's.
        if staging && !older_than(&path, STAGING_ABANDONED) {
            continue;
        }
        let lock = match File::open(path.join(LOCK)) {
            Ok(lock) => Some(lock),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(_) => continue,
        };
        // Held by its owner while it lives; ours while we remove it. An area is only
        // renamed into place with its lock, so one without a lock file is stale.
        let stale = lock.as_ref().is_none_or(|lock| lock.try_lock().is_ok());
        if !stale {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => swept.removed += 1,
            // Another worker's sweep removed it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => swept.left.push((path, e)),
        }
        drop(lock);
    }
    swept
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_starting_together_on_one_base_never_stop_each_other() {
        const WORKERS: usize = 8;
        const ROUNDS: usize = 40;
        let base = tempfile::tempdir().expect("base");
        for round in 0..ROUNDS {
            // What crashed workers left: areas whose lock nobody holds, which every
            // starting worker tries to sweep at once.
            for crashed in 0..3 {
                let area = base
                    .path()
                    .join(format!("{PREFIX}crashed-{round}-{crashed}"));
                std::fs::create_dir_all(area.join("scan-x")).expect("crashed area");
                std::fs::write(area.join(LOCK), b"").expect("crashed lock");
            }
            let start = std::sync::Barrier::new(WORKERS);
            let areas: Vec<WorkArea> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..WORKERS)
                    .map(|i| {
                        let (base, start) = (base.path(), &start);
                        scope.spawn(move || {
                            start.wait();
                            WorkArea::open(base, &format!("host:{round}:{i}"))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| match h.join().expect("no panic") {
                        Ok((area, swept)) => {
                            assert!(swept.left.is_empty(), "round {round}: {:?}", swept.left);
                            area
                        }
                        Err(e) => panic!("round {round}: a worker could not start: {e}"),
                    })
                    .collect()
            });
            // Every area survived the others' sweeps, and is still usable; what the
            // crashed ones left is gone.
            for area in &areas {
                assert!(area.root().join(LOCK).exists(), "round {round}");
                drop(area.task_dir("scan", Uuid::nil()).expect("task dir"));
            }
            let names: Vec<String> = std::fs::read_dir(base.path())
                .expect("base")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), WORKERS, "round {round}: {names:?}");
            drop(areas);
        }
        assert_eq!(std::fs::read_dir(base.path()).expect("base").count(), 0);
    }

    #[test]
    fn stale_areas_go_live_ones_stay_and_task_dirs_vanish_when_dropped() {
        let base = tempfile::tempdir().expect("base");
        let stale = base.path().join("worker-crashed");
        std::fs::create_dir_all(stale.join("scan-x")).expect("stale dir");
        std::fs::write(stale.join(LOCK), b"").expect("stale lock");
        let (live, swept) = WorkArea::open(base.path(), "host:1:abc").expect("first");
        assert_eq!(swept.removed, 1);
        assert!(!stale.exists());

        let (other, swept) = WorkArea::open(base.path(), "host:2:def").expect("second");
        assert_eq!(swept.removed, 0, "a live worker's area is not stale");
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
