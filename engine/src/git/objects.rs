//! Git objects at the byte level: ids, streaming reads through `git cat-file`, tree and
//! commit parsing, and writing new objects as a pack that `git index-pack` indexes.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha1::Digest;

use super::{GitError, Running, command, delta, output};

/// The pack entry type of a delta whose base is named by its id.
const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

/// The hash a repository names its objects with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFormat {
    Sha1,
    Sha256,
}

impl ObjectFormat {
    pub fn of(repo: &Path) -> Result<Self, GitError> {
        let out = output(repo, &["rev-parse", "--show-object-format"])?;
        match String::from_utf8_lossy(&out).trim() {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            other => Err(GitError::new(
                "rev-parse",
                format!("unsupported object format {other:?}"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }

    pub fn raw_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// The id git gives `data` stored as an object of `kind`.
    pub fn hash(self, kind: Kind, data: &[u8]) -> Oid {
        let header = format!("{} {}\0", kind.name(), data.len());
        match self {
            Self::Sha1 => {
                let mut h = sha1::Sha1::new();
                h.update(header.as_bytes());
                h.update(data);
                Oid::from_raw(&h.finalize()).unwrap_or_else(|| unreachable!("20 bytes"))
            }
            Self::Sha256 => {
                let mut h = sha2::Sha256::new();
                h.update(header.as_bytes());
                h.update(data);
                Oid::from_raw(&h.finalize()).unwrap_or_else(|| unreachable!("32 bytes"))
            }
        }
    }
}

/// Object ids are already uniformly random: their first bytes are the hash.
#[derive(Default)]
pub(crate) struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(buf);
        }
    }

    fn write_u8(&mut self, _: u8) {}
}

pub(crate) type OidMap<V> = HashMap<Oid, V, BuildHasherDefault<OidHasher>>;

/// An object id (SHA-1 or SHA-256), compared and hashed by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid {
    len: u8,
    bytes: [u8; 32],
}

impl Oid {
    pub fn from_raw(raw: &[u8]) -> Option<Self> {
        if raw.len() != 20 && raw.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Self {
            len: raw.len() as u8,
            bytes,
        })
    }

    pub fn from_hex(hex_id: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; 32];
        let len = match hex_id.len() {
            40 => 20,
            64 => 32,
            _ => return None,
        };
        hex::decode_to_slice(hex_id, &mut bytes[..len]).ok()?;
        Some(Self {
            len: len as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    pub fn is_null(&self) -> bool {
        self.as_bytes().iter().all(|&b| b == 0)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Commit,
    Tree,
    Blob,
    Tag,
}

impl Kind {
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"commit" => Some(Self::Commit),
            b"tree" => Some(Self::Tree),
            b"blob" => Some(Self::Blob),
            b"tag" => Some(Self::Tag),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Tree => "tree",
            Self::Blob => "blob",
            Self::Tag => "tag",
        }
    }

    fn pack_type(self) -> u8 {
        match self {
            Self::Commit => 1,
            Self::Tree => 2,
            Self::Blob => 3,
            Self::Tag => 4,
        }
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> GitError + '_ {
    move |e| GitError::new(what, e.to_string())
}

/// Reads `<oid> <type> <size>\n<data>\n` records from `cat-file --batch`.
struct BatchReader<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
}

impl<R: Read> BatchReader<R> {
    fn new(pipe: R) -> Self {
        Self {
            reader: BufReader::with_capacity(1 << 20, pipe),
            line: Vec::with_capacity(128),
        }
    }

