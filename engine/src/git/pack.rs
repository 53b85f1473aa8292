//! Reading every object of a repository straight from its pack files and loose objects,
//! on several threads, for whole-repository passes (the clean's search, the history
//! scan).
//!
//! `git cat-file --batch-all-objects` resolves each delta on its own and is single
//! threaded; a pass over everything can do better by resolving deltas the way
//! `git index-pack` does: every base object is inflated once and each delta chain is
//! applied from it depth first, so each object's content is produced exactly once.
//! Threads take whole delta trees from a shared counter.
//!
//! Packs are read with positional reads, object by object, never whole: memory grows with
//! the number of objects (one small entry each) and the largest object, not with the
//! pack. A pass may ask for only some objects ([`ObjectStore::read`]): delta trees that
//! hold none of them are not inflated at all, and objects over a size cap are not
//! inflated when nothing is built on them.
//!
//! [`ObjectStore::open`] fails on anything it does not understand (old index versions,
//! unreadable files); callers then fall back to `git cat-file`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::objects::{Kind, ObjectFormat, Oid, OidMap};
use super::{GitError, output};

fn error(message: impl Into<String>) -> GitError {
    GitError::new("read objects", message)
}

struct Pack {
    path: PathBuf,
    file: File,
    /// Where the objects end (the trailer's start).
    end: u64,
    /// Entries in pack order.
    entries: Vec<Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    oid: Oid,
    offset: u64,
    /// Pack type: 1-4 objects, 6 offset delta, 7 reference delta.
    kind: u8,
    /// The object's size (a delta's own size for deltas).
    size: usize,
    /// Where the zlib stream starts.
    data_start: u64,
    /// For deltas: the base's index in `entries`, when it is in this pack.
    base: Option<u32>,
}

/// Where [`ObjectStore::placement`] found an object.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Its rank in the store's order.
    pub order: u64,
    /// The object it is a delta of, when that is in the same pack.
    pub base: Option<Oid>,
}

