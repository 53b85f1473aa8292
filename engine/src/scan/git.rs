//! Reading a repository's history through the git CLI: commit ranges, the index, and the
//! whole history of a repository whose object store the pack reader does not take (the
//! whole history is otherwise read from the packs, see `history.rs`). One `git log --raw`
//! walk (oldest first) names every blob the first time a commit introduces it, so each
//! distinct blob is read exactly once, attributed to its earliest commit and path; a
//! single `git cat-file --batch` streams those blobs to the scanning threads as they are
//! named.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};

use crossbeam_channel::Sender;

use crate::git::objects::Oid;
use crate::git::{Running, command as git, is_repository, output};

use super::report::{Author, FileFinding, Findings, OccurrenceKind, Secret, SkipReason};
use super::{Context, Item, Origin, Revisions, ScanError};

/// Object ids as fixed-size keys (SHA-1 or SHA-256), for the seen-set.
fn oid_key(hex_id: &[u8]) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    match hex_id.len() {
        40 => hex::decode_to_slice(hex_id, &mut key[..20]).ok()?,
        64 => hex::decode_to_slice(hex_id, &mut key).ok()?,
        _ => return None,
    }
    Some(key)
}

fn is_null_oid(hex_id: &[u8]) -> bool {
    hex_id.iter().all(|&b| b == b'0')
}

/// Sets the author of every occurrence that names a commit, with one `git log` for all
/// of them. Best effort: a commit git cannot show (or a failing git) leaves `author`
/// unset, since the scan itself is complete without it.
pub(crate) fn attribute(repo: &Path, secrets: &mut [Secret], files: &mut [FileFinding]) {
    let commits: HashSet<&str> = secrets
        .iter()
        .flat_map(|s| &s.occurrences)
        .filter_map(|o| o.commit.as_deref())
        .chain(files.iter().filter_map(|f| f.commit.as_deref()))
        .collect();
    if commits.is_empty() {
        return;
    }
    let mut input = String::new();
    for commit in &commits {
        input.push_str(commit);
        input.push('\n');
    }
    // `%aN`/`%aE` apply the repository's .mailmap; NUL-separated since names may hold
    // anything but NUL.
    let Ok(out) = crate::git::output_with_input(
        repo,
        &[
            "log",
            "--no-walk=unsorted",
            // A commit a shallow clone lacks leaves only its own occurrences unnamed.
            "--ignore-missing",
            "--stdin",
            "--format=%H%x00%aN%x00%aE%x00%aI%x00",
        ],
        input.as_bytes(),
    ) else {
        return;
    };
    let authors = parse_authors(&out);
    for occurrence in secrets.iter_mut().flat_map(|s| &mut s.occurrences) {
        if let Some(commit) = &occurrence.commit {
            occurrence.author = authors.get(commit.as_str()).cloned();
        }
    }
    for file in files {
        if let Some(commit) = &file.commit {
            file.author = authors.get(commit.as_str()).cloned();
        }
    }
}

/// `git log --format=%H%x00%aN%x00%aE%x00%aI%x00` output, by commit id.
fn parse_authors(out: &[u8]) -> HashMap<String, Author> {
    let text = String::from_utf8_lossy(out);
    let mut fields = text.split('\0');
    let mut authors = HashMap::new();
    while let (Some(commit), Some(name), Some(email), Some(date)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    {
        let author = Author {
            name: name.to_owned(),
            email: email.to_owned(),
            date: date.to_owned(),
        };
        authors.insert(commit.trim().to_owned(), author);
    }
    authors
}

/// Scans every blob reachable from the selected revisions, and every commit and tag message.
pub(crate) fn scan_history(
    ctx: &Context<'_>,
    repo: &Path,
    revisions: &Revisions,
) -> Result<(Findings, u64), ScanError> {
    if !is_repository(repo) {
        return Err(ScanError::Io {
            path: repo.display().to_string(),
            message: "not a git repository".into(),
        });
    }
    if *revisions == Revisions::All
        && let Some(found) = super::history::scan_all(ctx, repo)?
    {
        return Ok(found);
    }
    let rev_args: Vec<String> = match revisions {
        Revisions::All => vec!["--all".into()],
        Revisions::Since(rev) => {
            check_revision_arg(rev)?;
            output(
                repo,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    &format!("{rev}^{{commit}}"),
                ],
            )
            .map_err(|_| ScanError::Git {
                command: "rev-parse".into(),
                message: format!("unknown revision {rev:?}"),
            })?;
            vec![format!("{rev}..HEAD")]
        }
        Revisions::Range(range) => {
            check_revision_arg(range)?;
            vec![range.clone()]
        }
    };
    let refs = if *revisions == Revisions::All {
        Some(list_refs(repo)?)
    } else {
        None
    };
    let ref_count = refs.as_ref().map_or(0, |r| r.count);

    let mut log = git(repo);
    log.args([
        "log",
        "--reverse",
        "--topo-order",
        "-m",
        "--root",
        "--raw",
        "--no-abbrev",
        "--no-renames",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "-z",
        "--format=commit %H%x00%B",
    ])
    .args(&rev_args)
    .arg("--")
    .stdout(Stdio::piped());

    let findings = ctx.run_pool(|work| {
        if let Some(refs) = &refs {
            scan_tag_messages(ctx, repo, &refs.tags, work)?;
        }
        with_blobs(ctx, repo, work, |requests| {
            if let Some(refs) = &refs {
                for (oid, path) in &refs.blobs {
                    let origin = Origin {
                        path: Some(path.clone()),
                        commit: None,
                        kind: OccurrenceKind::File,
                    };
                    requests.request(oid.as_bytes(), origin)?;
                }
            }
            stream_raw(ctx, log, "log", requests, work)
        })
    })?;
    Ok((findings, ref_count))
}

