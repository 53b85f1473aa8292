//! Reading every object of a repository straight from its pack files and loose objects,
//! on several threads, for whole-repository passes (the clean's search).
//!
//! `git cat-file --batch-all-objects` resolves each delta on its own and is single
//! threaded; a pass over everything can do better by resolving deltas the way
//! `git index-pack` does: every base object is inflated once and each delta chain is
//! applied from it depth first, so each object's content is produced exactly once.
//! Threads take whole delta trees from a shared counter.
//!
//! [`ObjectStore::open`] fails on anything it does not understand (old index versions,
//! unreadable files); callers then fall back to `git cat-file`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::objects::{Kind, ObjectFormat, Oid};
use super::{GitError, output};

fn error(message: impl Into<String>) -> GitError {
    GitError::new("read objects", message)
}

struct Pack {
    path: PathBuf,
    data: Vec<u8>,
    /// Entries in pack order.
    entries: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    oid: Oid,
    offset: usize,
    /// Pack type: 1-4 objects, 6 offset delta, 7 reference delta.
    kind: u8,
    size: usize,
    /// Where the zlib stream starts.
    data_start: usize,
    /// For deltas: the base's index in `entries`, when it is in this pack.
    base: Option<u32>,
}

/// The objects of a repository and its alternates, as found on disk.
pub struct ObjectStore {
    format: ObjectFormat,
    packs: Vec<Pack>,
    loose: Vec<PathBuf>,
}

impl ObjectStore {
    /// Reads the index of every pack and lists the loose objects of `repo` and of every
    /// repository it borrows objects from.
    pub fn open(repo: &Path, format: ObjectFormat) -> Result<Self, GitError> {
        let objects = output(
            repo,
            &[
                "rev-parse",
                "--path-format=absolute",
                "--git-path",
                "objects",
            ],
        )?;
        let objects = PathBuf::from(String::from_utf8_lossy(&objects).trim());
        let mut dirs = vec![objects];
        let mut i = 0;
        while i < dirs.len() {
            if dirs.len() > 16 {
                return Err(error("too many alternates"));
            }
            let alternates = dirs[i].join("info").join("alternates");
            if let Ok(text) = std::fs::read_to_string(&alternates) {
                for line in text
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    let path = dirs[i].join(line.trim());
                    let path = path.canonicalize().unwrap_or(path);
                    if !dirs.contains(&path) {
                        dirs.push(path);
                    }
                }
            }
            i += 1;
        }
        let mut store = Self {
            format,
            packs: Vec::new(),
            loose: Vec::new(),
        };
        for dir in &dirs {
            let pack_dir = dir.join("pack");
            if let Ok(listing) = std::fs::read_dir(&pack_dir) {
                let mut names: Vec<PathBuf> = listing
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "idx"))
                    .collect();
                names.sort();
                for idx in names {
                    let pack = idx.with_extension("pack");
                    if pack.exists() {
                        store.packs.push(Pack::open(&idx, &pack, format)?);
                    }
                }
            }
            let Ok(listing) = std::fs::read_dir(dir) else {
                continue;
            };
            for fan in listing.filter_map(Result::ok) {
                let name = fan.file_name();
                let name = name.to_string_lossy();
                if name.len() != 2 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                let rest = format.raw_len() * 2 - 2;
                if let Ok(files) = std::fs::read_dir(fan.path()) {
                    // Only object names: git leaves `tmp_obj_*` files there when a write
                    // is interrupted.
                    store
                        .loose
                        .extend(files.filter_map(Result::ok).filter_map(|f| {
                            let name = f.file_name();
                            let name = name.to_string_lossy();
                            (name.len() == rest && name.bytes().all(|b| b.is_ascii_hexdigit()))
                                .then(|| f.path())
                        }));
                }
            }
        }
        Ok(store)
    }

    /// Object count (packs and loose; an object stored twice counts twice).
    pub fn len(&self) -> usize {
        self.packs.iter().map(|p| p.entries.len()).sum::<usize>() + self.loose.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `map` on `threads` threads with every object's content, and `sink` on the
    /// calling thread with what `map` returned, in no particular order. Deltas whose
    /// base lives in another pack are resolved through `git cat-file` at the end
    /// (`repo` names the repository for that).
    pub fn for_each<T, E>(
        &self,
        repo: &Path,
        threads: usize,
        map: impl Fn(Oid, Kind, &[u8]) -> T + Sync,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E>
    where
        T: Send,
        E: From<GitError>,
    {
        let threads = threads.max(1);
        let stop = AtomicBool::new(false);
        let (tx, rx) = crossbeam_channel::bounded::<Result<T, GitError>>(1024);
        // Work units: (pack, root entry) for every non-delta entry, then loose objects.
        let roots: Vec<(usize, u32)> = self
            .packs
            .iter()
            .enumerate()
            .flat_map(|(p, pack)| {
                pack.entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.kind < 5)
                    .map(move |(i, _)| (p, i as u32))
            })
            .collect();
        let children: Vec<Vec<Vec<u32>>> = self.packs.iter().map(Pack::children).collect();
        let next = AtomicUsize::new(0);
        let mut orphans: Vec<Oid> = Vec::new();
        let result = std::thread::scope(|scope| -> Result<(), E> {
            for _ in 0..threads {
                let tx = tx.clone();
                let (roots, children, next, stop, map) = (&roots, &children, &next, &stop, &map);
                scope.spawn(move || {
                    let mut inflater = flate2::Decompress::new(true);
                    let total = roots.len() + self.loose.len();
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return;
                        }
                        let sent = if i < roots.len() {
                            let (p, root) = roots[i];
                            self.packs[p].walk(
                                root,
                                &children[p],
                                &mut inflater,
                                &mut |oid, kind, data| tx.send(Ok(map(oid, kind, data))).is_ok(),
                            )
                        } else {
                            read_loose(&self.loose[i - roots.len()], self.format, &mut inflater)
                                .map(|(oid, kind, data)| tx.send(Ok(map(oid, kind, &data))).is_ok())
                        };
                        match sent {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                });
            }
            drop(tx);
            for item in rx.iter() {
                let outcome = item.map_err(E::from).and_then(&mut sink);
                if let Err(e) = outcome {
                    stop.store(true, Ordering::Relaxed);
                    // Unblock the senders, then let them see `stop`.
                    for _ in rx.iter() {}
                    return Err(e);
                }
            }
            Ok(())
        });
        result?;
        // Deltas against a base in another pack (rare: packs are normally complete).
        for (p, pack) in self.packs.iter().enumerate() {
            let reached = pack.reachable_from_roots(&children[p]);
            for (i, entry) in pack.entries.iter().enumerate() {
                if !reached[i] {
                    orphans.push(entry.oid);
                }
            }
        }
        if !orphans.is_empty() {
            super::objects::read_objects(repo, &orphans, |oid, kind, data| {
                sink(map(oid, kind, data))
            })?;
        }
        Ok(())
    }
}

