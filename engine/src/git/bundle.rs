//! Bundles that travel with their pack index.
//!
//! A bundle is a header (the refs) followed by one pack. Turning it back into a
//! repository with `git fetch` runs `git index-pack`, which inflates and hashes every
//! object again: most of the time it takes to open a large bundle. When the pack's index
//! (`.idx`) was kept from when the pack was written, the pack is copied out of the bundle
//! next to that index and the refs are set, with no object read at all.
//!
//! [`create_indexed`] writes such a bundle from a repository and hands back the index;
//! [`unbundle`] makes a bare repository of a bundle, with its index when there is one
//! and by `git fetch` when there is none or it does not belong to the pack.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::objects::{ObjectFormat, Oid};
use super::{GitError, output};

/// What a bundle's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: ObjectFormat,
    /// `(name, id)` for every ref, in the header's order.
    pub refs: Vec<(String, Oid)>,
    /// The id `HEAD` had, when the bundle records it.
    pub head: Option<Oid>,
    /// Where the pack starts: the header's length in bytes.
    pub pack_offset: u64,
}

impl Header {
    /// Reads the header of the bundle file at `path`.
    pub fn read(path: &Path) -> Result<Self, GitError> {
        let file = File::open(path).map_err(|e| GitError::new("bundle", e.to_string()))?;
        Self::parse(&mut BufReader::new(file))
    }

    fn parse(reader: &mut impl BufRead) -> Result<Self, GitError> {
        let bad = |why: &str| GitError::new("bundle", format!("not a usable bundle: {why}"));
        let mut line = Vec::new();
        let mut offset = 0u64;
        let mut next = |line: &mut Vec<u8>| -> Result<bool, GitError> {
            line.clear();
            let n = reader
                .by_ref()
                .take(64 * 1024)
                .read_until(b'\n', line)
                .map_err(|e| GitError::new("bundle", e.to_string()))?;
            offset += n as u64;
            Ok(n > 0 && line.ends_with(b"\n"))
        };
        if !next(&mut line)? {
            return Err(bad("no header"));
        }
        let mut format = match line.as_slice() {
            b"# v2 git bundle\n" => ObjectFormat::Sha1,
            b"# v3 git bundle\n" => ObjectFormat::Sha1,
            _ => return Err(bad("no bundle signature")),
        };
        let mut refs = Vec::new();
        let mut head = None;
        loop {
            if !next(&mut line)? {
                return Err(bad("the header does not end"));
            }
            let text = &line[..line.len() - 1];
            if text.is_empty() {
                break;
            }
            if let Some(capability) = text.strip_prefix(b"@") {
                // As git: a capability not understood (a partial bundle's `filter`, say)
                // makes the bundle unusable.
                match capability {
                    b"object-format=sha256" => format = ObjectFormat::Sha256,
                    b"object-format=sha1" => format = ObjectFormat::Sha1,
                    _ => return Err(bad("it needs a capability DeployGuard does not have")),
                }
                continue;
            }
            if text.starts_with(b"-") {
                return Err(bad("it needs commits it does not hold (prerequisites)"));
            }
            let space = text
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("a ref line without a name"))?;
            let oid = Oid::from_hex(&text[..space]).ok_or_else(|| bad("a ref without an id"))?;
            let name = String::from_utf8(text[space + 1..].to_vec())
                .map_err(|_| bad("a ref name that is not UTF-8"))?;
            if name == "HEAD" {
                head = Some(oid);
            } else {
                refs.push((name, oid));
            }
        }
        Ok(Self {
            format,
            refs,
            head,
            pack_offset: offset,
        })
    }

    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        match self.format {
            ObjectFormat::Sha1 => out.write_all(b"# v2 git bundle\n")?,
            ObjectFormat::Sha256 => out.write_all(b"# v3 git bundle\n@object-format=sha256\n")?,
        }
        for (name, oid) in &self.refs {
            writeln!(out, "{oid} {name}")?;
        }
        if let Some(head) = self.head {
            writeln!(out, "{head} HEAD")?;
        }
        out.write_all(b"\n")
    }
}

/// Writes a bundle of `header`'s refs whose pack is the file `pack`, which must hold
/// every object they reach. Returns the bundle's size.
pub fn write(out: &Path, header: &Header, pack: &Path) -> Result<u64, GitError> {
    let failed = |e: std::io::Error| GitError::new("bundle", format!("{}: {e}", out.display()));
    let mut file = File::create(out).map_err(failed)?;
    let mut head = Vec::new();
    header.write_to(&mut head).map_err(failed)?;
    file.write_all(&head).map_err(failed)?;
    let mut source = File::open(pack).map_err(failed)?;
    std::io::copy(&mut source, &mut file).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    Ok(file.metadata().map_err(failed)?.len())
}

