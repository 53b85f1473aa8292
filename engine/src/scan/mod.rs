//! The secret scanner: rules, the matcher, the sources it reads (git history, staged
//! changes, plain files) and the report it produces. Knows nothing of HTTP, AMQP or SQL;
//! the CLI and the worker call the same code.
//!
//! Work is spread over a pool of threads fed through a bounded channel, so memory stays
//! bounded by (threads + queue) × largest scanned blob, whatever the repository's size.

// Not yet called by the scan, which will expand the archives it meets with it.
mod archive;
mod checksum;
mod decode;
pub mod detect;
mod files;
mod git;
mod history;
mod largest;
mod leaks;
pub mod memo;
pub mod report;
pub mod rules;
pub mod settings;

use std::collections::{BinaryHeap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::git::objects::Oid;
pub use crate::git::{clone_mirror, redact_url_userinfo};
pub use detect::{Allowlist, Detector, Hit, Seen};
pub use largest::DEFAULT_LARGEST_BLOBS;
pub use report::{
    Author, Encoding, FileFinding, FileKind, HashKey, LargeBlob, Occurrence, OccurrenceKind,
    Report, Secret, SecretValue, SkipReason, Skipped, Source, Stats,
};
pub use rules::{Confidence, Kind, Rule, RuleError, RuleSet, RuleSpec};
pub use settings::Settings;

use report::Findings;

/// Blobs larger than this are skipped (and reported as skipped) unless configured.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 10 << 20;

/// Git's own heuristic: a NUL byte in the first 8000 bytes means binary.
const BINARY_PROBE: usize = 8000;

/// Whether a blob is binary: a NUL byte among its first [`BINARY_PROBE`].
pub(crate) fn is_binary(data: &[u8]) -> bool {
    memchr::memchr(0, &data[..data.len().min(BINARY_PROBE)]).is_some()
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}")]
    Rules(#[from] RuleError),
    #[error("{origin}: {problem}")]
    Settings { origin: String, problem: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("git {command} failed: {message}")]
    Git { command: String, message: String },
    #[error("the scan was cancelled")]
    Cancelled,
}

impl From<crate::git::GitError> for ScanError {
    fn from(e: crate::git::GitError) -> Self {
        Self::Git {
            command: e.command,
            message: e.message,
        }
    }
}

/// Which part of a repository's history to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revisions {
    /// Every ref: branches, tags, remote-tracking refs, notes, stash, HEAD.
    All,
    /// Commits reachable from HEAD but not from this revision.
    Since(String),
    /// A git range such as `A..B`.
    Range(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A repository's history (bare or not).
    Git { repo: PathBuf, revisions: Revisions },
    /// What is staged in a repository's index (a pre-commit hook).
    Staged { repo: PathBuf },
    /// A directory or a single file, read from disk with no git.
    Files { root: PathBuf },
}

/// Live counters, readable while a scan runs (progress bars, task progress).
#[derive(Debug, Default)]
pub struct Progress {
    discovered: AtomicU64,
    scanned: AtomicU64,
    bytes: AtomicU64,
    skipped: AtomicU64,
    unread: AtomicU64,
    messages: AtomicU64,
    commits: AtomicU64,
    /// Set once every blob to scan is known.
    enumeration_done: AtomicBool,
}

impl Progress {
    /// Blobs or files found so far (the total once `enumeration_done`).
    pub fn discovered(&self) -> u64 {
        self.discovered.load(Ordering::Relaxed)
    }
    /// Blobs or files finished (scanned or skipped).
    pub fn done(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed) + self.skipped.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn enumeration_done(&self) -> bool {
        self.enumeration_done.load(Ordering::Relaxed)
    }
}

/// One scanner, configured once, usable for many scans (and from many threads).
pub struct Scanner {
    detector: Detector,
    hash_key: HashKey,
    max_blob_size: u64,
    threads: usize,
    suppressed: HashSet<String>,
    largest_blobs: usize,
}

/// Everything one scan needs besides the scanner.
#[derive(Default)]
pub struct ScanRun<'a> {
    pub progress: Option<&'a Progress>,
    pub cancel: Option<&'a AtomicBool>,
}