    /// The next object into `data`; `None` at the end of the output.
    fn next(&mut self, data: &mut Vec<u8>) -> Result<Option<(Oid, Kind)>, GitError> {
        self.line.clear();
        if self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(io("cat-file"))?
            == 0
        {
            return Ok(None);
        }
        let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        let mut fields = line.split(|&b| b == b' ');
        let (oid, kind, size) = (fields.next(), fields.next(), fields.next());
        let bad = || {
            GitError::new(
                "cat-file",
                format!("unexpected output {:?}", String::from_utf8_lossy(line)),
            )
        };
        if kind == Some(b"missing".as_slice()) {
            return Err(GitError::new(
                "cat-file",
                format!(
                    "object {} is missing",
                    String::from_utf8_lossy(oid.unwrap_or_default())
                ),
            ));
        }
        let oid = oid.and_then(Oid::from_hex).ok_or_else(bad)?;
        let kind = kind.and_then(Kind::from_name).ok_or_else(bad)?;
        let size = size
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<usize>().ok())
            .ok_or_else(bad)?;
        data.clear();
        data.resize(size, 0);
        self.reader.read_exact(data).map_err(io("cat-file"))?;
        let mut newline = [0u8; 1];
        self.reader
            .read_exact(&mut newline)
            .map_err(io("cat-file"))?;
        Ok(Some((oid, kind)))
    }
}

/// Calls `f` with every object of the repository and its alternates, in pack order
/// (the order git reads fastest). `f` returning an error stops the read.
pub fn for_each_object<E>(
    repo: &Path,
    mut f: impl FnMut(Oid, Kind, &[u8]) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<GitError>,
{
    let mut cmd = command(repo);
    cmd.args(["cat-file", "--batch-all-objects", "--batch", "--unordered"])
        .stdout(Stdio::piped());
    let mut running = Running::spawn(cmd, "cat-file")?;
    let stdout = running
        .child()
        .stdout
        .take()
        .ok_or_else(|| GitError::new("cat-file", "no output pipe"))?;
    let mut reader = BatchReader::new(stdout);
    let mut data = Vec::new();
    while let Some((oid, kind)) = reader.next(&mut data)? {
        f(oid, kind, &data)?;
    }
    running.finish()?;
    Ok(())
}

/// A buffered `git cat-file MODE` asked about `ids` (written on a thread of its own, so
/// that a full output pipe cannot stall the request): the process, its output and the
/// writer to join.
fn ask_cat_file(
    repo: &Path,
    mode: &str,
    ids: &[Oid],
) -> Result<
    (
        Running,
        std::process::ChildStdout,
        std::thread::JoinHandle<()>,
    ),
    GitError,
> {
    let mut cmd = command(repo);
    cmd.args(["cat-file", mode, "--buffer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut running = Running::spawn(cmd, "cat-file")?;
    let stdin = running.child().stdin.take();
    let stdout = running.child().stdout.take();
    let (Some(mut stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(GitError::new("cat-file", "no pipes"));
    };
    let request: Vec<u8> = ids
        .iter()
        .flat_map(|id| {
            let mut line = id.to_hex().into_bytes();
            line.push(b'\n');
            line
        })
        .collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&request);
    });
    Ok((running, stdout, writer))
}

/// Of the objects `ids` names, the blobs of at most `max_size` bytes, asked of one
/// `cat-file --batch-check` (nothing is inflated); objects the repository lacks are
/// left out.
pub fn small_objects(repo: &Path, ids: &[Oid], max_size: u64) -> Result<Vec<Oid>, GitError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (running, stdout, writer) = ask_cat_file(repo, "--batch-check", ids)?;
    let mut output = Vec::new();
    let read = std::io::BufReader::new(stdout).read_to_end(&mut output);
    let _ = writer.join();
    read.map_err(io("cat-file"))?;
    running.finish()?;
    Ok(output
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ');
            let oid = Oid::from_hex(fields.next()?)?;
            let small = fields.next()? == b"blob"
                && std::str::from_utf8(fields.next()?)
                    .ok()?
                    .parse::<u64>()
                    .ok()?
                    <= max_size;
            small.then_some(oid)
        })
        .collect())
}