/// Writes every ref of `repo` (and `HEAD`) and the objects they reach to the bundle file
/// `out`, using the repository's own pack when it has exactly one and no loose objects
/// (as a fresh clone does) and repacking it into one otherwise. Returns the index of the
/// bundle's pack, inside `repo`: [`unbundle`] opens the bundle without re-indexing it.
/// `None`, and nothing written, when the repository has no refs (git has no empty
/// bundle).
pub fn create_indexed(repo: &Path, out: &Path) -> Result<Option<PathBuf>, GitError> {
    let format = ObjectFormat::of(repo)?;
    let refs = list_refs(repo)?;
    if refs.is_empty() {
        return Ok(None);
    }
    let head = output(repo, &["rev-parse", "-q", "--verify", "HEAD"])
        .ok()
        .and_then(|o| Oid::from_hex(String::from_utf8_lossy(&o).trim().as_bytes()));
    let (pack, idx) = match single_pack(repo)? {
        Some(found) => found,
        None => {
            output(repo, &["repack", "-a", "-d", "-q"])?;
            single_pack(repo)?.ok_or_else(|| {
                GitError::new(
                    "repack",
                    "the repository is not in one pack after repacking",
                )
            })?
        }
    };
    let header = Header {
        format,
        refs,
        head,
        pack_offset: 0,
    };
    write(out, &header, &pack)?;
    Ok(Some(idx))
}