impl Scanner {
    /// A scanner with the embedded rules and the given settings applied.
    pub fn new(settings: &Settings) -> Result<Self, ScanError> {
        Ok(Self {
            detector: settings.detector()?,
            hash_key: HashKey::builtin(),
            max_blob_size: settings.max_file_size().unwrap_or(DEFAULT_MAX_BLOB_SIZE),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            suppressed: HashSet::new(),
            largest_blobs: DEFAULT_LARGEST_BLOBS,
        })
    }

    pub fn with_hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = key;
        self
    }

    pub fn with_max_blob_size(mut self, bytes: u64) -> Self {
        self.max_blob_size = bytes;
        self
    }

    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// How many of the largest blobs a history scan lists (`Report::largest_blobs`);
    /// 0 lists none.
    pub fn with_largest_blobs(mut self, count: usize) -> Self {
        self.largest_blobs = count;
        self
    }

    /// Fingerprints never reported (`.deployguardignore`, a baseline's secrets).
    pub fn suppress(mut self, fingerprints: impl IntoIterator<Item = String>) -> Self {
        self.suppressed.extend(fingerprints);
        self
    }

    pub fn rules(&self) -> &[Rule] {
        self.detector.rules()
    }

    pub fn hash_key(&self) -> &HashKey {
        &self.hash_key
    }

    pub fn scan(&self, target: &Target, run: &ScanRun<'_>) -> Result<Report, ScanError> {
        let started = Instant::now();
        let own_progress = Progress::default();
        let progress = run.progress.unwrap_or(&own_progress);
        // Sizes in history: what a directory or the index holds is no clone's weight.
        let largest_blobs = match target {
            Target::Git { .. } => self.largest_blobs,
            Target::Staged { .. } | Target::Files { .. } => 0,
        };
        let ctx = Context {
            scanner: self,
            progress,
            cancel: run.cancel,
            skipped: Mutex::new(BinaryHeap::new()),
            memo: memo::Memo::default(),
            largest: Mutex::new(largest::Largest::new(largest_blobs)),
            largest_floor: AtomicU64::new(if largest_blobs == 0 { u64::MAX } else { 0 }),
        };
        let (source, findings, refs) = match target {
            Target::Git { repo, revisions } => {
                let (findings, refs) = git::scan_history(&ctx, repo, revisions)?;
                let revisions = match revisions {
                    Revisions::All => "--all".to_owned(),
                    Revisions::Since(rev) => format!("{rev}..HEAD"),
                    Revisions::Range(range) => range.clone(),
                };
                let source = Source {
                    kind: "git".into(),
                    location: display_path(repo),
                    revisions: Some(revisions),
                };
                (source, findings, refs)
            }
            Target::Staged { repo } => {
                let findings = git::scan_staged(&ctx, repo)?;
                (
                    Source {
                        kind: "staged".into(),
                        location: display_path(repo),
                        revisions: None,
                    },
                    findings,
                    0,
                )
            }
            Target::Files { root } => {
                let (findings, kind) = files::scan_files(&ctx, root)?;
                (
                    Source {
                        kind: kind.into(),
                        location: display_path(root),
                        revisions: None,
                    },
                    findings,
                    0,
                )
            }
        };
        let (mut secrets, mut files, suppressed) =
            findings.into_secrets(self.detector.rules(), &self.hash_key, &self.suppressed);
        if let Target::Git { repo, .. } = target {
            git::attribute(repo, &mut secrets, &mut files);
        }
        let skipped = ctx
            .skipped
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_sorted_vec();
        let largest_blobs = (ctx.largest.into_inner())
            .unwrap_or_else(|e| e.into_inner())
            .into_list();
        let stats = Stats {
            commits: progress.commits.load(Ordering::Relaxed),
            refs,
            blobs_scanned: progress.scanned.load(Ordering::Relaxed),
            bytes_scanned: progress.bytes(),
            blobs_skipped: progress.skipped.load(Ordering::Relaxed),
            blobs_unread: progress.unread.load(Ordering::Relaxed),
            messages_scanned: progress.messages.load(Ordering::Relaxed),
            secrets_suppressed: suppressed,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        Ok(Report {
            version: report::REPORT_VERSION,
            tool: report::Tool::current(),
            source,
            hash_key_id: self.hash_key.id().to_owned(),
            stats,
            skipped,
            secrets,
            files,
            largest_blobs,
        })
    }
}