/// Reads the objects `ids` names, in that order, through one buffered `cat-file --batch`.
pub fn read_objects<E>(
    repo: &Path,
    ids: &[Oid],
    mut f: impl FnMut(Oid, Kind, &[u8]) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<GitError>,
{
    if ids.is_empty() {
        return Ok(());
    }
    let (mut running, stdout, writer) = ask_cat_file(repo, "--batch", ids)?;
    let mut reader = BatchReader::new(stdout);
    let mut data = Vec::new();
    let mut result = Ok(());
    for _ in ids {
        match reader.next(&mut data) {
            Ok(Some((oid, kind))) => {
                if let Err(e) = f(oid, kind, &data) {
                    result = Err(e);
                    break;
                }
            }
            Ok(None) => {
                result = Err(GitError::new("cat-file", "output ended early").into());
                break;
            }
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    if result.is_err() {
        let _ = running.child().kill();
    }
    let _ = writer.join();
    result?;
    running.finish()?;
    Ok(())
}

/// One entry of a tree object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: Vec<u8>,
    pub name: Vec<u8>,
    pub oid: Oid,
}

impl TreeEntry {
    pub fn is_tree(&self) -> bool {
        self.mode == b"40000"
    }

    /// A submodule: the id names a commit of another repository.
    pub fn is_gitlink(&self) -> bool {
        self.mode == b"160000"
    }
}

/// Walks a tree's entries: `(mode, name, raw id)` without copying.
pub fn tree_entries(
    data: &[u8],
    format: ObjectFormat,
) -> impl Iterator<Item = Result<(&[u8], &[u8], Oid), GitError>> {
    let raw_len = format.raw_len();
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bad = || GitError::new("tree", "malformed tree object");
        let Some(space) = memchr::memchr(b' ', rest) else {
            rest = &[];
            return Some(Err(bad()));
        };
        let Some(nul) = memchr::memchr(0, &rest[space..]).map(|i| i + space) else {
            rest = &[];
            return Some(Err(bad()));
        };
        if rest.len() < nul + 1 + raw_len {
            rest = &[];
            return Some(Err(bad()));
        }
        let mode = &rest[..space];
        let name = &rest[space + 1..nul];
        let oid = Oid::from_raw(&rest[nul + 1..nul + 1 + raw_len]);
        rest = &rest[nul + 1 + raw_len..];
        Some(oid.map(|oid| (mode, name, oid)).ok_or_else(bad))
    })
}

/// Serialises entries as a tree object, in git's order (a tree sorts as `name/`).
pub fn build_tree(entries: &mut [TreeEntry]) -> Vec<u8> {
    let key = |e: &TreeEntry| {
        let mut k = e.name.clone();
        if e.is_tree() {
            k.push(b'/');
        }
        k
    };
    entries.sort_by_cached_key(key);
    let mut out = Vec::with_capacity(entries.len() * 48);
    for e in entries.iter() {
        out.extend_from_slice(&e.mode);
        out.push(b' ');
        out.extend_from_slice(&e.name);
        out.push(0);
        out.extend_from_slice(e.oid.as_bytes());
    }
    out
}

/// The header block and message of a commit or tag: `(headers, message)`, split at the
/// first empty line. Headers keep their trailing newline.
pub fn split_message(data: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memmem::find(data, b"\n\n") {
        Some(i) => (&data[..i + 1], &data[i + 2..]),
        None => (data, &[]),
    }
}

/// The value of a header field: what follows the name, without the newline.
pub fn field_value(field: &[u8]) -> &[u8] {
    let value = field
        .iter()
        .position(|&b| b == b' ')
        .map_or(&field[field.len()..], |i| &field[i + 1..]);
    value.strip_suffix(b"\n").unwrap_or(value)
}

/// Header fields of a commit or tag, continuation lines (a leading space) included in
/// the field they continue: `(name, whole field bytes including newlines)`.
pub fn header_fields(headers: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < headers.len() {
        let end = memchr::memchr(b'\n', &headers[i..]).map_or(headers.len(), |n| i + n + 1);
        let continuation = headers[i] == b' ';
        if !continuation && i > start {
            let field = &headers[start..i];
            let name = field.split(|&b| b == b' ').next().unwrap_or_default();
            fields.push((name, field));
            start = i;
        }
        i = end;
    }
    if start < headers.len() {
        let field = &headers[start..];
        let name = field.split(|&b| b == b' ').next().unwrap_or_default();
        fields.push((name, field));
    }
    fields
}