/// The pack and index of a repository that keeps all its objects in one pack.
fn single_pack(repo: &Path) -> Result<Option<(PathBuf, PathBuf)>, GitError> {
    let counts = output(repo, &["count-objects", "-v"])?;
    let loose = String::from_utf8_lossy(&counts)
        .lines()
        .any(|l| l.strip_prefix("count:").is_some_and(|n| n.trim() != "0"));
    if loose {
        return Ok(None);
    }
    let dir = repo.join("objects").join("pack");
    let dir = if dir.is_dir() {
        dir
    } else {
        repo.join(".git").join("objects").join("pack")
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let packs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    match packs.as_slice() {
        [pack] => {
            let idx = pack.with_extension("idx");
            Ok(idx.is_file().then(|| (pack.clone(), idx)))
        }
        _ => Ok(None),
    }
}

/// Makes the bare repository `into` (which must not exist) of `bundle`: every ref, and
/// `HEAD` on the branch the bundle's `HEAD` names (`main` or `master` first) or
/// detached. With `index`, the pack's `.idx` as [`create_indexed`] or a clean kept it,
/// nothing is re-indexed; an index that does not belong to the pack is ignored.
pub fn unbundle(bundle: &Path, index: Option<&Path>, into: &Path) -> Result<Header, GitError> {
    let header = Header::read(bundle)?;
    super::init_bare(into, header.format)?;
    let placed = match index {
        Some(index) => place_pack(bundle, &header, index, into)?,
        None => false,
    };
    if placed {
        // As `git fetch` would take them: refs/* only.
        let refs: Vec<(String, Oid)> = header
            .refs
            .iter()
            .filter(|(n, _)| n.starts_with("refs/"))
            .cloned()
            .collect();
        super::refs::write_packed(into, &refs)?;
    } else {
        super::fetch_bundle(into, bundle)?;
    }
    point_head(into, &header)?;
    Ok(header)
}

/// Copies the pack out of the bundle beside a copy of its index, checking both
/// checksums on the way (a pack's trailer is the hash of what precedes it; an index
/// ends with its pack's checksum, then its own). False, and nothing left behind, when
/// the index is not the pack's or either is damaged.
fn place_pack(bundle: &Path, header: &Header, index: &Path, into: &Path) -> Result<bool, GitError> {
    let io = |e: std::io::Error| GitError::new("unbundle", e.to_string());
    let hash_len = header.format.raw_len() as u64;
    let mut file = File::open(bundle).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let Some(pack_len) = size.checked_sub(header.pack_offset) else {
        return Ok(false);
    };
    let mut idx = File::open(index).map_err(io)?;
    let idx_len = idx.metadata().map_err(io)?.len();
    if pack_len < 12 + hash_len || idx_len < 2 * hash_len {
        return Ok(false);
    }
    let mut trailer = vec![0u8; hash_len as usize];
    file.seek(SeekFrom::End(-(hash_len as i64))).map_err(io)?;
    file.read_exact(&mut trailer).map_err(io)?;
    let mut named = vec![0u8; hash_len as usize];
    idx.seek(SeekFrom::Start(idx_len - 2 * hash_len))
        .map_err(io)?;
    idx.read_exact(&mut named).map_err(io)?;
    if named != trailer {
        return Ok(false);
    }

    let dir = into.join("objects").join("pack");
    let stem = format!("pack-{}", hex::encode(&trailer));
    let (pack_path, idx_path) = (
        dir.join(format!("{stem}.pack")),
        dir.join(format!("{stem}.idx")),
    );
    file.seek(SeekFrom::Start(header.pack_offset)).map_err(io)?;
    idx.seek(SeekFrom::Start(0)).map_err(io)?;
    let copied = copy_checked(&mut file, pack_len, &pack_path, header.format).and_then(|pack_ok| {
        Ok(pack_ok && copy_checked(&mut idx, idx_len, &idx_path, header.format)?)
    });
    match copied {
        Ok(true) => Ok(true),
        other => {
            let _ = std::fs::remove_file(&pack_path);
            let _ = std::fs::remove_file(&idx_path);
            other.map_err(io)
        }
    }
}

/// Copies `len` bytes from `from` to a new file `to`; true when the last hash-length
/// bytes are the hash of the ones before them.
fn copy_checked(
    from: &mut File,
    len: u64,
    to: &Path,
    format: ObjectFormat,
) -> std::io::Result<bool> {
    use sha2::Digest;
    enum Hasher {
        Sha1(sha1::Sha1),
        Sha256(sha2::Sha256),
    }
    let mut hasher = match format {
        ObjectFormat::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
        ObjectFormat::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
    };
    let hash_len = format.raw_len() as u64;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(to)?);
    let mut buffer = vec![0u8; 1 << 20];
    let mut stored = Vec::with_capacity(hash_len as usize);
    let mut done = 0u64;
    while done < len {
        let want = buffer.len().min((len - done) as usize);
        let n = from.read(&mut buffer[..want])?;
        if n == 0 {
            return Ok(false);
        }
        let chunk = &buffer[..n];
        out.write_all(chunk)?;
        // The bytes before the checksum are hashed; the checksum itself is kept.
        let body_end = (len - hash_len).saturating_sub(done).min(n as u64) as usize;
        match &mut hasher {
            Hasher::Sha1(h) => h.update(&chunk[..body_end]),
            Hasher::Sha256(h) => h.update(&chunk[..body_end]),
        }
        stored.extend_from_slice(&chunk[body_end..]);
        done += n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let digest = match hasher {
        Hasher::Sha1(h) => h.finalize().to_vec(),
        Hasher::Sha256(h) => h.finalize().to_vec(),
    };
    Ok(digest == stored)
}

/// Points `HEAD` at the branch the bundle's `HEAD` id names (`main` and `master` first),
/// or detaches it there when no branch does.
fn point_head(repo: &Path, header: &Header) -> Result<(), GitError> {
    let Some(head) = header.head else {
        return Ok(());
    };
    let branches: Vec<&String> = header
        .refs
        .iter()
        .filter(|(name, oid)| name.starts_with("refs/heads/") && *oid == head)
        .map(|(name, _)| name)
        .collect();
    let preferred = branches
        .iter()
        .find(|n| n.as_str() == "refs/heads/main" || n.as_str() == "refs/heads/master")
        .or(branches.first());
    match preferred {
        Some(name) => output(repo, &["symbolic-ref", "HEAD", name])?,
        None => output(repo, &["update-ref", "--no-deref", "HEAD", &head.to_hex()])?,
    };
    Ok(())
}

/// Every ref of `repo` with the id it points at.
pub fn list_refs(repo: &Path) -> Result<Vec<(String, Oid)>, GitError> {
    let out = output(repo, &["for-each-ref", "--format=%(objectname) %(refname)"])?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|line| {
            let (oid, name) = line.split_once(' ')?;
            Some((name.to_owned(), Oid::from_hex(oid.as_bytes())?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_read_with_its_refs_head_and_length() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let text =
            format!("# v2 git bundle\n{a} refs/heads/main\n{b} refs/tags/v1\n{a} HEAD\n\nPACK");
        let header = Header::parse(&mut text.as_bytes()).unwrap();
        assert_eq!(header.format, ObjectFormat::Sha1);
        assert_eq!(header.refs.len(), 2);
        assert_eq!(header.refs[1].0, "refs/tags/v1");
        assert_eq!(header.head.map(|h| h.to_hex()), Some(a.clone()));
        assert_eq!(header.pack_offset as usize, text.len() - 4);
        let mut again = Vec::new();
        header.write_to(&mut again).unwrap();
        assert_eq!(again, text.as_bytes()[..text.len() - 4]);
    }

    #[test]
    fn a_sha256_bundle_declares_its_format() {
        let a = "c".repeat(64);
        let text = format!("# v3 git bundle\n@object-format=sha256\n{a} refs/heads/main\n\n");
        let header = Header::parse(&mut text.as_bytes()).unwrap();
        assert_eq!(header.format, ObjectFormat::Sha256);
        assert_eq!(header.refs[0].1.to_hex(), a);
    }

    #[test]
    fn what_is_not_a_complete_bundle_is_refused_plainly() {
        let a = "a".repeat(40);
        for text in [
            String::new(),
            "PACK....".into(),
            format!("# v2 git bundle\n{a} refs/heads/main\n"),
            format!("# v2 git bundle\n-{a} needed\n{a} refs/heads/main\n\n"),
            format!("# v3 git bundle\n@filter=blob:none\n{a} refs/heads/main\n\n"),
            "# v2 git bundle\nnot-an-id refs/heads/main\n\n".into(),
        ] {
            let err = Header::parse(&mut text.as_bytes()).unwrap_err();
            assert!(err.message.contains("not a usable bundle"), "{err}");
        }
    }
}