impl Pack {
    fn open(idx_path: &Path, path: &Path, format: ObjectFormat) -> Result<Self, GitError> {
        let idx =
            std::fs::read(idx_path).map_err(|e| error(format!("{}: {e}", idx_path.display())))?;
        let data = std::fs::read(path).map_err(|e| error(format!("{}: {e}", path.display())))?;
        let raw = format.raw_len();
        let be32 = |b: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let bad = || {
            error(format!(
                "{}: unsupported or damaged pack index",
                idx_path.display()
            ))
        };
        if idx.get(..4) != Some(b"\xfftOc".as_slice()) || be32(&idx, 4) != Some(2) {
            return Err(bad());
        }
        if data.get(..4) != Some(b"PACK".as_slice()) || !matches!(be32(&data, 4), Some(2 | 3)) {
            return Err(bad());
        }
        let count = be32(&idx, 8 + 255 * 4).ok_or_else(bad)? as usize;
        // The index must hold what its header promises before anything is reserved.
        if idx.len() < 8 + 256 * 4 + count * (raw + 8) + 2 * raw {
            return Err(bad());
        }
        let oids_at = 8 + 256 * 4;
        let crcs_at = oids_at + count * raw;
        let offsets_at = crcs_at + count * 4;
        let large_at = offsets_at + count * 4;
        let offset_of = |i: usize| -> Option<usize> {
            let small = be32(&idx, offsets_at + i * 4)?;
            if small & 0x8000_0000 == 0 {
                return Some(small as usize);
            }
            let at = large_at + (small & 0x7fff_ffff) as usize * 8;
            usize::try_from(u64::from_be_bytes(idx.get(at..at + 8)?.try_into().ok()?)).ok()
        };
        let mut by_offset: Vec<(usize, Oid)> = Vec::with_capacity(count);
        for i in 0..count {
            let oid =
                Oid::from_raw(&idx[oids_at + i * raw..oids_at + (i + 1) * raw]).ok_or_else(bad)?;
            by_offset.push((offset_of(i).ok_or_else(bad)?, oid));
        }
        by_offset.sort_unstable_by_key(|(offset, _)| *offset);
        let end = data.len().checked_sub(raw).ok_or_else(bad)?;
        // Entries are numbered in pack order; a base is found by its offset, or (for the
        // rare reference delta) by its id in the index's sorted id table.
        let entry_at = |offset: usize| {
            by_offset
                .binary_search_by_key(&offset, |(o, _)| *o)
                .ok()
                .map(|i| i as u32)
        };
        let idx_oids = &idx[oids_at..oids_at + count * raw];
        let entry_of = |oid: &Oid| {
            let (mut lo, mut hi) = (0, count);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match idx_oids[mid * raw..(mid + 1) * raw].cmp(oid.as_bytes()) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return entry_at(offset_of(mid)?),
                }
            }
            None
        };
        let mut entries = Vec::with_capacity(count);
        for &(offset, oid) in &by_offset {
            if offset >= end {
                return Err(bad());
            }
            let mut at = offset;
            let mut byte = *data.get(at).ok_or_else(bad)?;
            at += 1;
            let kind = (byte >> 4) & 7;
            let mut size = usize::from(byte & 0x0f);
            let mut shift = 4;
            while byte & 0x80 != 0 {
                byte = *data.get(at).ok_or_else(bad)?;
                at += 1;
                if shift > 60 {
                    return Err(bad());
                }
                size |= usize::from(byte & 0x7f) << shift;
                shift += 7;
            }
            let base = match kind {
                1..=4 => None,
                6 => {
                    let mut byte = *data.get(at).ok_or_else(bad)?;
                    at += 1;
                    let mut distance = usize::from(byte & 0x7f);
                    while byte & 0x80 != 0 {
                        byte = *data.get(at).ok_or_else(bad)?;
                        at += 1;
                        if distance >> (usize::BITS - 8) != 0 {
                            return Err(bad());
                        }
                        distance = ((distance + 1) << 7) | usize::from(byte & 0x7f);
                    }
                    let base_offset = offset.checked_sub(distance).ok_or_else(bad)?;
                    Some(entry_at(base_offset).ok_or_else(bad)?)
                }
                7 => {
                    let base =
                        Oid::from_raw(data.get(at..at + raw).ok_or_else(bad)?).ok_or_else(bad)?;
                    at += raw;
                    // A base outside this pack is resolved later through git.
                    entry_of(&base)
                }
                _ => return Err(bad()),
            };
            entries.push(Entry {
                oid,
                offset,
                kind,
                size,
                data_start: at,
                base,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            data,
            entries,
        })
    }

    /// Deltas per base entry.
    fn children(&self) -> Vec<Vec<u32>> {
        let mut children = vec![Vec::new(); self.entries.len()];
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(base) = e.base {
                children[base as usize].push(i as u32);
            }
        }
        children
    }

    fn reachable_from_roots(&self, children: &[Vec<u32>]) -> Vec<bool> {
        let mut reached = vec![false; self.entries.len()];
        let mut stack: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&i| self.entries[i as usize].kind < 5)
            .collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut reached[i as usize], true) {
                stack.extend(&children[i as usize]);
            }
        }
        reached
    }

    fn inflate(
        &self,
        entry: &Entry,
        inflater: &mut flate2::Decompress,
    ) -> Result<Vec<u8>, GitError> {
        inflate_exact(inflater, &self.data[entry.data_start..], entry.size).ok_or_else(|| {
            error(format!(
                "{}: damaged object at offset {}",
                self.path.display(),
                entry.offset
            ))
        })
    }

    /// Produces a base object and every delta built on it, depth first; `emit` returns
    /// false to stop.
    fn walk(
        &self,
        root: u32,
        children: &[Vec<u32>],
        inflater: &mut flate2::Decompress,
        emit: &mut dyn FnMut(Oid, Kind, &[u8]) -> bool,
    ) -> Result<bool, GitError> {
        let entry = &self.entries[root as usize];
        let kind = pack_kind(entry.kind).ok_or_else(|| error("unknown object type"))?;
        let content = self.inflate(entry, inflater)?;
        if !emit(entry.oid, kind, &content) {
            return Ok(false);
        }
        // (entry, its content, the next child to visit)
        let mut stack: Vec<(u32, Vec<u8>, usize)> = vec![(root, content, 0)];
        while let Some((node, content, next)) = stack.last_mut() {
            let Some(&child) = children[*node as usize].get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            let delta = self.inflate(&self.entries[child as usize], inflater)?;
            let result = apply_delta(content, &delta)
                .ok_or_else(|| error(format!("{}: damaged delta", self.path.display())))?;
            if !emit(self.entries[child as usize].oid, kind, &result) {
                return Ok(false);
            }
            if children[child as usize].is_empty() {
                continue;
            }
            stack.push((child, result, 0));
        }
        Ok(true)
    }
}

