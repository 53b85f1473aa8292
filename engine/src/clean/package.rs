//! Packaging the cleaned history: the bundle (checked object by object as it is
//! written) and an archive of a ready-to-use clone for people.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::git::objects::{self, Oid, OidMap, PackWriter};
use crate::git::pack::ObjectStore;
use crate::git::{self, GitError, Running};

use super::rewrite::Rewritten;
use super::{CleanError, CleanRun, Selection, WorkRepo, io_error};

pub(crate) struct Packaged {
    pub objects: u64,
    pub reread: u64,
    pub bytes: u64,
    /// The index of the bundle's pack.
    pub index: PathBuf,
}

/// Writes a bundle of every ref of `repo` to `out`, packing `objects` (what the refs
/// reach: see [`Rewritten::reachable`]); each is checked before the bundle is kept: an
/// object read and searched before the rewrite needs no second look (its id is its
/// content), anything else is read back and searched. If any holds a selected value,
/// or is (or names) a file selected for removal, no bundle is written.
pub(crate) fn write_verified_bundle(
    repo: &WorkRepo,
    rewritten: &Rewritten,
    objects: &[Oid],
    selection: &Selection,
    out: &Path,
    run: &CleanRun<'_>,
) -> Result<Packaged, CleanError> {
    let partial = partial_path(out);
    let result = write_bundle(repo, rewritten, objects, selection, &partial, run);
    match result {
        Ok(packaged) => {
            std::fs::rename(&partial, out).map_err(io_error(out))?;
            Ok(packaged)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_dir_all(pack_dir(repo));
            Err(e)
        }
    }
}

/// Where the bundle's pack and index are written, beside the work repository.
fn pack_dir(repo: &WorkRepo) -> PathBuf {
    repo.path.with_file_name("bundle-pack")
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

fn write_bundle(
    repo: &WorkRepo,
    rewritten: &Rewritten,
    ids: &[Oid],
    selection: &Selection,
    partial: &Path,
    run: &CleanRun<'_>,
) -> Result<Packaged, CleanError> {
    let head = match (&repo.head_symref, repo.head_detached) {
        (Some(name), _) => repo
            .refs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, oid)| *oid),
        (None, detached) => detached,
    };
    // The pack and its index are written beside the work repository; the index is kept
    // (see CleanReport::bundle_index), the pack is copied into the bundle and removed.
    let pack_dir = pack_dir(repo);
    std::fs::create_dir_all(&pack_dir).map_err(io_error(&pack_dir))?;

    let pack_file = write_pack(repo, ids, &pack_dir)?;
    let index = pack_file.with_extension("idx");
    let header = git::bundle::Header {
        format: repo.format,
        refs: repo.refs.clone(),
        head,
        pack_offset: 0,
    };
    let bytes = git::bundle::write(partial, &header, &pack_file)?;
    let _ = std::fs::remove_file(&pack_file);
    run.check()?;

    let objects = ids.len() as u64;
    let reread: Vec<Oid> = ids
        .iter()
        .copied()
        .filter(|oid| !rewritten.searched_clean(oid))
        .collect();
    run.verified(objects - reread.len() as u64);
    let mut survivors: Vec<(Oid, &'static str)> = Vec::new();
    objects::read_objects(
        &repo.path,
        &reread,
        |oid, kind, data| -> Result<(), CleanError> {
            if rewritten.holds_selected(oid, kind, data, selection)? {
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
        index,
    })
}

/// Writes a pack of the objects `ids` into `dir` and returns its path (its index is
/// beside it). The pack is made of the entries of the packs that hold the objects,
/// copied as they are: what git chose to store as deltas stays a delta (of the same
/// base, named by offset where the base comes first). An object whose base is not
/// among `ids` (a version of a file built on one that was rewritten), or that is not
/// in a pack in a form that can be copied (loose, or a delta of an object in another
/// pack), is read whole through git and stored whole.
fn write_pack(repo: &WorkRepo, ids: &[Oid], dir: &Path) -> Result<PathBuf, CleanError> {
    let wanted: OidMap<()> = ids.iter().map(|oid| (*oid, ())).collect();
    let store = ObjectStore::open(&repo.path, repo.format)?;
    // Not flushed to the disk: it is copied into the bundle, which is.
    let mut writer = PackWriter::create(dir, repo.format)?.without_sync();
    store.raw_entries(
        |oid| wanted.contains_key(oid),
        |entry| -> Result<(), GitError> {
            if entry.base.is_some_and(|base| !wanted.contains_key(&base)) {
                return Ok(());
            }
            writer.add_copied(
                entry.oid,
                entry.pack_type,
                entry.size,
                entry.base,
                entry.compressed,
            )
        },
    )?;
    let whole: Vec<Oid> = ids
        .iter()
        .filter(|oid| !writer.holds(oid))
        .copied()
        .collect();
    objects::read_objects(
        &repo.path,
        &whole,
        |oid, kind, data| -> Result<(), GitError> {
            let added = writer.add(kind, data)?;
            if added != oid {
                return Err(GitError::new(
                    "write pack",
                    format!("{oid} does not hash to its id"),
                ));
            }
            Ok(())
        },
    )?;
    let pack = writer
        .finish_named()?
        .ok_or_else(|| GitError::new("write pack", "no objects to pack"))?;
    Ok(pack)
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
/// unpacking. `index` is the bundle pack's index when it was kept (see
/// [`super::CleanReport::bundle_index`]): the clone is then made without re-indexing.
/// `work` is an empty scratch directory.
pub fn write_archive(
    bundle: &Path,
    index: Option<&Path>,
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
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let git_dir = dir.join(".git");
    let header = git::bundle::unbundle(&bundle, index, &git_dir)?;
    // A clone for a person: a work tree, git's default reflogs, branches and tags only
    // (a forge's refs/pull/* and the like are dropped, as a clone leaves them out; the
    // objects only they reach, cleaned like the rest, stay in the pack).
    git::output(&git_dir, &["config", "core.bare", "false"])?;
    git::output(&git_dir, &["config", "--unset", "core.logAllRefUpdates"])?;
    let kept: Vec<(String, Oid)> = header
        .refs
        .iter()
        .filter(|(n, _)| n.starts_with("refs/heads/") || n.starts_with("refs/tags/"))
        .cloned()
        .collect();
    if kept.len() != header.refs.len() {
        git::refs::write_packed(&git_dir, &kept)?;
    }
    if header.head.is_some() {
        let mut checkout = git::command(&dir);
        checkout.args(["reset", "--hard", "--quiet", "HEAD"]);
        run_quiet(checkout, "reset")?;
    } else {
        git::output(&git_dir, &["symbolic-ref", "HEAD", "refs/heads/main"])?;
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
            // Packs and their indexes are compressed already: deflating them again
            // costs time and saves nothing.
            let packed = relative.starts_with(".git/objects/pack");
            let method = if packed {
                zip::CompressionMethod::Stored
            } else {
                zip::CompressionMethod::Deflated
            };
            zip.start_file(
                entry,
                options
                    .compression_method(method)
                    .unix_permissions(mode & 0o777)
                    .large_file(large),
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