/// Scans the blobs staged in the index that differ from HEAD (everything staged in a
/// repository without commits).
pub(crate) fn scan_staged(ctx: &Context<'_>, repo: &Path) -> Result<Findings, ScanError> {
    if !is_repository(repo) {
        return Err(ScanError::Io {
            path: repo.display().to_string(),
            message: "not a git repository".into(),
        });
    }
    let base = if output(repo, &["rev-parse", "--verify", "--quiet", "HEAD"]).is_ok() {
        "HEAD".to_owned()
    } else {
        let empty = output(repo, &["hash-object", "-t", "tree", "/dev/null"])?;
        String::from_utf8_lossy(&empty).trim().to_owned()
    };
    let mut diff = git(repo);
    // In a pre-commit hook of `git commit -a` or `git commit <paths>`, git names a
    // temporary index that holds what is being committed.
    if let Some(index) = std::env::var_os("GIT_INDEX_FILE") {
        let index = Path::new(&index);
        let index = if index.is_absolute() {
            index.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| ScanError::Io {
                    path: ".".into(),
                    message: e.to_string(),
                })?
                .join(index)
        };
        diff.env("GIT_INDEX_FILE", index);
    }
    diff.args([
        "diff",
        "--cached",
        "--raw",
        "-z",
        "--no-abbrev",
        "--no-renames",
        "--no-ext-diff",
        "--no-textconv",
        "--no-color",
    ])
    .arg(&base)
    .arg("--")
    .stdout(Stdio::piped());
    ctx.run_pool(|work| {
        with_blobs(ctx, repo, work, |requests| {
            stream_raw(ctx, diff, "diff", requests, work)
        })
    })
}

/// Runs a `--raw -z` producing command and feeds what it names to the pool.
fn stream_raw(
    ctx: &Context<'_>,
    command: Command,
    what: &str,
    requests: &mut Requests<'_, '_>,
    work: &Sender<Item>,
) -> Result<(), ScanError> {
    let mut running = Running::spawn(command, what)?;
    let stdout = running
        .child()
        .stdout
        .take()
        .ok_or_else(|| ScanError::Git {
            command: what.into(),
            message: "no output pipe".into(),
        })?;
    if let Err(e) = parse_raw(
        ctx,
        BufReader::with_capacity(1 << 20, stdout),
        requests,
        work,
    ) {
        drop(running);
        return Err(e);
    }
    running.finish()?;
    ctx.enumeration_done();
    Ok(())
}

/// Revisions come from users and CI configuration: never let one turn into an option.
fn check_revision_arg(rev: &str) -> Result<(), ScanError> {
    if rev.is_empty() || rev.starts_with('-') || rev.contains('\0') {
        return Err(ScanError::Git {
            command: "log".into(),
            message: format!("invalid revision {rev:?}"),
        });
    }
    Ok(())
}

struct Refs {
    count: u64,
    /// Annotated tags: (tag object id, ref name).
    tags: Vec<(String, String)>,
    /// Blobs that refs point at directly or through a tree: (blob id, path or ref name).
    blobs: Vec<(String, String)>,
}