/// Room reserved ahead of inflating: a size field is only a claim until the data is there.
const RESERVE_LIMIT: usize = 64 << 20;

/// Inflates one zlib stream from the start of `input` that must produce exactly `size`
/// bytes; `None` when it is damaged or of another size.
fn inflate_exact(inflater: &mut flate2::Decompress, input: &[u8], size: usize) -> Option<Vec<u8>> {
    inflater.reset(true);
    let mut out = Vec::with_capacity(size.saturating_add(1).min(RESERVE_LIMIT));
    loop {
        if out.len() == out.capacity() {
            // Room for one byte more than promised, to notice a stream that runs over.
            let wanted = (size + 1).saturating_sub(out.len()).clamp(1, RESERVE_LIMIT);
            out.reserve(wanted);
        }
        let consumed = usize::try_from(inflater.total_in()).ok()?;
        let before = out.len();
        let status = inflater
            .decompress_vec(
                input.get(consumed..)?,
                &mut out,
                flate2::FlushDecompress::None,
            )
            .ok()?;
        if out.len() > size {
            return None;
        }
        if status == flate2::Status::StreamEnd {
            return (out.len() == size).then_some(out);
        }
        let progressed = out.len() != before || inflater.total_in() as usize != consumed;
        if !progressed && out.len() < out.capacity() {
            // No progress with room to spare: the input ended early.
            return None;
        }
    }
}