/// An object made ready for a pack, possibly on another thread: its id and its entry's
/// compressed payload, whole or as a delta.
pub struct Prepared {
    pub oid: Oid,
    /// The pack entry type: the object's own, or a delta.
    pack_type: u8,
    /// The payload's size before compression.
    size: usize,
    compressed: Vec<u8>,
}

impl Prepared {
    /// Hashes `data` and compresses it, as a delta against `base` (the content of an
    /// object that will be in the pack) when that is less than half its size.
    pub fn new(format: ObjectFormat, kind: Kind, data: &[u8], base: Option<&[u8]>) -> Self {
        Self::with(format, kind, data, base, &mut compressor())
    }

    /// Like [`Prepared::new`], with the caller's compressor (one per thread).
    pub(crate) fn with(
        format: ObjectFormat,
        kind: Kind,
        data: &[u8],
        base: Option<&[u8]>,
        compress: &mut flate2::Compress,
    ) -> Self {
        let delta = base.and_then(|base| delta::encode(base, data, data.len() / 2));
        let (pack_type, payload) = match &delta {
            Some(delta) => (REF_DELTA, delta.as_slice()),
            None => (kind.pack_type(), data),
        };
        let compressed = if payload.len() >= THOROUGH_FROM {
            deflate(
                &mut flate2::Compress::new(flate2::Compression::default(), true),
                payload,
            )
        } else {
            deflate(compress, payload)
        };
        Self {
            oid: format.hash(kind, data),
            pack_type,
            size: payload.len(),
            compressed,
        }
    }

    /// True when the payload is a delta: it needs its base's id to be written.
    pub fn is_delta(&self) -> bool {
        self.pack_type == REF_DELTA
    }
}

/// The compressor for small payloads (commits, trees, deltas): fast, as their number
/// makes the time count more than the bytes.
pub(crate) fn compressor() -> flate2::Compress {
    flate2::Compress::new(flate2::Compression::fast(), true)
}

/// Payloads from this size on are compressed at git's own level: what is written here
/// goes into bundles as it is, and a large file stored whole is most of a pack's size.
const THOROUGH_FROM: usize = 64 << 10;

fn deflate(compress: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    compress.reset();
    loop {
        let consumed = usize::try_from(compress.total_in()).unwrap_or(usize::MAX);
        match compress.compress_vec(
            data.get(consumed..).unwrap_or_default(),
            &mut out,
            flate2::FlushCompress::Finish,
        ) {
            Ok(flate2::Status::StreamEnd) => return out,
            // Compressing into memory fails only for want of room, given below.
            _ => out.reserve(out.len().max(64)),
        }
    }
}

/// Writes new objects into one pack and its index, inside a repository.
pub struct PackWriter {
    format: ObjectFormat,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    /// Bytes written so far: where the next entry starts.
    position: u64,
    /// One compressor for every object: setting one up costs more than compressing a
    /// small commit.
    compress: flate2::Compress,
    /// Every object written, with its offset and the CRC-32 of its entry (for the
    /// index); none is written twice, and a delta's base is known to be in the pack.
    written: OidMap<(u64, u32)>,
    /// Bases named by id of entries copied before their base was written: each must
    /// be in the pack when it is finished.
    later_bases: Vec<Oid>,
    /// Whether the pack is flushed to the disk when finished.
    sync: bool,
}

