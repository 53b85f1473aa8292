//! Removing selected secrets from a repository's whole history.
//!
//! [`clean`] works on a private copy (a bare repository in a work directory that
//! borrows the source's objects, or the objects of a bundle) and never changes the
//! source. It reads every object once, rewrites only what holds a selected value and
//! everything above it (trees, commits, tags), keeps every other object by id, points
//! every ref at the new history, and then writes a bundle of the new refs while
//! checking that no object in it holds a selected value. Nothing is written if that
//! check fails.

mod package;
pub mod paths;
mod rewrite;
pub mod selection;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use serde::Serialize;

use crate::git::objects::{ObjectFormat, Oid};
use crate::git::{self, GitError};

pub use package::{ArchiveFormat, write_archive};
pub use paths::{FileSelection, parse_size};
pub use selection::{DEFAULT_REPLACEMENT, Select, Selection, SelectionError};

/// Refs that forges keep for themselves and refuse on push.
const FORGE_REF_PREFIXES: &[&str] = &[
    "refs/pull/",
    "refs/changes/",
    "refs/merge-requests/",
    "refs/keep-around/",
];

#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("{0}")]
    Git(#[from] GitError),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Source(String),
    #[error(
        "verification failed: {count} object(s) of the cleaned history still hold a selected \
         value (first: {kind} {oid}); no output was written"
    )]
    Verification {
        count: usize,
        kind: &'static str,
        oid: String,
    },
    #[error("a selected value occurs in a file name, and removing it would make {0}")]
    Name(String),
    #[error(
        "verification failed: {0} path(s) that a selected pattern removes remain in the \
         cleaned history; no output was written"
    )]
    PathsRemain(usize),
    #[error("cannot protect {0:?}: the repository has no such ref")]
    UnknownRef(String),
    #[error("cleaning was cancelled")]
    Cancelled,
}

/// How to clean, besides what to remove.
#[derive(Clone, Debug, Default)]
pub struct CleanOptions {
    /// Refs whose tip commits keep their files exactly as they are (BFG's "protect
    /// HEAD"): `main`, `refs/heads/main`, `v1.0` or `HEAD`. What such a tip holds is
    /// kept wherever else it occurs in history; the report says what it still holds.
    pub protect_refs: Vec<String>,
    /// Drop commits that become empty (their tree the same as their parent's), pointing
    /// their children and refs at the parent. Commits that were empty before, merges
    /// and root commits are kept.
    pub prune_empty: bool,
    /// Where the repository is hosted (its URL), to tell the steps left on that
    /// platform; only the host is looked at. A repository's `origin` is used when this
    /// is not given.
    pub source_url: Option<String>,
}

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> CleanError + '_ {
    move |e| CleanError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Where a clean is, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Preparing,
    Reading,
    Rewriting,
    Verifying,
    Done,
}

/// Live counters, readable while a clean runs.
#[derive(Debug, Default)]
pub struct CleanProgress {
    phase: AtomicU8,
    objects_read: AtomicU64,
    bytes_read: AtomicU64,
    objects_written: AtomicU64,
    objects_verified: AtomicU64,
}

impl CleanProgress {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Preparing,
            1 => Phase::Reading,
            2 => Phase::Rewriting,
            3 => Phase::Verifying,
            _ => Phase::Done,
        }
    }

    pub fn objects_read(&self) -> u64 {
        self.objects_read.load(Ordering::Relaxed)
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    pub fn objects_written(&self) -> u64 {
        self.objects_written.load(Ordering::Relaxed)
    }

    pub fn objects_verified(&self) -> u64 {
        self.objects_verified.load(Ordering::Relaxed)
    }
}

/// Progress and cancellation for one clean.
#[derive(Clone, Copy, Default)]
pub struct CleanRun<'a> {
    pub progress: Option<&'a CleanProgress>,
    pub cancel: Option<&'a AtomicBool>,
}