fn list_refs(repo: &Path) -> Result<Refs, ScanError> {
    let out = output(
        repo,
        &[
            "for-each-ref",
            "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype) %(refname)",
        ],
    )?;
    let mut refs = Refs {
        count: 0,
        tags: Vec::new(),
        blobs: Vec::new(),
    };
    for line in String::from_utf8_lossy(&out).lines() {
        let mut fields = line.splitn(5, ' ');
        let (Some(oid), Some(kind), Some(peeled), Some(peeled_kind), Some(name)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        refs.count += 1;
        if kind == "tag" {
            refs.tags.push((oid.to_owned(), name.to_owned()));
        }
        let (target, target_kind) = if kind == "tag" {
            (peeled, peeled_kind)
        } else {
            (oid, kind)
        };
        match target_kind {
            "blob" => refs.blobs.push((target.to_owned(), name.to_owned())),
            "tree" => {
                let listing = output(repo, &["ls-tree", "-r", "-z", "--full-tree", target])?;
                for entry in listing.split(|&b| b == 0).filter(|e| !e.is_empty()) {
                    let entry = String::from_utf8_lossy(entry);
                    let Some((meta, path)) = entry.split_once('\t') else {
                        continue;
                    };
                    let mut meta = meta.split(' ');
                    if let (Some(_mode), Some("blob"), Some(blob)) =
                        (meta.next(), meta.next(), meta.next())
                    {
                        refs.blobs.push((blob.to_owned(), format!("{name}:{path}")));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(refs)
}

/// Annotated tags carry messages of their own; a tag of a tag is followed to the inner
/// tag, whose message is scanned too.
fn scan_tag_messages(
    ctx: &Context<'_>,
    repo: &Path,
    tags: &[(String, String)],
    work: &Sender<Item>,
) -> Result<(), ScanError> {
    let mut pending: Vec<(String, String)> = tags.to_vec();
    let mut seen: HashSet<String> = HashSet::new();
    while !pending.is_empty() {
        pending.retain(|(oid, _)| seen.insert(oid.clone()));
        pending = scan_tag_round(ctx, repo, &pending, work)?;
    }
    Ok(())
}

/// Scans one batch of tag objects; returns the inner tags they point at.
fn scan_tag_round(
    ctx: &Context<'_>,
    repo: &Path,
    tags: &[(String, String)],
    work: &Sender<Item>,
) -> Result<Vec<(String, String)>, ScanError> {
    let mut inner = Vec::new();
    if tags.is_empty() {
        return Ok(inner);
    }
    let mut command = git(repo);
    command
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut running = Running::spawn(command, "cat-file")?;
    let mut stdin = running.child().stdin.take();
    let stdout = running
        .child()
        .stdout
        .take()
        .ok_or_else(|| ScanError::Git {
            command: "cat-file".into(),
            message: "no output pipe".into(),
        })?;
    let ids: Vec<u8> = tags
        .iter()
        .flat_map(|(oid, _)| format!("{oid}\n").into_bytes())
        .collect();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&ids);
        }
    });
    let mut reader = BufReader::new(stdout);
    let mut outcome = Ok(());
    for (_, name) in tags {
        if ctx.cancelled() {
            outcome = Err(ScanError::Cancelled);
            break;
        }
        let object = match read_object(&mut reader) {
            Ok(Some((kind, object))) if kind == "tag" => object,
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        let header = |field: &[u8]| {
            object
                .split(|&b| b == b'\n')
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(field))
                .map(|t| String::from_utf8_lossy(t).into_owned())
        };
        let target = header(b"object ");
        if let (Some(target), Some("tag")) = (&target, header(b"type ").as_deref()) {
            inner.push((target.clone(), name.clone()));
        }
        // Header lines, a blank line, then the message (and any signature).
        let split = object
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(object.len(), |i| i + 2);
        let message = object[split..].to_vec();
        if message.is_empty() {
            continue;
        }
        let origin = Origin {
            path: Some(name.clone()),
            commit: target,
            kind: OccurrenceKind::TagMessage,
        };
        if work
            .send(Item {
                data: message,
                origin,
                blob: None,
            })
            .is_err()
        {
            outcome = Err(ScanError::Cancelled);
            break;
        }
    }
    // Unread output would keep cat-file, and so the writer, blocked: close it first.
    drop(reader);
    if outcome.is_err() {
        drop(running);
        let _ = writer.join();
        return outcome.map(|()| inner);
    }
    let _ = writer.join();
    running.finish()?;
    Ok(inner)
}

/// Reads one `cat-file --batch` entry: `Some((type, contents))`, `None` at the end.
fn read_object(reader: &mut impl BufRead) -> Result<Option<(String, Vec<u8>)>, ScanError> {
    let Some(Header { size, kind, .. }) = read_header(reader)? else {
        return Ok(None);
    };
    let mut object = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
    reader.read_exact(&mut object).map_err(io_error)?;
    let mut newline = [0u8; 1];
    reader.read_exact(&mut newline).map_err(io_error)?;
    Ok(Some((kind, object)))
}

fn io_error(e: std::io::Error) -> ScanError {
    ScanError::Git {
        command: "cat-file".into(),
        message: e.to_string(),
    }
}

/// A `cat-file --batch` header: `<id> <type> <size>`.
struct Header {
    oid: Option<Oid>,
    size: u64,
    kind: String,
}

/// Reads a `cat-file --batch` header; `None` at the end.
fn read_header(reader: &mut impl BufRead) -> Result<Option<Header>, ScanError> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).map_err(io_error)? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&line);
    let mut fields = line.trim_end().split(' ');
    let (oid, kind, size) = (
        fields.next().unwrap_or(""),
        fields.next().unwrap_or(""),
        fields.next(),
    );
    match (kind, size.and_then(|s| s.parse::<u64>().ok())) {
        (kind, Some(size)) if !kind.is_empty() => Ok(Some(Header {
            oid: Oid::from_hex(oid.as_bytes()),
            size,
            kind: kind.to_owned(),
        })),
        ("missing", _) => Err(ScanError::Git {
            command: "cat-file".into(),
            message: format!("object {oid} is missing"),
        }),
        _ => Err(ScanError::Git {
            command: "cat-file".into(),
            message: format!("unexpected output {:?}", line.trim_end()),
        }),
    }
}