impl PackWriter {
    /// A pack being written inside `repo`'s `objects/pack` directory.
    pub fn create(repo_git_dir: &Path, format: ObjectFormat) -> Result<Self, GitError> {
        let dir = repo_git_dir.join("objects").join("pack");
        std::fs::create_dir_all(&dir).map_err(io("write pack"))?;
        let path = dir.join(format!("tmp_deployguard_{}.pack", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io("write pack"))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // The object count is filled in when the pack is finished.
        out.write_all(b"PACK\0\0\0\x02\0\0\0\0")
            .map_err(io("write pack"))?;
        Ok(Self {
            format,
            path,
            out: Some(out),
            position: 12,
            compress: compressor(),
            written: OidMap::default(),
            later_bases: Vec::new(),
            sync: true,
        })
    }

    /// A pack that is not flushed to the disk when finished: a copy made only to be
    /// copied again (into a bundle, which is).
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// True when `oid` has been added.
    pub fn holds(&self, oid: &Oid) -> bool {
        self.written.contains_key(oid)
    }

    /// Adds an object (not deltified) and returns its id. An object
    /// already added is not written again.
    pub fn add(&mut self, kind: Kind, data: &[u8]) -> Result<Oid, GitError> {
        self.add_against(kind, data, None)
    }

    /// Adds an object, as a delta against `base` (an object added before, and its
    /// content) when that is less than half its size, and returns its id.
    pub fn add_against(
        &mut self,
        kind: Kind,
        data: &[u8],
        base: Option<(Oid, &[u8])>,
    ) -> Result<Oid, GitError> {
        let oid = self.format.hash(kind, data);
        if self.written.contains_key(&oid) {
            return Ok(oid);
        }
        let base = base.filter(|(base, _)| *base != oid && self.written.contains_key(base));
        let prepared = Prepared::with(
            self.format,
            kind,
            data,
            base.map(|(_, content)| content),
            &mut self.compress,
        );
        self.add_prepared(prepared, base.map(|(base, _)| base))
    }

    /// Adds an object prepared elsewhere; a delta names its base, which must have been
    /// added before. Returns its id.
    pub fn add_prepared(&mut self, prepared: Prepared, base: Option<Oid>) -> Result<Oid, GitError> {
        let oid = prepared.oid;
        if self.written.contains_key(&oid) {
            return Ok(oid);
        }
        let base = match (prepared.is_delta(), base) {
            (false, _) => None,
            (true, Some(base)) if base != oid && self.written.contains_key(&base) => Some(base),
            (true, _) => {
                return Err(GitError::new(
                    "write pack",
                    format!("the delta base of {oid} is not in the pack"),
                ));
            }
        };
        self.write_entry(
            oid,
            prepared.pack_type,
            prepared.size,
            base.as_ref().map(EntryBase::Id),
            &prepared.compressed,
        )?;
        Ok(oid)
    }

    /// Adds an entry copied as it is from another pack: `pack_type` (1 to 4) and `size`
    /// as its header states them and its compressed payload; for a delta (`base` is
    /// its base's id, `pack_type` is ignored) the base is named by offset when it is
    /// already in this pack, by id otherwise (it must then be added before the pack is
    /// finished). An object already added is not written again.
    pub fn add_copied(
        &mut self,
        oid: Oid,
        pack_type: u8,
        size: usize,
        base: Option<Oid>,
        compressed: &[u8],
    ) -> Result<(), GitError> {
        if self.written.contains_key(&oid) {
            return Ok(());
        }
        if base == Some(oid) || !(base.is_some() || (1..=4).contains(&pack_type)) {
            return Err(GitError::new(
                "write pack",
                format!("{oid}: not an entry a pack can hold"),
            ));
        }
        let base = base.as_ref().map(|base| {
            let base = EntryBase::Id(base).shorter(&self.written, self.position);
            if let EntryBase::Id(id) = base {
                self.later_bases.push(*id);
            }
            base
        });
        self.write_entry(oid, pack_type, size, base, compressed)
    }

    fn write_entry(
        &mut self,
        oid: Oid,
        pack_type: u8,
        size: usize,
        base: Option<EntryBase<'_>>,
        compressed: &[u8],
    ) -> Result<(), GitError> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| GitError::new("write pack", "pack already finished"))?;
        let pack_type = match base {
            Some(EntryBase::Id(_)) => REF_DELTA,
            Some(EntryBase::Distance(_)) => OFS_DELTA,
            None => pack_type,
        };
        let mut size = size as u64;
        let mut byte = (pack_type << 4) | (size & 0x0f) as u8;
        size >>= 4;
        let mut header = Vec::with_capacity(10 + self.format.raw_len());
        while size > 0 {
            header.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        header.push(byte);
        match base {
            Some(EntryBase::Id(base)) => header.extend_from_slice(base.as_bytes()),
            Some(EntryBase::Distance(distance)) => {
                // Seven bits a byte, most significant first, each continued byte
                // counting one less (git's offset encoding).
                let mut encoded = [0u8; 10];
                let mut at = encoded.len() - 1;
                let mut rest = distance;
                encoded[at] = (rest & 0x7f) as u8;
                rest >>= 7;
                while rest != 0 {
                    rest -= 1;
                    at -= 1;
                    encoded[at] = 0x80 | (rest & 0x7f) as u8;
                    rest >>= 7;
                }
                header.extend_from_slice(&encoded[at..]);
            }
            None => {}
        }
        let mut crc = flate2::Crc::new();
        crc.update(&header);
        crc.update(compressed);
        out.write_all(&header).map_err(io("write pack"))?;
        out.write_all(compressed).map_err(io("write pack"))?;
        self.written.insert(oid, (self.position, crc.sum()));
        self.position += (header.len() + compressed.len()) as u64;
        Ok(())
    }