/// A packed object's entry as its pack holds it (see [`ObjectStore::raw_entries`]).
pub(crate) struct RawEntry<'a> {
    pub oid: Oid,
    /// The type its header states: 1 to 4 for an object, 6 or 7 for a delta.
    pub pack_type: u8,
    /// The size its header states (a delta's own size for a delta).
    pub size: usize,
    /// For a delta, its base's id.
    pub base: Option<Oid>,
    /// The entry's zlib stream.
    pub compressed: &'a [u8],
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

    /// Calls `copy` with the entry of every packed object `want` accepts (its first
    /// copy), as its pack holds it, in the store's order; each pack is read front to
    /// back once. A delta is given with its base's id when the base is in the same
    /// pack; a delta whose base is elsewhere is not given (nor are loose objects).
    pub(crate) fn raw_entries<E: From<GitError>>(
        &self,
        want: impl Fn(&Oid) -> bool,
        mut copy: impl FnMut(RawEntry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut given: OidMap<()> = OidMap::default();
        let mut compressed = Vec::new();
        for pack in &self.packs {
            let failed = |e: std::io::Error| error(format!("{}: {e}", pack.path.display()));
            let mut reader = BufReader::with_capacity(1 << 20, &pack.file);
            // The file's own position is wherever its last reader left it.
            let mut position = reader.seek(SeekFrom::Start(0)).map_err(failed)?;
            for (i, entry) in pack.entries.iter().enumerate() {
                let base = match (entry.kind, entry.base) {
                    (1..=4, _) => None,
                    (_, Some(base)) => Some(pack.entries[base as usize].oid),
                    (_, None) => continue,
                };
                if !want(&entry.oid) || given.contains_key(&entry.oid) {
                    continue;
                }
                let end = pack.data_end(i);
                let len = end
                    .checked_sub(entry.data_start)
                    .and_then(|len| usize::try_from(len).ok())
                    .ok_or_else(|| error(format!("{}: damaged pack", pack.path.display())))?;
                let jump = i64::try_from(entry.data_start)
                    .ok()
                    .zip(i64::try_from(position).ok())
                    .map(|(to, from)| to - from)
                    .ok_or_else(|| error(format!("{}: damaged pack", pack.path.display())))?;
                reader.seek_relative(jump).map_err(failed)?;
                compressed.resize(len, 0);
                reader.read_exact(&mut compressed).map_err(failed)?;
                position = end;
                given.insert(entry.oid, ());
                copy(RawEntry {
                    oid: entry.oid,
                    pack_type: entry.kind,
                    size: entry.size,
                    base,
                    compressed: &compressed,
                })?;
            }
        }
        Ok(())
    }

    /// Where each object `want` accepts is stored, for the first copy found: its place
    /// in the store's order (packs in turn, each in offset order; loose objects last)
    /// and, for a delta whose base is in the same pack, that base. A writer that
    /// follows this order meets every delta's base before the delta.
    pub(crate) fn placement(&self, want: impl Fn(&Oid) -> bool) -> OidMap<Placement> {
        let mut placed = OidMap::default();
        let mut order = 0u64;
        for pack in &self.packs {
            for entry in &pack.entries {
                order += 1;
                if want(&entry.oid) && !placed.contains_key(&entry.oid) {
                    let base = entry.base.map(|b| pack.entries[b as usize].oid);
                    placed.insert(entry.oid, Placement { order, base });
                }
            }
        }
        placed
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
        sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E>
    where
        T: Send,
        E: From<GitError>,
    {
        let everything = |_: &Oid, _: Kind| true;
        self.read(
            repo,
            threads,
            &everything,
            u64::MAX,
            |object: Object<'_>| map(object.oid, object.kind, object.data.unwrap_or_default()),
            sink,
        )
    }

    /// Like [`ObjectStore::for_each`], for the objects `want` accepts only: `map` sees
    /// nothing else, and a delta tree none of whose objects is wanted is not read. An
    /// object larger than `max_size` bytes reaches `map` without its content (and is
    /// not inflated unless a wanted delta is built on it). `sink` gets the results in no
    /// particular order: a delta's may come before its base's.
    pub fn read<T, E>(
        &self,
        repo: &Path,
        threads: usize,
        want: &(dyn Fn(&Oid, Kind) -> bool + Sync),
        max_size: u64,
        map: impl Fn(Object<'_>) -> T + Sync,
        sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E>
    where
        T: Send,
        E: From<GitError>,
    {
        let no_note = |_: &Object<'_>, _: Option<&()>| None;
        self.read_noted(
            repo,
            threads,
            want,
            max_size,
            true,
            no_note,
            |object, _| map(object),
            sink,
        )
    }

    /// Like [`ObjectStore::read`], with a note that each object's deltas see: `note`
    /// makes an object's note from the object and its base's note (`None` for an object
    /// stored whole, or when the base has none), on the thread that walks the object's
    /// delta tree, before anything built on the object is read; `map` gets the object
    /// with its own note. The note of every object that a wanted one is built on is
    /// made, wanted or not. What one pass learns of a base (what a scan found in it) is
    /// so carried to its deltas, which need only look at what they change. `share` says
    /// whether large objects are handed to a free thread for `map` (see
    /// [`SHARED_FROM`]; not worth copying them when `note` does the work).
    #[allow(clippy::too_many_arguments)]
    pub fn read_noted<N, T, E>(
        &self,
        repo: &Path,
        threads: usize,
        want: &(dyn Fn(&Oid, Kind) -> bool + Sync),
        max_size: u64,
        share: bool,
        note: impl Fn(&Object<'_>, Option<&N>) -> Option<N> + Sync,
        map: impl Fn(Object<'_>, Option<&N>) -> T + Sync,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E>
    where
        N: Clone + Send,
        T: Send,
        E: From<GitError>,
    {
        let threads = threads.max(1);
        let stop = AtomicBool::new(false);
        // Results travel in batches: one message (and one wake-up of the receiver) per
        // object costs as much as reading a small object.
        let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<T>, GitError>>(64);
        let children: Vec<Vec<Vec<u32>>> = self.packs.iter().map(Pack::children).collect();
        let plans: Vec<Plan> = self
            .packs
            .iter()
            .zip(&children)
            .map(|(pack, children)| pack.plan(children, want))
            .collect();
        // Work units: (pack, root entry) for every delta tree holding a wanted object,
        // then loose objects.
        // The largest delta trees first: one file's many versions are one tree, read
        // on one thread, and the others should not wait for it at the end.
        let mut roots: Vec<(usize, u32, u64)> = plans
            .iter()
            .enumerate()
            .flat_map(|(p, plan)| plan.roots.iter().map(move |&(root, work)| (p, root, work)))
            .collect();
        roots.sort_by_key(|&(_, _, work)| std::cmp::Reverse(work));
        let roots: Vec<(usize, u32)> = roots.into_iter().map(|(p, root, _)| (p, root)).collect();
        let next = AtomicUsize::new(0);
        // Large objects a busy thread hands over (see `SHARED_FROM`).
        let (share_tx, share_rx) = crossbeam_channel::bounded::<Shared<N>>(threads * 2);
        let result = std::thread::scope(|scope| -> Result<(), E> {
            for _ in 0..threads {
                let tx = tx.clone();
                let (share_tx, share_rx) = (share_tx.clone(), share_rx.clone());
                let (roots, children, plans, next, stop, note, map) =
                    (&roots, &children, &plans, &next, &stop, &note, &map);
                scope.spawn(move || {
                    let mut reader = Inflater::default();
                    let total = roots.len() + self.loose.len();
                    let batch = std::cell::RefCell::new(Vec::with_capacity(BATCH));
                    // Adds a result; sends the batch when full. False once nobody listens.
                    let put = |result: T| -> bool {
                        let mut batch = batch.borrow_mut();
                        batch.push(result);
                        batch.len() < BATCH
                            || tx
                                .send(Ok(std::mem::replace(
                                    &mut *batch,
                                    Vec::with_capacity(BATCH),
                                )))
                                .is_ok()
                    };
                    let flush = || -> bool {
                        let full = std::mem::take(&mut *batch.borrow_mut());
                        full.is_empty() || tx.send(Ok(full)).is_ok()
                    };
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let sent = if i < roots.len() {
                            let (p, root) = roots[i];
                            let emit = &mut |object: Object<'_>, noted: Option<&N>| {
                                if stop.load(Ordering::Relaxed) {
                                    return false;
                                }
                                let large = object.data.is_some_and(|d| d.len() >= SHARED_FROM);
                                if share && large && threads > 1 && !share_tx.is_full() {
                                    match share_tx.try_send(Shared::of(&object, noted)) {
                                        Ok(()) => return true,
                                        Err(e) => {
                                            let shared = e.into_inner();
                                            return put(map(shared.object(), shared.note.as_ref()));
                                        }
                                    }
                                }
                                put(map(object, noted))
                            };
                            self.packs[p].walk(
                                root,
                                &children[p],
                                &plans[p],
                                max_size,
                                &mut reader,
                                note,
                                emit,
                            )
                        } else {
                            read_loose(&self.loose[i - roots.len()], self.format, &mut reader.zlib)
                                .map(|(oid, kind, data)| {
                                    if !want(&oid, kind) {
                                        return true;
                                    }
                                    let size = data.len() as u64;
                                    let data = (size <= max_size).then_some(data.as_slice());
                                    let object = Object {
                                        oid,
                                        kind,
                                        size,
                                        data,
                                        base: None,
                                        delta: None,
                                    };
                                    let noted = note(&object, None);
                                    put(map(object, noted.as_ref()))
                                })
                        };
                        match sent {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => {
                                if flush() {
                                    let _ = tx.send(Err(e));
                                }
                                return;
                            }
                        }
                    }
                    if !flush() {
                        return;
                    }
                    // Out of work of its own: take what the threads still walking hand
                    // over, until every one of them is done.
                    drop(share_tx);
                    for shared in share_rx.iter() {
                        // One at a time: what is handed over is large, and the last
                        // of the work.
                        if stop.load(Ordering::Relaxed)
                            || tx
                                .send(Ok(vec![map(shared.object(), shared.note.as_ref())]))
                                .is_err()
                        {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            drop((share_tx, share_rx));
            for batch in rx.iter() {
                let outcome = (batch.map_err(E::from))
                    .and_then(|batch| batch.into_iter().try_for_each(&mut sink));
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
        let mut orphans: Vec<Oid> = Vec::new();
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
                if !want(&oid, kind) {
                    return Ok(());
                }
                let size = data.len() as u64;
                let object = Object {
                    oid,
                    kind,
                    size,
                    data: (size <= max_size).then_some(data),
                    base: None,
                    delta: None,
                };
                let noted = note(&object, None);
                sink(map(object, noted.as_ref()))
            })?;
        }
        Ok(())
    }
}

/// How many results a reading thread sends at once.
const BATCH: usize = 64;

/// Objects at least this large are handed to a free thread by one busy walking a delta
/// tree: a file's many versions are one delta tree, and what a pass does with each
/// version (a clean's rewrite of a large file holding a value) would otherwise run on one
/// core while the others wait. The object and its base are copied to be handed over; a
/// thread whose hand-over queue is full does the work itself.
const SHARED_FROM: usize = 256 << 10;

/// An object handed to another thread, with its own copies of the content, base, delta
/// and note.
struct Shared<N> {
    oid: Oid,
    kind: Kind,
    size: u64,
    data: Option<Vec<u8>>,
    base: Option<(Oid, Vec<u8>)>,
    delta: Option<Vec<u8>>,
    note: Option<N>,
}

impl<N: Clone> Shared<N> {
    fn of(object: &Object<'_>, note: Option<&N>) -> Self {
        Self {
            oid: object.oid,
            kind: object.kind,
            size: object.size,
            data: object.data.map(<[u8]>::to_vec),
            base: object.base.map(|(oid, data)| (oid, data.to_vec())),
            delta: object.delta.map(<[u8]>::to_vec),
            note: note.cloned(),
        }
    }

    fn object(&self) -> Object<'_> {
        Object {
            oid: self.oid,
            kind: self.kind,
            size: self.size,
            data: self.data.as_deref(),
            base: self
                .base
                .as_ref()
                .map(|(oid, data)| (*oid, data.as_slice())),
            delta: self.delta.as_deref(),
        }
    }
}

/// One object as a pass sees it.
#[derive(Clone, Copy, Debug)]
pub struct Object<'a> {
    pub oid: Oid,
    pub kind: Kind,
    pub size: u64,
    /// The content; `None` when the object is larger than the pass's size cap.
    pub data: Option<&'a [u8]>,
    /// For a delta resolved in its pack: the id and content of the object it was built
    /// on (the base git chose for it, of the same kind).
    pub base: Option<(Oid, &'a [u8])>,
    /// For the same: the delta's instructions (see [`super::delta::copies`]).
    pub delta: Option<&'a [u8]>,
}

/// Which entries of one pack a pass reads.
struct Plan {
    /// The entry itself is wanted.
    wanted: Vec<bool>,
    /// The entry or a delta built on it (at any depth) is wanted.
    needed: Vec<bool>,
    /// Non-delta entries that are needed, in pack order, each with a guess at the work
    /// its delta tree makes (its size times the number of needed entries in the tree).
    roots: Vec<(u32, u64)>,
}

/// A thread's tools for reading objects: the decompressor and the read buffer.
struct Inflater {
    zlib: flate2::Decompress,
    input: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            zlib: flate2::Decompress::new(true),
            input: Vec::new(),
        }
    }
}

/// Compressed bytes are read from the pack in pieces of this size.
const READ_CHUNK: usize = 256 << 10;

impl Pack {
    fn open(idx_path: &Path, path: &Path, format: ObjectFormat) -> Result<Self, GitError> {
        let idx =
            std::fs::read(idx_path).map_err(|e| error(format!("{}: {e}", idx_path.display())))?;
        let failed = |e: std::io::Error| error(format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(failed)?;
        let pack_len = file.metadata().map_err(failed)?.len();
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
        let mut signature = [0u8; 8];
        file.read_exact_at(&mut signature, 0).map_err(|_| bad())?;
        if &signature[..4] != b"PACK" || !matches!(be32(&signature, 4), Some(2 | 3)) {
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
        let offset_of = |i: usize| -> Option<u64> {
            let small = be32(&idx, offsets_at + i * 4)?;
            if small & 0x8000_0000 == 0 {
                return Some(u64::from(small));
            }
            let at = large_at + (small & 0x7fff_ffff) as usize * 8;
            Some(u64::from_be_bytes(idx.get(at..at + 8)?.try_into().ok()?))
        };
        let mut by_offset: Vec<(u64, Oid)> = Vec::with_capacity(count);
        for i in 0..count {
            let oid =
                Oid::from_raw(&idx[oids_at + i * raw..oids_at + (i + 1) * raw]).ok_or_else(bad)?;
            by_offset.push((offset_of(i).ok_or_else(bad)?, oid));
        }
        by_offset.sort_unstable_by_key(|(offset, _)| *offset);
        let end = pack_len.checked_sub(raw as u64).ok_or_else(bad)?;
        // Entries are numbered in pack order; a base is found by its offset, or (for the
        // rare reference delta) by its id in the index's sorted id table.
        let entry_at = |offset: u64| {
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
        // The headers are read in one forward pass; what lies between them is skipped
        // within the buffer or by seeking.
        let mut reader = BufReader::with_capacity(64 << 10, &file);
        let mut position = 0u64;
        let mut header = [0u8; 64];
        let mut entries = Vec::with_capacity(count);
        for &(offset, oid) in &by_offset {
            if offset >= end || offset < 12 {
                return Err(bad());
            }
            // Backwards too: a header read may run past the next entry's start.
            let jump = i64::try_from(offset)
                .ok()
                .zip(i64::try_from(position).ok())
                .map(|(to, from)| to - from)
                .ok_or_else(bad)?;
            reader.seek_relative(jump).map_err(failed)?;
            let available =
                usize::try_from((end - offset).min(header.len() as u64)).unwrap_or(header.len());
            reader
                .read_exact(&mut header[..available])
                .map_err(failed)?;
            position = offset + available as u64;
            let data = &header[..available];
            let mut at = 0usize;
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
                    let mut distance = u64::from(byte & 0x7f);
                    while byte & 0x80 != 0 {
                        byte = *data.get(at).ok_or_else(bad)?;
                        at += 1;
                        if distance >> (u64::BITS - 8) != 0 {
                            return Err(bad());
                        }
                        distance = ((distance + 1) << 7) | u64::from(byte & 0x7f);
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
                data_start: offset + at as u64,
                base,
            });
        }
        drop(reader);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            end,
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

    /// What a pass that wants the objects `want` accepts must read of this pack. A
    /// delta's type is its root's.
    fn plan(&self, children: &[Vec<u32>], want: &(dyn Fn(&Oid, Kind) -> bool + Sync)) -> Plan {
        let n = self.entries.len();
        let mut plan = Plan {
            wanted: vec![false; n],
            needed: vec![false; n],
            roots: Vec::new(),
        };
        // Depth first from each root: an entry is needed when it or any delta built on
        // it is wanted (children are settled before their base).
        let mut stack: Vec<(u32, usize)> = Vec::new();
        for (root, entry) in self.entries.iter().enumerate() {
            let Some(kind) = pack_kind(entry.kind) else {
                continue;
            };
            stack.push((root as u32, 0));
            let mut count = 0u64;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = children[node as usize].get(*next) {
                    *next += 1;
                    stack.push((child, 0));
                    continue;
                }
                stack.pop();
                let i = node as usize;
                plan.wanted[i] = want(&self.entries[i].oid, kind);
                plan.needed[i] =
                    plan.wanted[i] || children[i].iter().any(|&c| plan.needed[c as usize]);
                count += u64::from(plan.needed[i]);
            }
            if plan.needed[root] {
                plan.roots
                    .push((root as u32, (entry.size as u64).saturating_mul(count)));
            }
        }
        plan
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

    /// Where entry `i`'s compressed data ends: where the next entry starts.
    fn data_end(&self, i: usize) -> u64 {
        self.entries.get(i + 1).map_or(self.end, |e| e.offset)
    }

    fn inflate(&self, i: usize, reader: &mut Inflater) -> Result<Vec<u8>, GitError> {
        let entry = &self.entries[i];
        let damaged = || {
            error(format!(
                "{}: damaged object at offset {}",
                self.path.display(),
                entry.offset
            ))
        };
        let mut source = |buffer: &mut Vec<u8>, from: u64| -> Option<()> {
            let end = self.data_end(i);
            let at = entry.data_start.checked_add(from)?;
            let len = usize::try_from(end.checked_sub(at)?).ok()?.min(READ_CHUNK);
            buffer.resize(len, 0);
            self.file.read_exact_at(buffer, at).ok()
        };
        inflate_exact(&mut reader.zlib, &mut reader.input, &mut source, entry.size)
            .ok_or_else(damaged)
    }

    /// Produces a base object and every needed delta built on it, depth first, noting
    /// each (see [`ObjectStore::read_noted`]); `emit` (called for the wanted ones, with
    /// their notes) returns false to stop.
    #[allow(clippy::too_many_arguments)]
    fn walk<N>(
        &self,
        root: u32,
        children: &[Vec<u32>],
        plan: &Plan,
        max_size: u64,
        reader: &mut Inflater,
        note: &dyn Fn(&Object<'_>, Option<&N>) -> Option<N>,
        emit: &mut dyn FnMut(Object<'_>, Option<&N>) -> bool,
    ) -> Result<bool, GitError> {
        let entry = &self.entries[root as usize];
        let kind = pack_kind(entry.kind).ok_or_else(|| error("unknown object type"))?;
        let has_needed_child = |node: u32| {
            children[node as usize]
                .iter()
                .any(|&c| plan.needed[c as usize])
        };
        let size = entry.size as u64;
        if size > max_size && !has_needed_child(root) {
            // Too large, and nothing is built on it: not inflated at all.
            let object = Object {
                oid: entry.oid,
                kind,
                size,
                data: None,
                base: None,
                delta: None,
            };
            if !plan.wanted[root as usize] {
                return Ok(true);
            }
            let noted = note(&object, None);
            return Ok(emit(object, noted.as_ref()));
        }
        let content = self.inflate(root as usize, reader)?;
        let object = Object {
            oid: entry.oid,
            kind,
            size,
            data: (size <= max_size).then_some(content.as_slice()),
            base: None,
            delta: None,
        };
        let noted = note(&object, None);
        if plan.wanted[root as usize] && !emit(object, noted.as_ref()) {
            return Ok(false);
        }
        if !has_needed_child(root) {
            return Ok(true);
        }
        // (entry, its content, its note, the next child to visit)
        let mut stack: Vec<(u32, Vec<u8>, Option<N>, usize)> = vec![(root, content, noted, 0)];
        while let Some((node, content, base_note, next)) = stack.last_mut() {
            let Some(&child) = children[*node as usize].get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            if !plan.needed[child as usize] {
                continue;
            }
            let delta = self.inflate(child as usize, reader)?;
            let result = super::delta::apply(content, &delta)
                .ok_or_else(|| error(format!("{}: damaged delta", self.path.display())))?;
            let size = result.len() as u64;
            let object = Object {
                oid: self.entries[child as usize].oid,
                kind,
                size,
                data: (size <= max_size).then_some(result.as_slice()),
                base: Some((self.entries[*node as usize].oid, content.as_slice())),
                delta: Some(&delta),
            };
            let noted = note(&object, base_note.as_ref());
            if plan.wanted[child as usize] && !emit(object, noted.as_ref()) {
                return Ok(false);
            }
            if has_needed_child(child) {
                stack.push((child, result, noted, 0));
            }
        }
        Ok(true)
    }
}

/// Room reserved ahead of inflating: a size field is only a claim until the data is there.
pub(crate) const RESERVE_LIMIT: usize = 64 << 20;

/// Inflates one zlib stream from the start of `input` that must produce exactly `size`
/// bytes; `None` when it is damaged or of another size.
fn inflate_slice(inflater: &mut flate2::Decompress, input: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut window = Vec::new();
    let mut source = |buffer: &mut Vec<u8>, from: u64| -> Option<()> {
        let from = usize::try_from(from).ok()?;
        buffer.clear();
        buffer.extend_from_slice(
            input
                .get(from..)?
                .get(..READ_CHUNK.min(input.len() - from))?,
        );
        Some(())
    };
    inflate_exact(inflater, &mut window, &mut source, size)
}

/// Inflates one zlib stream that must produce exactly `size` bytes, reading it piece by
/// piece: `source(buffer, from)` fills `buffer` with the compressed bytes from `from`
/// on (an empty buffer at the end). `None` when the stream is damaged or of another size.
fn inflate_exact(
    inflater: &mut flate2::Decompress,
    window: &mut Vec<u8>,
    source: &mut dyn FnMut(&mut Vec<u8>, u64) -> Option<()>,
    size: usize,
) -> Option<Vec<u8>> {
    inflater.reset(true);
    let mut out = Vec::with_capacity(size.saturating_add(1).min(RESERVE_LIMIT));
    // `window` holds the compressed bytes from `window_start` on.
    let mut window_start = 0u64;
    window.clear();
    loop {
        let consumed = inflater.total_in();
        let in_window = usize::try_from(consumed - window_start).ok()?;
        if in_window >= window.len() {
            source(window, consumed)?;
            window_start = consumed;
            if window.is_empty() {
                return None;
            }
        }
        let input = &window[usize::try_from(consumed - window_start).ok()?..];
        if out.len() == out.capacity() {
            // Room for one byte more than promised, to notice a stream that runs over.
            let wanted = (size + 1).saturating_sub(out.len()).clamp(1, RESERVE_LIMIT);
            out.reserve(wanted);
        }
        let before = out.len();
        let status = inflater
            .decompress_vec(input, &mut out, flate2::FlushDecompress::None)
            .ok()?;
        if out.len() > size {
            return None;
        }
        if status == flate2::Status::StreamEnd {
            return (out.len() == size).then_some(out);
        }
        let progressed = out.len() != before || inflater.total_in() != consumed;
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
    let mut whole = inflate_slice(inflater, &compressed, nul + 1 + size).ok_or_else(bad)?;
    whole.drain(..=nul);
    Ok((oid, kind, whole))
}