fn pack_kind(kind: u8) -> Option<Kind> {
    match kind {
        1 => Some(Kind::Commit),
        2 => Some(Kind::Tree),
        3 => Some(Kind::Blob),
        4 => Some(Kind::Tag),
        _ => None,
    }
}

fn varint(delta: &[u8], at: &mut usize) -> Option<usize> {
    let mut value = 0usize;
    let mut shift = 0;
    loop {
        let byte = *delta.get(*at)?;
        *at += 1;
        if shift > 60 {
            return None;
        }
        value |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
}

/// Applies a git delta to `base`; `None` when the delta does not fit it.
fn apply_delta(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    if varint(delta, &mut at)? != base.len() {
        return None;
    }
    let size = varint(delta, &mut at)?;
    let mut out = Vec::with_capacity(size.min(RESERVE_LIMIT));
    while at < delta.len() {
        let op = delta[at];
        at += 1;
        if op & 0x80 != 0 {
            let mut offset = 0usize;
            let mut len = 0usize;
            for bit in 0..4 {
                if op & (1 << bit) != 0 {
                    offset |= usize::from(*delta.get(at)?) << (8 * bit);
                    at += 1;
                }
            }
            for bit in 0..3 {
                if op & (0x10 << bit) != 0 {
                    len |= usize::from(*delta.get(at)?) << (8 * bit);
                    at += 1;
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            out.extend_from_slice(base.get(offset..offset.checked_add(len)?)?);
            if out.len() > size {
                return None;
            }
        } else if op != 0 {
            let len = usize::from(op);
            out.extend_from_slice(delta.get(at..at + len)?);
            at += len;
            if out.len() > size {
                return None;
            }
        } else {
            return None;
        }
    }
    (out.len() == size).then_some(out)
}

fn read_loose(
    path: &Path,
    format: ObjectFormat,
    inflater: &mut flate2::Decompress,
) -> Result<(Oid, Kind, Vec<u8>), GitError> {
    let bad = || error(format!("{}: damaged loose object", path.display()));
    let name = match (path.parent().and_then(|p| p.file_name()), path.file_name()) {
        (Some(dir), Some(file)) => format!("{}{}", dir.to_string_lossy(), file.to_string_lossy()),
        _ => return Err(bad()),
    };
    let oid = Oid::from_hex(name.as_bytes()).ok_or_else(bad)?;
    if oid.as_bytes().len() != format.raw_len() {
        return Err(bad());
    }
    let compressed = std::fs::read(path).map_err(|e| error(format!("{}: {e}", path.display())))?;
    // The header (`blob 1234\0`) first, then exactly the size it states.
    inflater.reset(true);
    let mut head = Vec::with_capacity(64);
    inflater
        .decompress_vec(&compressed, &mut head, flate2::FlushDecompress::None)
        .map_err(|_| bad())?;
    let nul = memchr::memchr(0, &head).ok_or_else(bad)?;
    let header = std::str::from_utf8(&head[..nul]).map_err(|_| bad())?;
    let (kind, size) = header.split_once(' ').ok_or_else(bad)?;
    let kind = Kind::from_name(kind.as_bytes()).ok_or_else(bad)?;
    let size: usize = size.parse().map_err(|_| bad())?;
    let mut whole = inflate_exact(inflater, &compressed, nul + 1 + size).ok_or_else(bad)?;
    whole.drain(..=nul);
    Ok((oid, kind, whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_copy_and_insert() {
        let base = b"hello, world";
        // base size 12, result size 11: copy 5 bytes from 0, insert "!!", copy 4 from 8.
        let delta = [12, 11, 0x90, 5, 2, b'!', b'!', 0x91, 8, 4];
        assert_eq!(
            apply_delta(base, &delta).as_deref(),
            Some(&b"hello!!orld"[..])
        );
        // A copy beyond the base is refused, not a panic.
        assert_eq!(apply_delta(base, &[12, 4, 0x91, 10, 4]), None);
        assert_eq!(apply_delta(base, &[3, 0]), None);
    }
}