/// Asks one `git cat-file --batch` for blobs: ids go in on the feeding thread, contents
/// come out on a reader thread that hands them to the scanning pool in the same order.
pub(crate) struct Requests<'c, 'a> {
    ctx: &'c Context<'a>,
    stdin: std::io::BufWriter<ChildStdin>,
    origins: Sender<Origin>,
    seen: HashSet<([u8; 32], bool)>,
}

impl Requests<'_, '_> {
    /// Queues a blob for scanning unless it was already queued (each blob once).
    fn request(&mut self, oid: &[u8], origin: Origin) -> Result<(), ScanError> {
        let Some(key) = oid_key(oid) else {
            return Err(ScanError::Git {
                command: "log".into(),
                message: format!("bad object id {:?}", String::from_utf8_lossy(oid)),
            });
        };
        // A blob first met at an allow-listed path is still scanned where it appears
        // next; one met in a lock file (generic rules off) is scanned again elsewhere.
        if let Some(path) = &origin.path
            && origin.kind == OccurrenceKind::File
            && self.ctx.path_allowed(path)
        {
            return Ok(());
        }
        let lock_file = origin
            .path
            .as_deref()
            .is_some_and(super::detect::is_lock_file);
        if !self.seen.insert((key, lock_file)) {
            return Ok(());
        }
        self.ctx.discovered();
        if self.origins.send(origin).is_err() {
            return Err(ScanError::Git {
                command: "cat-file".into(),
                message: "stopped reading".into(),
            });
        }
        self.stdin
            .write_all(oid)
            .and_then(|()| self.stdin.write_all(b"\n"))
            .map_err(io_error)
    }
}