impl CleanRun<'_> {
    fn check(&self) -> Result<(), CleanError> {
        match self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(CleanError::Cancelled),
            _ => Ok(()),
        }
    }

    fn phase(&self, phase: Phase) {
        if let Some(p) = self.progress {
            p.phase.store(phase as u8, Ordering::Relaxed);
        }
    }

    fn read(&self, bytes: usize) {
        if let Some(p) = self.progress {
            p.objects_read.fetch_add(1, Ordering::Relaxed);
            p.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn written(&self) {
        if let Some(p) = self.progress {
            p.objects_written.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn verified(&self, n: u64) {
        if let Some(p) = self.progress {
            p.objects_verified.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Milliseconds spent in each step of a clean.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    pub prepare: u64,
    pub read: u64,
    pub rewrite: u64,
    pub bundle_and_verify: u64,
}

fn millis(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One ref before and after.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RefChange {
    pub name: String,
    pub old: String,
    pub new: String,
}

/// An object whose signature no longer matched after rewriting and was dropped.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DroppedSignature {
    pub kind: &'static str,
    /// The id the signed object had before the clean.
    pub old: String,
}

/// The whole files a clean removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FilesRemoved {
    /// The path patterns selected.
    pub patterns: Vec<String>,
    /// How many blob ids were selected.
    pub blob_ids: usize,
    /// Blobs bigger than this many bytes were selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bigger_than: Option<u64>,
    /// Tree entries dropped, over every rewritten tree: the files, and directories they
    /// left empty.
    pub entries_removed: u64,
    /// Distinct blobs dropped from at least one tree.
    pub blobs_removed: u64,
    /// Patterns and blob ids that matched nothing in the history (a warning).
    pub unmatched: Vec<String>,
}

/// A protected ref and what its tip still holds of the selection.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProtectedRef {
    pub name: String,
    pub commit: String,
    /// Blobs at the tip holding a selected value.
    pub values: u64,
    /// Files at the tip that were selected for removal.
    pub files: u64,
}

/// Where a ref's history starts to differ.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FirstChanged {
    pub name: String,
    /// The oldest rewritten commit on the ref's first-parent line, before the clean.
    pub old: String,
    /// The commit it became (its parent's new id when it was pruned).
    pub new: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CleanReport {
    pub object_format: &'static str,
    pub selected: usize,
    /// Whole files removed (by path, blob id or size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesRemoved>,
    /// Protected refs, with what their tips still hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<ProtectedRef>,
    /// Every ref of the cleaned repository, with its id before and after.
    pub refs: Vec<RefChange>,
    /// Refs that forges refuse on push (`refs/pull/*`, `refs/changes/*`, …): they are
    /// cleaned and in the bundle, but will not be pushed.
    pub forge_refs: Vec<String>,
    pub objects_read: u64,
    pub bytes_read: u64,
    pub commits: u64,
    pub commits_rewritten: u64,
    pub trees_rewritten: u64,
    pub blobs_rewritten: u64,
    pub tags_rewritten: u64,
    /// Commits dropped because they became empty (with `prune_empty`).
    pub commits_pruned: u64,
    /// For every ref whose history changed, its first changed commit.
    pub first_changed: Vec<FirstChanged>,
    /// Commit ids quoted in commit messages, rewritten to the new ids.
    pub message_ids_rewritten: u64,
    /// Quoted ids of rewritten commits that could not be rewritten (the commit was on
    /// another branch, not rewritten yet): they name commits that no longer exist.
    pub message_ids_unmapped: Vec<String>,
    /// Git LFS objects no pointer of the cleaned history names any more: delete them
    /// from the LFS store.
    pub lfs_orphaned: Vec<String>,
    /// What is left to do, in order; docs/cleaning.md explains each step.
    pub next_steps: Vec<String>,
    pub signatures_dropped: Vec<DroppedSignature>,
    /// Objects in the bundle, all checked.
    pub objects_verified: u64,
    /// Of those, how many were new and read back for the check.
    pub objects_reread: u64,
    pub bundle_bytes: u64,
    /// Wall time of each step, in milliseconds.
    pub timings_ms: Timings,
    /// Every rewritten commit, old id to new (a pruned commit maps to its parent's).
    #[serde(serialize_with = "pairs")]
    pub commit_map: Vec<(Oid, Oid)>,
    /// The index (`.idx`) of the bundle's pack, in the work directory: with it,
    /// [`crate::git::bundle::unbundle`] opens the bundle without re-indexing it.
    #[serde(skip)]
    pub bundle_index: Option<PathBuf>,
}

fn pairs<S: serde::Serializer>(map: &[(Oid, Oid)], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(map.len()))?;
    for (old, new) in map {
        seq.serialize_element(&[old.to_hex(), new.to_hex()])?;
    }
    seq.end()
}

impl CleanReport {
    /// `old new` per rewritten commit, one per line, with a header line (the format of
    /// git-filter-repo's `commit-map`).
    pub fn commit_map_text(&self) -> String {
        let mut out = String::from("old new\n");
        for (old, new) in &self.commit_map {
            out.push_str(&format!("{old} {new}\n"));
        }
        out
    }

    /// Refs whose id changed.
    pub fn changed_refs(&self) -> impl Iterator<Item = &RefChange> {
        self.refs.iter().filter(|r| r.old != r.new)
    }
}

/// The repository being cleaned: a bare repository in the work directory.
pub(crate) struct WorkRepo {
    pub path: PathBuf,
    pub format: ObjectFormat,
    pub refs: Vec<(String, Oid)>,
    /// `HEAD` as a symbolic ref (`refs/heads/main`), if it is one.
    pub head_symref: Option<String>,
    /// `HEAD` as an id, when detached.
    pub head_detached: Option<Oid>,
}

/// Rewrites the history of `source` (a repository, bare or not, or a bundle file) so
/// that no selected value survives, and writes the verified result to `bundle`.
/// `work` is an empty directory the clean may fill (it is left for the caller to
/// remove; it holds the rewritten repository afterwards, at `work/repo.git`).
pub fn clean(
    source: &Path,
    work: &Path,
    selection: &Selection,
    options: &CleanOptions,
    bundle: &Path,
    run: &CleanRun<'_>,
) -> Result<CleanReport, CleanError> {
    run.phase(Phase::Preparing);
    let started = std::time::Instant::now();
    let work = std::fs::canonicalize(work).map_err(io_error(work))?;
    let mut repo = prepare(source, &work)?;
    // A ref's name goes into the bundle and to the remote as it is: a value in one
    // cannot be cleaned by rewriting objects. Named by kind only, not by name.
    let leaking: Vec<&str> = repo
        .refs
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(repo.head_symref.as_deref())
        .filter(|name| selection.is_match(name.as_bytes()))
        .collect();
    if !leaking.is_empty() {
        let kinds: std::collections::BTreeSet<&str> = leaking
            .iter()
            .map(|n| n.splitn(3, '/').take(2).last().unwrap_or("refs"))
            .collect();
        return Err(CleanError::Source(format!(
            "the names of {} ref(s) ({}) hold a selected value; rename them first \
             (git branch -m, or a new tag and git tag -d) and clean again",
            leaking.len(),
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let protected: Vec<(String, Oid)> = options
        .protect_refs
        .iter()
        .map(|name| resolve_ref(&repo, name))
        .collect::<Result<_, _>>()?;
    let host_hint = options.source_url.clone().or_else(|| origin_url(source));
    run.check()?;
    let prepared = millis(started);
    let tips: Vec<Oid> = protected.iter().map(|(_, oid)| *oid).collect();
    let targets: Vec<Oid> = (repo.refs.iter().map(|(_, oid)| *oid))
        .chain(repo.head_detached)
        .collect();
    let rewritten = rewrite::rewrite(
        &repo,
        selection,
        &rewrite::Options {
            protected_tips: &tips,
            prune_empty: options.prune_empty,
            ref_targets: &targets,
        },
        run,
    )?;

    let files = selection.files();
    let mut report = CleanReport {
        object_format: repo.format.name(),
        selected: selection.len(),
        files: (!files.is_empty()).then(|| FilesRemoved {
            patterns: files.patterns().to_vec(),
            blob_ids: files.blob_ids().len(),
            bigger_than: files.bigger_than(),
            entries_removed: rewritten.entries_removed,
            blobs_removed: rewritten.blobs_removed(),
            unmatched: rewritten.unmatched.clone(),
        }),
        protected: protected
            .iter()
            .zip(&rewritten.held)
            .map(|((name, oid), held)| ProtectedRef {
                name: name.clone(),
                commit: oid.to_hex(),
                values: held.values,
                files: held.files,
            })
            .collect(),
        objects_read: rewritten.objects_read,
        bytes_read: rewritten.bytes_read,
        commits: rewritten.commits,
        commits_rewritten: rewritten.commit_map.len() as u64 - rewritten.commits_pruned,
        trees_rewritten: rewritten.trees_rewritten,
        blobs_rewritten: rewritten.blobs_rewritten,
        tags_rewritten: rewritten.tags_rewritten,
        commits_pruned: rewritten.commits_pruned,
        message_ids_rewritten: rewritten.message_ids_rewritten,
        message_ids_unmapped: rewritten.message_ids_unmapped.clone(),
        signatures_dropped: rewritten.signatures_dropped.clone(),
        commit_map: rewritten.commit_map.clone(),
        timings_ms: Timings {
            prepare: prepared,
            read: rewritten.read_ms,
            rewrite: rewritten.rewrite_ms,
            bundle_and_verify: 0,
        },
        ..CleanReport::default()
    };
    // What the refs (and a detached HEAD) reach, as `git rev-list --objects --all`
    // would list it on the result.
    let old_roots: Vec<Oid> = repo
        .refs
        .iter()
        .map(|(_, oid)| *oid)
        .chain(repo.head_detached)
        .collect();
    let objects = rewritten.reachable(old_roots.iter().copied());
    let mut new_refs = Vec::with_capacity(repo.refs.len());
    for (name, old) in &repo.refs {
        let new = rewritten.new_target(old);
        if FORGE_REF_PREFIXES.iter().any(|p| name.starts_with(p)) {
            report.forge_refs.push(name.clone());
        }
        if let Some((first_old, first_new)) = rewritten.first_change_of(*old) {
            report.first_changed.push(FirstChanged {
                name: name.clone(),
                old: first_old.to_hex(),
                new: first_new.to_hex(),
            });
        }
        report.refs.push(RefChange {
            name: name.clone(),
            old: old.to_hex(),
            new: new.to_hex(),
        });
        new_refs.push((name.clone(), new));
    }
    report.lfs_orphaned = rewritten.lfs_orphaned(&repo.path, &objects)?;
    if new_refs != repo.refs {
        git::refs::write_packed(&repo.path, &new_refs)?;
    }
    if let Some(head) = repo.head_detached {
        let new = rewritten.new_target(&head);
        if new != head {
            git::output(
                &repo.path,
                &["update-ref", "--no-deref", "HEAD", &new.to_hex()],
            )?;
        }
        repo.head_detached = Some(new);
    }
    repo.refs = new_refs;
    run.check()?;

    run.phase(Phase::Verifying);
    let packaging = std::time::Instant::now();
    let new_targets: Vec<Oid> = (repo.refs.iter().map(|(_, oid)| *oid))
        .chain(repo.head_detached)
        .collect();
    let remaining = rewritten.verify_paths(&repo.path, selection, &objects, &new_targets)?;
    if remaining > 0 {
        return Err(CleanError::PathsRemain(remaining));
    }
    let packaged =
        package::write_verified_bundle(&repo, &rewritten, &objects, selection, bundle, run)?;
    report.objects_verified = packaged.objects;
    report.objects_reread = packaged.reread;
    report.bundle_bytes = packaged.bytes;
    report.bundle_index = Some(packaged.index);
    report.timings_ms.bundle_and_verify = millis(packaging);
    report.next_steps = steps::next_steps(&report, host_hint.as_deref());
    run.phase(Phase::Done);
    Ok(report)
}

/// A ref to protect, by its full name, a short name (`main`, `v1.0`) or `HEAD`.
fn resolve_ref(repo: &WorkRepo, name: &str) -> Result<(String, Oid), CleanError> {
    let find = |full: &str| {
        repo.refs
            .iter()
            .find(|(n, _)| n == full)
            .map(|(n, oid)| (n.clone(), *oid))
    };
    if name == "HEAD" {
        let head = match (&repo.head_symref, repo.head_detached) {
            (Some(target), _) => find(target),
            (None, Some(oid)) => Some(("HEAD".to_owned(), oid)),
            (None, None) => None,
        };
        return head.ok_or_else(|| CleanError::UnknownRef(name.to_owned()));
    }
    // git's own order (`git rev-parse NAME`): a tag before a branch of the same name.
    let candidates = [
        name.to_owned(),
        format!("refs/{name}"),
        format!("refs/tags/{name}"),
        format!("refs/heads/{name}"),
        format!("refs/remotes/{name}"),
    ];
    candidates
        .iter()
        .find_map(|full| find(full))
        .ok_or_else(|| CleanError::UnknownRef(name.to_owned()))
}

/// The `origin` remote's URL of a repository, if it has one.
fn origin_url(source: &Path) -> Option<String> {
    if source.is_file() {
        return None;
    }
    let url = git::output(source, &["config", "--get", "remote.origin.url"]).ok()?;
    let url = String::from_utf8_lossy(&url).trim().to_owned();
    (!url.is_empty()).then_some(url)
}

/// Sets up `work/repo.git`: borrowing the objects of a repository (nothing is copied),
/// or holding the objects of a bundle.
fn prepare(source: &Path, work: &Path) -> Result<WorkRepo, CleanError> {
    let path = work.join("repo.git");
    if path.exists() {
        return Err(CleanError::Source(format!(
            "{} already exists; the work directory must be empty",
            path.display()
        )));
    }
    if source.is_file() {
        return prepare_bundle(source, &path);
    }
    if !git::is_repository(source) {
        return Err(CleanError::Source(format!(
            "{}: not a git repository or bundle",
            source.display()
        )));
    }
    let shallow = git::output(source, &["rev-parse", "--is-shallow-repository"])?;
    if String::from_utf8_lossy(&shallow).trim() == "true" {
        return Err(CleanError::Source(format!(
            "{}: a shallow clone holds only part of the history; clone it in full \
             (`git clone --mirror`) and clean that",
            source.display()
        )));
    }
    let format = ObjectFormat::of(source)?;
    let objects = git::output(
        source,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "objects",
        ],
    )?;
    let objects = String::from_utf8_lossy(&objects).trim().to_owned();
    git::init_bare(&path, format)?;
    let alternates = path.join("objects").join("info").join("alternates");
    std::fs::write(&alternates, format!("{objects}\n")).map_err(io_error(&alternates))?;

    let refs = list_refs(source)?;
    let head_symref = git::output(source, &["symbolic-ref", "-q", "HEAD"])
        .ok()
        .map(|o| String::from_utf8_lossy(&o).trim().to_owned())
        .filter(|s| !s.is_empty());
    let head_detached = if head_symref.is_none() {
        git::output(source, &["rev-parse", "-q", "--verify", "HEAD"])
            .ok()
            .and_then(|o| Oid::from_hex(String::from_utf8_lossy(&o).trim().as_bytes()))
    } else {
        None
    };
    if refs.is_empty() {
        return Err(CleanError::Source(format!(
            "{}: the repository has no refs (no branches or tags), so there is nothing to clean",
            source.display()
        )));
    }
    git::refs::write_packed(&path, &refs)?;
    if let Some(head) = head_detached {
        git::output(&path, &["update-ref", "--no-deref", "HEAD", &head.to_hex()])?;
    }
    if let Some(target) = &head_symref {
        git::output(&path, &["symbolic-ref", "HEAD", target])?;
    }
    Ok(WorkRepo {
        path,
        format,
        refs,
        head_symref,
        head_detached,
    })
}

fn prepare_bundle(bundle: &Path, path: &Path) -> Result<WorkRepo, CleanError> {
    let not_bundle = || {
        CleanError::Source(format!(
            "{}: not a git repository or bundle",
            bundle.display()
        ))
    };
    if git::bundle_format(bundle).is_none() {
        return Err(not_bundle());
    }
    let bundle = std::fs::canonicalize(bundle).map_err(io_error(bundle))?;
    let header = git::bundle::Header::read(&bundle)?;
    if header
        .refs
        .iter()
        .all(|(name, _)| !name.starts_with("refs/"))
    {
        return Err(CleanError::Source(format!(
            "{}: the bundle has no refs, so there is nothing to clean",
            bundle.display()
        )));
    }
    git::bundle::unbundle(&bundle, None, path)?;
    let refs = list_refs(path)?;
    // Unbundling pointed HEAD at the branch the bundle's HEAD names, or detached it.
    let head_symref = header
        .head
        .and_then(|_| git::output(path, &["symbolic-ref", "-q", "HEAD"]).ok())
        .map(|o| String::from_utf8_lossy(&o).trim().to_owned())
        .filter(|s| !s.is_empty());
    let head_detached = header.head.filter(|_| head_symref.is_none());
    Ok(WorkRepo {
        path: path.to_path_buf(),
        format: header.format,
        refs,
        head_symref,
        head_detached,
    })
}

fn list_refs(repo: &Path) -> Result<Vec<(String, Oid)>, CleanError> {
    Ok(git::bundle::list_refs(repo)?)
}