    /// Completes the pack and its index (written here: every id, offset and checksum
    /// is known, so git need not read the pack again) and moves both into place.
    /// Nothing is left behind when no object was added.
    pub fn finish(self) -> Result<(), GitError> {
        self.finish_named().map(|_| ())
    }

    /// Like [`PackWriter::finish`], and says where the pack is (`None` when it was
    /// empty): `pack-CHECKSUM.pack`, its index beside it.
    pub fn finish_named(mut self) -> Result<Option<PathBuf>, GitError> {
        let Some(out) = self.out.take() else {
            return Ok(None);
        };
        if let Some(missing) = self
            .later_bases
            .iter()
            .find(|base| !self.written.contains_key(base))
        {
            return Err(GitError::new(
                "write pack",
                format!("the delta base {missing} is not in the pack"),
            ));
        }
        let mut file = out
            .into_inner()
            .map_err(|e| GitError::new("write pack", e.error().to_string()))?;
        if self.written.is_empty() {
            drop(file);
            let _ = std::fs::remove_file(&self.path);
            return Ok(None);
        }
        let count = u32::try_from(self.written.len())
            .map_err(|_| GitError::new("write pack", "too many objects for one pack"))?;
        file.seek(SeekFrom::Start(8)).map_err(io("write pack"))?;
        file.write_all(&count.to_be_bytes())
            .map_err(io("write pack"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("write pack"))?;
        let trailer = {
            let mut reader = BufReader::with_capacity(1 << 20, &mut file);
            self.digest(&mut reader).map_err(io("write pack"))?
        };
        file.seek(SeekFrom::End(0)).map_err(io("write pack"))?;
        file.write_all(&trailer).map_err(io("write pack"))?;
        if self.sync {
            file.sync_all().map_err(io("write pack"))?;
        }
        drop(file);

        let index = self.path.with_extension("idx");
        let bytes = self.index_bytes(&trailer);
        std::fs::write(&index, &bytes).map_err(io("write pack index"))?;
        let checksum = hex::encode(&trailer);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::rename(&index, dir.join(format!("pack-{checksum}.idx")))
            .map_err(io("write pack index"))?;
        let pack = dir.join(format!("pack-{checksum}.pack"));
        std::fs::rename(&self.path, &pack).map_err(io("write pack"))?;
        Ok(Some(pack))
    }

    fn digest(&self, reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
        match self.format {
            ObjectFormat::Sha1 => digest_reader::<sha1::Sha1>(reader),
            ObjectFormat::Sha256 => digest_reader::<sha2::Sha256>(reader),
        }
    }

    /// A version 2 pack index: a fan-out table by first byte, the sorted ids, each
    /// entry's CRC-32, its offset (31 bits, or an index into a table of 64-bit ones),
    /// the pack's checksum, and the index's own.
    fn index_bytes(&self, pack_checksum: &[u8]) -> Vec<u8> {
        let mut entries: Vec<(&Oid, &(u64, u32))> = self.written.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let raw = self.format.raw_len();
        let mut out = Vec::with_capacity(8 + 1024 + entries.len() * (raw + 8) + 2 * raw);
        out.extend_from_slice(b"\xfftOc\0\0\0\x02");
        let mut fanout = [0u32; 256];
        for (oid, _) in &entries {
            fanout[usize::from(oid.as_bytes()[0])] += 1;
        }
        let mut total = 0u32;
        for count in fanout {
            total += count;
            out.extend_from_slice(&total.to_be_bytes());
        }
        for (oid, _) in &entries {
            out.extend_from_slice(oid.as_bytes());
        }
        for (_, (_, crc)) in &entries {
            out.extend_from_slice(&crc.to_be_bytes());
        }
        let mut large: Vec<u64> = Vec::new();
        for (_, (offset, _)) in &entries {
            let small = match u32::try_from(*offset) {
                Ok(small) if small < 0x8000_0000 => small,
                _ => {
                    large.push(*offset);
                    0x8000_0000 | (large.len() as u32 - 1)
                }
            };
            out.extend_from_slice(&small.to_be_bytes());
        }
        for offset in large {
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out.extend_from_slice(pack_checksum);
        let own = self
            .digest(&mut out.as_slice())
            .unwrap_or_else(|_| unreachable!("reading memory"));
        out.extend_from_slice(&own);
        out
    }
}

/// How an entry names its delta base: by id, or by how far before it the base starts.
#[derive(Clone, Copy)]
enum EntryBase<'a> {
    Id(&'a Oid),
    Distance(u64),
}

impl<'a> EntryBase<'a> {
    /// By distance when the base is already written (before `position`).
    fn shorter(self, written: &OidMap<(u64, u32)>, position: u64) -> Self {
        match self {
            Self::Id(base) => written
                .get(base)
                .map_or(self, |&(offset, _)| Self::Distance(position - offset)),
            distance => distance,
        }
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(self.path.with_extension("idx"));
    }
}

fn digest_reader<D: Digest>(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut hasher = D::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    Ok(hasher.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_match_gits() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            ObjectFormat::Sha1.hash(Kind::Blob, b"hello\n").to_hex(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // The empty tree.
        assert_eq!(
            ObjectFormat::Sha1.hash(Kind::Tree, b"").to_hex(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        assert_eq!(
            ObjectFormat::Sha256.hash(Kind::Tree, b"").to_hex(),
            "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
        );
    }

    #[test]
    fn trees_sort_directories_as_if_they_ended_in_a_slash() {
        let oid = ObjectFormat::Sha1.hash(Kind::Blob, b"");
        let entry = |mode: &[u8], name: &[u8]| TreeEntry {
            mode: mode.to_vec(),
            name: name.to_vec(),
            oid,
        };
        let mut entries = vec![
            entry(b"100644", b"a.txt"),
            entry(b"40000", b"a"),
            entry(b"100644", b"a-b"),
        ];
        let tree = build_tree(&mut entries);
        let names: Vec<&[u8]> = tree_entries(&tree, ObjectFormat::Sha1)
            .map(|e| e.map(|(_, name, _)| name))
            .collect::<Result<_, _>>()
            .expect("parses");
        // "a-b" < "a.txt" < "a/" in byte order.
        assert_eq!(names, vec![&b"a-b"[..], b"a.txt", b"a"]);
    }

    #[test]
    fn header_fields_keep_continuation_lines() {
        let headers = b"tree 1\nparent 2\ngpgsig -----BEGIN\n line\n -----END\nauthor A\n";
        let fields = header_fields(headers);
        let names: Vec<&[u8]> = fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec![&b"tree"[..], b"parent", b"gpgsig", b"author"]);
        assert_eq!(fields[2].1, b"gpgsig -----BEGIN\n line\n -----END\n");
        let (h, m) = split_message(b"tree 1\n\nmessage\n\nmore");
        assert_eq!((h, m), (&b"tree 1\n"[..], &b"message\n\nmore"[..]));
    }
}