/// True when `path` is (inside) a git repository.
pub fn is_repository(path: &Path) -> bool {
    crate::git::is_repository(path)
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}

/// Where a piece of scanned content came from.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    pub path: Option<String>,
    pub commit: Option<String>,
    pub kind: OccurrenceKind,
}

pub(crate) struct Item {
    pub data: Vec<u8>,
    pub origin: Origin,
    /// The git blob `data` is, when it is one: file findings name it.
    pub blob: Option<Oid>,
}

/// State shared by the threads of one scan.
pub(crate) struct Context<'a> {
    scanner: &'a Scanner,
    progress: &'a Progress,
    cancel: Option<&'a AtomicBool>,
    /// The first [`report::SKIPPED_LISTED`] skipped, in the report's order (threads
    /// meet them in any order; a report is the same each time).
    skipped: Mutex<BinaryHeap<Skipped>>,
    /// The keyword search over text met before in this scan.
    memo: memo::Memo,
    /// The largest blobs met, for history scans.
    largest: Mutex<largest::Largest>,
    /// A size below which a blob cannot enter `largest`: most blobs are turned away
    /// without taking the lock.
    largest_floor: AtomicU64,
}

impl Context<'_> {
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    pub(crate) fn path_allowed(&self, path: &str) -> bool {
        self.scanner.detector.path_allowed(path)
    }

    pub(crate) fn max_blob_size(&self) -> u64 {
        self.scanner.max_blob_size
    }

    /// Offers a blob to the largest-blobs listing: every blob of a history, scanned or
    /// not (too large, binary), counts by its size.
    pub(crate) fn blob_sized(&self, oid: Oid, size: u64, origin: &Origin) {
        if size < self.largest_floor.load(Ordering::Relaxed) {
            return;
        }
        let mut largest = self.largest.lock().unwrap_or_else(|e| e.into_inner());
        largest.offer(oid, size, origin);
        (self.largest_floor).store(largest.floor(), Ordering::Relaxed);
    }

    pub(crate) fn discovered(&self) {
        self.progress.discovered.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn commit_seen(&self) {
        self.progress.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message scanned outside [`Context::scan_item`].
    pub(crate) fn message_scanned(&self, bytes: usize) {
        self.progress.messages.fetch_add(1, Ordering::Relaxed);
        self.progress
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn enumeration_done(&self) {
        self.progress
            .enumeration_done
            .store(true, Ordering::Relaxed);
    }

    pub(crate) fn skip(&self, origin: &Origin, size: u64, reason: SkipReason) {
        self.progress.skipped.fetch_add(1, Ordering::Relaxed);
        if reason != SkipReason::Binary {
            self.progress.unread.fetch_add(1, Ordering::Relaxed);
        }
        self.list_skipped(origin, size, reason);
    }

    fn list_skipped(&self, origin: &Origin, size: u64, reason: SkipReason) {
        let mut skipped = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        skipped.push(Skipped {
            path: origin.path.clone(),
            commit: origin.commit.clone(),
            size,
            reason,
        });
        if skipped.len() > report::SKIPPED_LISTED {
            skipped.pop();
        }
    }

    /// Records part of a scanned blob (an archive's member) as not read: listed, and
    /// counted as unread, while the blob itself counts as scanned.
    pub(crate) fn skip_part(&self, origin: &Origin, reason: SkipReason) {
        self.progress.unread.fetch_add(1, Ordering::Relaxed);
        self.list_skipped(origin, 0, reason);
    }

    /// Runs `feed` on this thread while a pool of workers scans what it sends.
    pub(crate) fn run_pool<F>(&self, feed: F) -> Result<Findings, ScanError>
    where
        F: FnOnce(&crossbeam_channel::Sender<Item>) -> Result<(), ScanError>,
    {
        let threads = self.scanner.threads;
        let (tx, rx) = crossbeam_channel::bounded::<Item>(threads * 4);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let rx = rx.clone();
                    scope.spawn(move || {
                        let mut findings = Findings::default();
                        let mut hits = Vec::new();
                        for item in rx {
                            if self.cancelled() {
                                continue;
                            }
                            let since = findings.file_count();
                            self.scan_item(
                                &item.data,
                                &item.origin,
                                None,
                                &mut hits,
                                &mut findings,
                            );
                            if let Some(blob) = item.blob {
                                findings.name_blob(since, || blob.to_hex());
                            }
                        }
                        findings
                    })
                })
                .collect();
            drop(rx);
            let fed = feed(&tx);
            drop(tx);
            let mut all = Findings::default();
            for worker in workers {
                match worker.join() {
                    Ok(findings) => all.merge(findings),
                    Err(_) => {
                        return Err(ScanError::Io {
                            path: "scanner".into(),
                            message: "a scanning thread panicked".into(),
                        });
                    }
                }
            }
            fed?;
            if self.cancelled() {
                return Err(ScanError::Cancelled);
            }
            Ok(all)
        })
    }

    /// Scans one blob, file or message, recording its findings.
    /// `seen` is what detection found in `data`, when it was run ahead (see
    /// [`Detector::see`]).
    pub(crate) fn scan_item(
        &self,
        data: &[u8],
        origin: &Origin,
        seen: Option<&Seen>,
        hits: &mut Vec<Hit>,
        findings: &mut Findings,
    ) {
        if origin.kind == OccurrenceKind::File {
            // Reported besides what detection finds in it, which runs as before.
            let leaked = self.leaked_file(data, origin, findings);
            let archive = archive::sniff(data).is_some();
            let binary = is_binary(data);
            if archive || binary {
                let mut local = Findings::default();
                let read = match (archive, binary) {
                    (true, _) => {
                        self.expand(data, origin, hits, &mut local);
                        // Text that merely begins like an archive (`BZh91AY&SY…`) is read
                        // as text too: a magic number must not hide what follows it.
                        if !binary {
                            self.detect(data, origin, seen, hits, &mut local);
                        }
                        true
                    }
                    // A KeePass database or a key store by name is read as far as it
                    // can be.
                    (false, _) => self.binary(data, origin, hits, &mut local) || leaked,
                };
                if !read {
                    self.skip(origin, data.len() as u64, SkipReason::Binary);
                    return;
                }
                self.progress.scanned.fetch_add(1, Ordering::Relaxed);
                (self.progress.bytes).fetch_add(data.len() as u64, Ordering::Relaxed);
                findings.merge(local);
                return;
            }
            self.progress.scanned.fetch_add(1, Ordering::Relaxed);
        } else {
            self.progress.messages.fetch_add(1, Ordering::Relaxed);
        }
        self.progress
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.detect(data, origin, seen, hits, findings);
    }

    /// Reads what binary `data` holds that can be read: UTF-16 text, or a key store
    /// (a file finding). False when it holds neither.
    fn binary(
        &self,
        data: &[u8],
        origin: &Origin,
        hits: &mut Vec<Hit>,
        findings: &mut Findings,
    ) -> bool {
        if let Some((text, order)) = decode::utf16_text(data) {
            let mut local = Findings::default();
            self.detect(&text, origin, None, hits, &mut local);
            findings.merge(local.transcoded(Encoding::Utf16, |t| order.encode(t)));
            return true;
        }
        if let Some(store) = archive::keystore(data, origin.path.as_deref()) {
            // One named `.p12` or `.pfx` was reported by its name (`leaked_file`).
            if !(origin.path.as_deref()).is_some_and(leaks::is_pkcs12_name) {
                let kind = leaks::keystore_kind(store);
                findings.add_file(self.file_finding(kind, data, origin));
            }
            return true;
        }
        false
    }

    /// Reports `data` as a file whose presence is the leak when its name and a look at
    /// its content say so (a private key, a KeePass database, a filled-in `.env`). True
    /// when it did.
    fn leaked_file(&self, data: &[u8], origin: &Origin, findings: &mut Findings) -> bool {
        let Some(kind) = (origin.path.as_deref()).and_then(|path| leaks::kind(path, data)) else {
            return false;
        };
        findings.add_file(self.file_finding(kind, data, origin));
        true
    }

    fn file_finding(&self, kind: FileKind, data: &[u8], origin: &Origin) -> FileFinding {
        FileFinding {
            id: (self.scanner.hash_key).fingerprint(&kind.rule_id(), data),
            path: origin.path.clone(),
            member: None,
            commit: origin.commit.clone(),
            blob: None,
            kind,
            size: data.len() as u64,
            author: None,
        }
    }

    /// Scans the members of the archive or compressed stream `data`, within
    /// [`archive::Limits`]; what could not be read is reported as skipped.
    fn expand(&self, data: &[u8], origin: &Origin, hits: &mut Vec<Hit>, findings: &mut Findings) {
        let limits = archive::Limits {
            max_member_bytes: self.max_blob_size(),
            ..archive::Limits::default()
        };
        let mut local = Findings::default();
        let mut visit = |member: archive::Member<'_>| {
            if self.cancelled() {
                return;
            }
            // Detection reads the member's own path (a lock file in a jar is one).
            let inner = Origin {
                path: Some(member.path.to_owned()),
                commit: origin.commit.clone(),
                kind: OccurrenceKind::File,
            };
            let mut found = Findings::default();
            self.leaked_file(member.data, &inner, &mut found);
            match is_binary(member.data) {
                true => {
                    // Images and class files in a jar are no news: not listed.
                    self.binary(member.data, &inner, hits, &mut found);
                }
                false => self.detect(member.data, &inner, None, hits, &mut found),
            }
            local.merge(found.within(origin.path.as_deref()));
        };
        // A decoder's bug on hostile data costs this archive, not the scan: it is listed
        // as corrupt, with what was found before it.
        let expanded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            archive::expand(data, origin.path.as_deref(), &limits, &mut visit)
        }));
        let refusals = expanded.unwrap_or_else(|_| {
            vec![archive::Refusal {
                path: String::new(),
                reason: archive::RefusalReason::Corrupt,
            }]
        });
        findings.merge(local);
        for refusal in refusals {
            let reason = match refusal.reason {
                archive::RefusalReason::Bomb => SkipReason::ArchiveBomb,
                archive::RefusalReason::TooDeep => SkipReason::ArchiveTooDeep,
                archive::RefusalReason::TooManyMembers => SkipReason::ArchiveTooManyMembers,
                archive::RefusalReason::MemberTooLarge
                | archive::RefusalReason::ExpandedTooLarge => SkipReason::TooLarge,
                archive::RefusalReason::Encrypted => SkipReason::Encrypted,
                archive::RefusalReason::Unsupported => SkipReason::Unreadable,
                archive::RefusalReason::Corrupt => SkipReason::Corrupt,
            };
            let path = match (&origin.path, refusal.path.is_empty()) {
                (Some(path), false) => Some(format!("{path}!/{}", refusal.path)),
                (path, _) => path.clone(),
            };
            let at = Origin {
                path,
                commit: origin.commit.clone(),
                kind: OccurrenceKind::File,
            };
            self.skip_part(&at, reason);
        }
    }

    /// Scans `data` into `findings`, counting nothing.
    pub(crate) fn detect(
        &self,
        data: &[u8],
        origin: &Origin,
        seen: Option<&Seen>,
        hits: &mut Vec<Hit>,
        findings: &mut Findings,
    ) {
        hits.clear();
        let path = origin
            .path
            .as_deref()
            .filter(|_| origin.kind == OccurrenceKind::File);
        let detector = &self.scanner.detector;
        match seen {
            Some(seen) => detector.seen_hits(seen, path, hits),
            None => detector.scan_remembering(data, path, hits, Some(&self.memo)),
        }
        // A multi-part secret's parts, found beside it. A part that a rule finds on its
        // own (an AWS key id) is reported on its own too: it is a finding by itself.
        let rules = detector.rules();
        let parts: Vec<Vec<(String, Vec<u8>)>> = (hits.iter())
            .map(|hit| {
                let rule = &rules[hit.rule];
                if rule.parts.is_empty() {
                    return Vec::new();
                }
                let found = detector.parts(rule, data, hit.start, hit.end);
                (found.into_iter().zip(&rule.parts))
                    .filter(|(_, part)| !part.context)
                    .filter_map(|(at, part)| {
                        let (a, b) = at?;
                        Some((part.name.clone(), data[a..b].to_vec()))
                    })
                    .collect()
            })
            .collect();
        let mut line = 1u32;
        let mut line_start = 0usize;
        let mut counted_to = 0usize;
        let mut decoded = Vec::new();
        for (hit, parts) in hits.iter().zip(parts) {
            // Hits are sorted by start; an equal start needs no recount.
            if hit.start >= counted_to {
                for newline in memchr::memchr_iter(b'\n', &data[counted_to..hit.start]) {
                    line += 1;
                    line_start = counted_to + newline + 1;
                }
                counted_to = hit.start;
            }
            let column = u32::try_from(hit.start - line_start + 1).unwrap_or(u32::MAX);
            let occurrence = |encoding| Occurrence {
                path: origin.path.clone(),
                line,
                column,
                commit: origin.commit.clone(),
                kind: origin.kind.clone(),
                encoding,
                member: None,
                author: None,
            };
            let value = &data[hit.start..hit.end];
            let kind = detector.rules()[hit.rule].kind;
            if let Some(encoding) = kind.encoding() {
                // Reported under the rule that found it in the decoded text; the clean
                // removes the encoded text.
                decoded.clear();
                detector.decoded(kind, data, (hit.start, hit.end), &mut decoded);
                // What is generic in a lock file is a hash or an id, decoded or not.
                let lock_file = path.is_some_and(detect::is_lock_file);
                decoded.retain(|found| !(lock_file && rules[found.rule].kind == Kind::Generic));
                // Where another rule read the escapes themselves (a URL's password holding
                // `%40`), the text is that rule's.
                if matches!(kind, Kind::Percent | Kind::Escaped) {
                    decoded.retain(|found| {
                        !hits.iter().any(|other| {
                            other.escaped
                                && rules[other.rule].kind.encoding().is_none()
                                && rules[other.rule].kind != Kind::Generic
                                && other.start < found.span.1
                                && found.span.0 < other.end
                        })
                    });
                }
                for found in decoded.drain(..) {
                    let (from, to) = found.span;
                    let encoded = &data[from..to];
                    // A secret written as itself beside escapes (a URL's password after
                    // `https:\/\/`) is reported as plain text is.
                    let as_itself = encoded == found.value;
                    let mut at = occurrence((!as_itself).then_some(encoding));
                    // Where the text spelling it starts (the encoded text has no line
                    // breaks).
                    let offset = u32::try_from(from - hit.start).unwrap_or(0);
                    at.column = at.column.saturating_add(offset);
                    match as_itself {
                        true => findings.add(found.rule, found.value, at),
                        false => findings.add_encoded(found.rule, found.value, encoded, at),
                    }
                }
            } else if !parts.is_empty() {
                findings.add_with_parts(hit.rule, value.to_vec(), parts, occurrence(None));
            } else {
                findings.add(hit.rule, value.to_vec(), occurrence(None));
            }
        }
    }
}
