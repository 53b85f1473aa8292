//! Packaging the cleaned history: the bundle (checked object by object as it is
//! written) and an archive of a ready-to-use clone for people.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::git::objects::{self, ObjectFormat, Oid};
use crate::git::{self, GitError, Running};

use super::rewrite::Rewritten;
use super::{CleanError, CleanRun, Selection, WorkRepo, io_error};

pub(crate) struct Packaged {
    pub objects: u64,
    pub reread: u64,
    pub bytes: u64,
}

/// Writes a bundle of every ref of `repo` to `out`. The objects packed are exactly the
/// ones `git rev-list --objects --all` names; each is checked before the bundle is
/// kept: an object read and searched before the rewrite needs no second look (its id
/// is its content), anything else is read back and searched. If any holds a selected
/// value, no bundle is written.
pub(crate) fn write_verified_bundle(
    repo: &WorkRepo,
    rewritten: &Rewritten,
    selection: &Selection,
    out: &Path,
    run: &CleanRun<'_>,
) -> Result<Packaged, CleanError> {
    let partial = partial_path(out);
    let result = write_bundle(repo, rewritten, selection, &partial, run);
    match result {
        Ok(packaged) => {
            std::fs::rename(&partial, out).map_err(io_error(out))?;
            Ok(packaged)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

fn write_bundle(
    repo: &WorkRepo,
    rewritten: &Rewritten,
    selection: &Selection,
    partial: &Path,
    run: &CleanRun<'_>,
) -> Result<Packaged, CleanError> {
    let file = File::create(partial).map_err(io_error(partial))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut header = match repo.format {
        ObjectFormat::Sha1 => "# v2 git bundle\n".to_owned(),
        ObjectFormat::Sha256 => "# v3 git bundle\n@object-format=sha256\n".to_owned(),
    };
    let head = match (&repo.head_symref, repo.head_detached) {
        (Some(name), _) => repo
            .refs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, oid)| *oid),
        (None, detached) => detached,
    };
    for (name, oid) in &repo.refs {
        header.push_str(&format!("{oid} {name}\n"));
    }
    if let Some(head) = head {
        header.push_str(&format!("{head} HEAD\n"));
    }
    header.push('\n');
    writer
        .write_all(header.as_bytes())
        .map_err(io_error(partial))?;

    let mut list = git::command(&repo.path);
    list.args(["rev-list", "--objects", "--all"])
        .stdout(Stdio::piped());
    let mut list = Running::spawn(list, "rev-list")?;
    let mut pack = git::command(&repo.path);
    pack.args(["pack-objects", "--stdout", "--delta-base-offset", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut pack = Running::spawn(pack, "pack-objects")?;
    let listed = list.child().stdout.take();
    let to_pack = pack.child().stdin.take();
    let packed = pack.child().stdout.take();
    let (Some(listed), Some(to_pack), Some(mut packed)) = (listed, to_pack, packed) else {
        return Err(GitError::new("pack-objects", "no pipes").into());
    };

    // rev-list → (ids for the check) → pack-objects → bundle file.
    let (ids, copied) = std::thread::scope(|scope| {
        let feeder = scope.spawn(move || -> Result<Vec<Oid>, GitError> {
            let mut ids = Vec::new();
            let mut reader = BufReader::with_capacity(1 << 20, listed);
            let mut to_pack = std::io::BufWriter::with_capacity(1 << 20, to_pack);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| GitError::new("rev-list", e.to_string()))?;
                if n == 0 {
                    break;
                }
                let hex_end = line
                    .iter()
                    .position(|&b| b == b' ' || b == b'\n')
                    .unwrap_or(line.len());
                let oid = Oid::from_hex(&line[..hex_end])
                    .ok_or_else(|| GitError::new("rev-list", "unexpected output"))?;
                ids.push(oid);
                to_pack
                    .write_all(&line)
                    .map_err(|e| GitError::new("pack-objects", e.to_string()))?;
            }
            to_pack
                .flush()
                .map_err(|e| GitError::new("pack-objects", e.to_string()))?;
            Ok(ids)
        });
        let copied = std::io::copy(&mut packed, &mut writer);
        let ids = feeder
            .join()
            .unwrap_or_else(|_| Err(GitError::new("rev-list", "reader thread panicked")));
        (ids, copied)
    });
    let ids = ids?;
    list.finish()?;
    pack.finish()?;
    copied.map_err(io_error(partial))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_error(partial)(e.into_error()))?;
    file.sync_all().map_err(io_error(partial))?;
    let bytes = file.metadata().map_err(io_error(partial))?.len();
    run.check()?;

    let objects = ids.len() as u64;
    let reread: Vec<Oid> = ids
        .into_iter()
        .filter(|oid| !rewritten.searched_clean(oid))
        .collect();
    run.verified(objects - reread.len() as u64);
    let mut survivors: Vec<(Oid, &'static str)> = Vec::new();
    objects::read_objects(
        &repo.path,
        &reread,
        |oid, kind, data| -> Result<(), CleanError> {
            if selection.is_match(data) {
                survivors.push((oid, kind.name()));
            }
            run.verified(1);
            Ok(())
        },
    )?;
    if let Some((oid, kind)) = survivors.first() {
        return Err(CleanError::Verification {
            count: survivors.len(),
            kind,
            oid: oid.to_hex(),
        });
    }
    Ok(Packaged {
        objects,
        reread: reread.len() as u64,
        bytes,
    })
}

/// The kinds of archive [`write_archive`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    Zip,
    TarGz,
}