/// Runs `body` with a [`Requests`] handle; returns once every requested blob was handed
/// to the pool.
fn with_blobs<F>(
    ctx: &Context<'_>,
    repo: &Path,
    work: &Sender<Item>,
    body: F,
) -> Result<(), ScanError>
where
    F: FnOnce(&mut Requests<'_, '_>) -> Result<(), ScanError>,
{
    let mut command = git(repo);
    // --buffer: we never wait for one answer before asking the next question.
    command
        .args(["cat-file", "--batch", "--buffer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut running = Running::spawn(command, "cat-file")?;
    let stdin = running.child().stdin.take();
    let stdout = running.child().stdout.take();
    let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(ScanError::Git {
            command: "cat-file".into(),
            message: "no pipes".into(),
        });
    };
    let (origins_tx, origins_rx) = crossbeam_channel::unbounded::<Origin>();
    let max = ctx.max_blob_size();
    let (fed, read) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<(), ScanError> {
            let mut reader = BufReader::with_capacity(1 << 20, stdout);
            for origin in origins_rx {
                let Some(Header { oid, size, .. }) = read_header(&mut reader)? else {
                    return Err(ScanError::Git {
                        command: "cat-file".into(),
                        message: "output ended early".into(),
                    });
                };
                if let Some(oid) = oid {
                    ctx.blob_sized(oid, size, &origin);
                }
                if size > max {
                    std::io::copy(&mut (&mut reader).take(size + 1), &mut std::io::sink())
                        .map_err(io_error)?;
                    ctx.skip(&origin, size, SkipReason::TooLarge);
                    continue;
                }
                let mut data = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
                reader.read_exact(&mut data).map_err(io_error)?;
                let mut newline = [0u8; 1];
                reader.read_exact(&mut newline).map_err(io_error)?;
                if work
                    .send(Item {
                        data,
                        origin,
                        blob: oid,
                    })
                    .is_err()
                {
                    break;
                }
            }
            Ok(())
        });
        let mut requests = Requests {
            ctx,
            stdin: std::io::BufWriter::with_capacity(64 << 10, stdin),
            origins: origins_tx,
            seen: HashSet::new(),
        };
        let mut fed = body(&mut requests);
        let Requests { stdin, origins, .. } = requests;
        drop(origins);
        match stdin.into_inner() {
            Ok(stdin) => drop(stdin),
            Err(e) => {
                if fed.is_ok() {
                    fed = Err(io_error(e.into_error()));
                }
            }
        }
        if fed.is_err() {
            let _ = running.child().kill();
        }
        let read = reader.join().unwrap_or_else(|_| {
            Err(ScanError::Git {
                command: "cat-file".into(),
                message: "reader thread panicked".into(),
            })
        });
        (fed, read)
    });
    // A reader error means cat-file failed; its own message says more than the broken
    // pipe the feeding side then meets.
    match (fed, read) {
        (Err(ScanError::Git { command, .. }), Err(read)) if command == "cat-file" => Err(read),
        (Err(fed), _) => Err(fed),
        (Ok(()), Err(read)) => Err(read),
        (Ok(()), Ok(())) => Ok(running.finish()?),
    }
}

/// Parses `--raw -z` output (with `commit <id>\0<message>\0` headers from `git log`, or
/// bare entries from `git diff`), scanning messages and requesting every new blob.
fn parse_raw(
    ctx: &Context<'_>,
    mut reader: impl BufRead,
    requests: &mut Requests<'_, '_>,
    work: &Sender<Item>,
) -> Result<(), ScanError> {
    enum State {
        Entries,
        Message { new: bool },
        Path { blob: Option<Vec<u8>> },
    }
    let mut state = State::Entries;
    let mut commit: Option<String> = None;
    let mut token = Vec::new();
    loop {
        token.clear();
        if reader
            .read_until(0, &mut token)
            .map_err(|e| ScanError::Git {
                command: "log".into(),
                message: e.to_string(),
            })?
            == 0
        {
            break;
        }
        if token.last() == Some(&0) {
            token.pop();
        }
        if ctx.cancelled() {
            return Err(ScanError::Cancelled);
        }
        state = match state {
            State::Message { new } => {
                if new && !token.is_empty() {
                    let origin = Origin {
                        path: None,
                        commit: commit.clone(),
                        kind: OccurrenceKind::CommitMessage,
                    };
                    if work
                        .send(Item {
                            data: token.clone(),
                            origin,
                            blob: None,
                        })
                        .is_err()
                    {
                        return Err(ScanError::Cancelled);
                    }
                }
                State::Entries
            }
            State::Path { blob } => {
                if let Some(blob) = blob {
                    let path = String::from_utf8_lossy(&token).into_owned();
                    requests.request(
                        &blob,
                        Origin {
                            path: Some(path),
                            commit: commit.clone(),
                            kind: OccurrenceKind::File,
                        },
                    )?;
                }
                State::Entries
            }
            State::Entries => {
                let entry = token.strip_prefix(b"\n").unwrap_or(&token);
                if let Some(id) = entry.strip_prefix(b"commit ") {
                    let id = String::from_utf8_lossy(id).into_owned();
                    // `-m` repeats a merge once per parent; its message is scanned once.
                    let new = commit.as_deref() != Some(id.as_str());
                    if new {
                        ctx.commit_seen();
                    }
                    commit = Some(id);
                    State::Message { new }
                } else if let Some(meta) = entry.strip_prefix(b":") {
                    // `:old_mode new_mode old_id new_id status`
                    let fields: Vec<&[u8]> = meta.split(|&b| b == b' ').collect();
                    let blob = match fields.as_slice() {
                        [_, new_mode, _, new_id, status, ..] => {
                            let deleted = status.first() == Some(&b'D');
                            let gitlink = *new_mode == b"160000";
                            (!deleted && !gitlink && !is_null_oid(new_id)).then(|| new_id.to_vec())
                        }
                        _ => None,
                    };
                    State::Path { blob }
                } else {
                    State::Entries
                }
            }
        };
    }
    Ok(())
}