impl ArchiveFormat {
    /// From a file name: `.zip`, `.tar.gz` or `.tgz`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".zip") {
            Some(Self::Zip)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Self::TarGz)
        } else {
            None
        }
    }
}

/// Makes an archive of a clone of `bundle`: one top-level directory `name/` holding the
/// repository (every branch and tag as its own, `HEAD` checked out), ready to use after
/// unpacking. `work` is an empty scratch directory.
pub fn write_archive(
    bundle: &Path,
    work: &Path,
    name: &str,
    out: &Path,
    format: ArchiveFormat,
) -> Result<u64, CleanError> {
    let bad_name = name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control);
    if bad_name {
        return Err(CleanError::Source(format!(
            "{name:?} cannot name a directory"
        )));
    }
    let bundle = std::fs::canonicalize(bundle).map_err(io_error(bundle))?;
    let dir = work.join(name);
    std::fs::create_dir_all(work).map_err(io_error(work))?;
    let heads = git::output(work, &["bundle", "list-heads", &bundle.to_string_lossy()])?;
    let heads = String::from_utf8_lossy(&heads);
    let head = heads
        .lines()
        .find_map(|l| l.strip_suffix(" HEAD"))
        .map(str::to_owned);
    let branch = head.as_deref().and_then(|head| {
        let on_head: Vec<&str> = heads
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(oid, name)| *oid == head && name.starts_with("refs/heads/"))
            .map(|(_, name)| name)
            .collect();
        on_head
            .iter()
            .find(|n| **n == "refs/heads/main" || **n == "refs/heads/master")
            .or(on_head.first())
            .map(|n| n.to_string())
    });
    let format_flag = match git::bundle_format(&bundle) {
        Some(ObjectFormat::Sha256) => "--object-format=sha256",
        _ => "--object-format=sha1",
    };
    let initial = branch
        .as_deref()
        .and_then(|b| b.strip_prefix("refs/heads/"))
        .unwrap_or("main");
    let mut init = git::command(work);
    init.args(["init", "--quiet", format_flag])
        .arg(format!("--initial-branch={initial}"))
        .arg(&dir);
    run_quiet(init, "init")?;
    let mut fetch = git::command(&dir);
    fetch
        .args([
            "-c",
            "protocol.file.allow=always",
            "fetch",
            "--quiet",
            "--update-head-ok",
            "--no-write-fetch-head",
        ])
        .arg(&bundle)
        .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]);
    run_quiet(fetch, "fetch")?;
    if branch.is_some() {
        let mut checkout = git::command(&dir);
        checkout.args(["reset", "--hard", "--quiet", "HEAD"]);
        run_quiet(checkout, "reset")?;
    }
    let partial = partial_path(out);
    let written = match format {
        ArchiveFormat::TarGz => write_tar_gz(&dir, name, &partial),
        ArchiveFormat::Zip => write_zip(&dir, name, &partial),
    };
    match written {
        Ok(()) => {
            std::fs::rename(&partial, out).map_err(io_error(out))?;
            Ok(std::fs::metadata(out).map_err(io_error(out))?.len())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn run_quiet(mut command: std::process::Command, what: &str) -> Result<(), GitError> {
    command.stdout(Stdio::null());
    Running::spawn(command, what)?.finish()
}

/// Files under `dir` in a stable order: `(path relative to dir, metadata)`.
fn walk(dir: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, CleanError> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let full = dir.join(&relative);
        let mut entries: Vec<_> = std::fs::read_dir(&full)
            .map_err(io_error(&full))?
            .collect::<Result<_, _>>()
            .map_err(io_error(&full))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries.into_iter().rev() {
            let path = relative.join(entry.file_name());
            let meta = std::fs::symlink_metadata(entry.path()).map_err(io_error(&entry.path()))?;
            if meta.is_dir() {
                pending.push(path.clone());
            }
            out.push((path, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn write_tar_gz(dir: &Path, name: &str, out: &Path) -> Result<(), CleanError> {
    let file = File::create(out).map_err(io_error(out))?;
    let gz = flate2::write::GzEncoder::new(
        BufWriter::with_capacity(1 << 20, file),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir(name, dir).map_err(io_error(dir))?;
    for (relative, _) in walk(dir)? {
        let full = dir.join(&relative);
        tar.append_path_with_name(&full, Path::new(name).join(&relative))
            .map_err(io_error(&full))?;
    }
    let gz = tar.into_inner().map_err(io_error(out))?;
    let writer = gz.finish().map_err(io_error(out))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_error(out)(e.into_error()))?;
    file.sync_all().map_err(io_error(out))
}

fn write_zip(dir: &Path, name: &str, out: &Path) -> Result<(), CleanError> {
    use std::os::unix::fs::PermissionsExt;
    let zip_error = |e: zip::result::ZipError| CleanError::Io {
        path: out.display().to_string(),
        message: e.to_string(),
    };
    let file = File::create(out).map_err(io_error(out))?;
    let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    zip.add_directory(format!("{name}/"), options)
        .map_err(zip_error)?;
    let mut buffer = Vec::new();
    for (relative, meta) in walk(dir)? {
        let full = dir.join(&relative);
        let entry = format!("{name}/{}", relative.to_string_lossy());
        let mode = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(io_error(&full))?;
            zip.add_symlink(entry, target.to_string_lossy(), options)
                .map_err(zip_error)?;
        } else if meta.is_dir() {
            zip.add_directory(format!("{entry}/"), options)
                .map_err(zip_error)?;
        } else {
            let large = meta.len() >= u64::from(u32::MAX);
            zip.start_file(
                entry,
                options.unix_permissions(mode & 0o777).large_file(large),
            )
            .map_err(zip_error)?;
            buffer.clear();
            File::open(&full)
                .and_then(|mut f| f.read_to_end(&mut buffer))
                .map_err(io_error(&full))?;
            zip.write_all(&buffer).map_err(io_error(out))?;
        }
    }
    let writer = zip.finish().map_err(zip_error)?;
    let file = writer
        .into_inner()
        .map_err(|e| io_error(out)(e.into_error()))?;
    file.sync_all().map_err(io_error(out))
}
