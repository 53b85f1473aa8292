//! The history rewrite. One pass reads every object (in pack order, the fastest git can
//! give them) and searches it for the selected values, keeping only the shape of the
//! graph: a tree's children, a commit's tree and parents, a tag's target. From that
//! shape follows exactly what must change: the blobs that hold a value, every tree
//! above them, every commit whose tree or message changes and every commit after it,
//! and the tags on any of those. Only these are written, as one pack; everything else
//! keeps its id. A blob holding a value is rewritten as it is read (whether it changes
//! depends on it alone); trees are read again, commits are kept from the first pass.

use crate::git::objects::{
    self, Kind, Oid, OidMap, PackWriter, Prepared, field_value, header_fields, split_message,
    tree_entries,
};
use crate::git::pack::{Object, ObjectStore, Placement};

use super::{CleanError, CleanRun, DroppedSignature, Phase, Selection, WorkRepo};

const UNSEEN: u8 = 0;
const COMMIT: u8 = 1;
const TREE: u8 = 2;
const BLOB: u8 = 3;
const TAG: u8 = 4;

/// The graph's shape, with objects numbered in the order they were first named.
#[derive(Default)]
struct Graph {
    index: OidMap<u32>,
    oids: Vec<Oid>,
    kind: Vec<u8>,
    /// The object itself holds a selected value.
    hit: Vec<bool>,
    /// Children of trees (blobs and trees), parents of commits, targets of tags.
    edges: Vec<u32>,
    /// `edges[start..start + len]` per object; commits keep their tree first.
    span: Vec<(u32, u32)>,
    /// Every commit as read, so that rewriting needs no second read (commits are small
    /// next to the trees and blobs, which are not kept).
    commit_raw: OidMap<Vec<u8>>,
}

/// What the first pass keeps of one object.
struct Seen {
    oid: Oid,
    kind: Kind,
    size: usize,
    hit: bool,
    /// The content of trees, commits and tags (their links); blobs are not kept.
    data: Option<Vec<u8>>,
    /// A blob holding a value, rewritten on the thread that read it.
    blob: Option<NewBlob>,
}

/// A rewritten blob, ready for the pack.
struct NewBlob {
    prepared: Prepared,
    /// The original of the blob it is a delta of (itself rewritten, so in the pack).
    base: Option<Oid>,
    /// The new content holds no selected value.
    clean: bool,
}

impl NewBlob {
    /// `data` with the selected values replaced, hashed and compressed; as a delta of
    /// `base` rewritten when the original was read as a delta of `base` and that holds
    /// a value too (an unchanged base is not in the pack being written). `None` when
    /// nothing is replaced.
    fn of(
        format: crate::git::objects::ObjectFormat,
        selection: &Selection,
        data: &[u8],
        base: Option<(Oid, &[u8])>,
    ) -> Option<Self> {
        let cleaned = selection.replace(data)?;
        let base = base.and_then(|(oid, content)| Some((oid, selection.replace(content)?)));
        let prepared = Prepared::new(
            format,
            Kind::Blob,
            &cleaned,
            base.as_ref().map(|(_, content)| content.as_slice()),
        );
        Some(Self {
            base: base.filter(|_| prepared.is_delta()).map(|(oid, _)| oid),
            clean: !selection.is_match(&cleaned),
            prepared,
        })
    }
}

impl Graph {
    /// Adds what the first pass saw of one object; false when the object was already
    /// recorded (stored twice: in two packs, or packed and loose).
    fn record(
        &mut self,
        seen: Seen,
        format: crate::git::objects::ObjectFormat,
        scratch: &mut Vec<u32>,
    ) -> Result<bool, CleanError> {
        let i = self.intern(seen.oid);
        if self.kind[i as usize] != UNSEEN {
            // Any copy holding a value marks the object.
            self.hit[i as usize] |= seen.hit;
            return Ok(false);
        }
        scratch.clear();
        let data = seen.data.as_deref().unwrap_or_default();
        let code = match seen.kind {
            Kind::Blob => BLOB,
            Kind::Tree => {
                for entry in tree_entries(data, format) {
                    let (mode, _, child) = entry?;
                    // Submodule entries name commits of other repositories.
                    if mode != b"160000" {
                        scratch.push(self.intern(child));
                    }
                }
                TREE
            }
            Kind::Commit => {
                let (headers, _) = split_message(data);
                for (name, field) in header_fields(headers) {
                    if (name == b"tree" || name == b"parent")
                        && let Some(target) = Oid::from_hex(field_value(field))
                    {
                        scratch.push(self.intern(target));
                    }
                }
                COMMIT
            }
            Kind::Tag => {
                let (headers, _) = split_message(data);
                if let Some((_, field)) = header_fields(headers)
                    .into_iter()
                    .find(|(name, _)| *name == b"object")
                    && let Some(target) = Oid::from_hex(field_value(field))
                {
                    scratch.push(self.intern(target));
                }
                TAG
            }
        };
        let too_large = || CleanError::Source("the repository is too large to clean".into());
        let start = u32::try_from(self.edges.len()).map_err(|_| too_large())?;
        self.edges.extend_from_slice(scratch);
        u32::try_from(self.edges.len()).map_err(|_| too_large())?;
        let i = i as usize;
        self.kind[i] = code;
        self.hit[i] = seen.hit;
        self.span[i] = (start, scratch.len() as u32);
        if code == COMMIT
            && let Some(data) = seen.data
        {
            self.commit_raw.insert(seen.oid, data);
        }
        Ok(true)
    }

    fn intern(&mut self, oid: Oid) -> u32 {
        if let Some(&i) = self.index.get(&oid) {
            return i;
        }
        let i = self.oids.len() as u32;
        self.index.insert(oid, i);
        self.oids.push(oid);
        self.kind.push(UNSEEN);
        self.hit.push(false);
        self.span.push((0, 0));
        i
    }

    fn children(&self, i: u32) -> &[u32] {
        let (start, len) = self.span[i as usize];
        &self.edges[start as usize..(start + len) as usize]
    }
}

/// What the rewrite produced.
pub(crate) struct Rewritten {
    graph: Graph,
    /// New id per object that changed.
    map: OidMap<Oid>,
    /// New objects searched as they were written and found clean.
    written_clean: OidMap<()>,
    pub objects_read: u64,
    pub bytes_read: u64,
    pub commits: u64,
    pub trees_rewritten: u64,
    pub blobs_rewritten: u64,
    pub tags_rewritten: u64,
    pub commit_map: Vec<(Oid, Oid)>,
    pub signatures_dropped: Vec<DroppedSignature>,
    pub read_ms: u64,
    pub rewrite_ms: u64,
}

impl Rewritten {
    /// Writes a new object (as a delta against `base`, an object written before, when
    /// that is worth it), searching its exact bytes on the way: an object id names its
    /// content, so this is as good as reading it back later.
    fn write(
        &mut self,
        pack: &mut PackWriter,
        selection: &Selection,
        kind: Kind,
        content: &[u8],
        base: Option<(Oid, &[u8])>,
    ) -> Result<Oid, CleanError> {
        let new = pack.add_against(kind, content, base)?;
        if !selection.is_match(content) {
            self.written_clean.insert(new, ());
        }
        Ok(new)
    }

    /// The id `old` has in the cleaned history.
    pub fn new_id(&self, old: &Oid) -> Oid {
        self.map.get(old).copied().unwrap_or(*old)
    }

    /// Every object of the cleaned history that `roots` reach, by its new id, each
    /// once; `roots` are ids before the rewrite (the refs' old targets). The rewrite
    /// maps the old history onto the new one link for link (a rewritten tree names the
    /// new ids of its entries, a rewritten commit those of its tree and parents), so
    /// what the old refs reach, mapped, is exactly what the new refs reach: what `git
    /// rev-list --objects --all` would list on the result, found without reading
    /// anything again. Two objects that became the same one are listed once; an object
    /// the repository lacks is listed as it is (packing it then fails).
    pub fn reachable(&self, roots: impl IntoIterator<Item = Oid>) -> Vec<Oid> {
        let graph = &self.graph;
        let mut seen = vec![false; graph.oids.len()];
        let mut stack: Vec<u32> = Vec::new();
        let mut out: Vec<Oid> = Vec::new();
        for root in roots {
            match graph.index.get(&root) {
                Some(&i) => stack.push(i),
                None => out.push(root),
            }
        }
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i as usize], true) {
                continue;
            }
            out.push(self.new_id(&graph.oids[i as usize]));
            stack.extend_from_slice(graph.children(i));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// True when `oid` was read and searched before the rewrite and holds no selected
    /// value (so, being named by its content, it needs no second look).
    pub fn searched_clean(&self, oid: &Oid) -> bool {
        self.written_clean.contains_key(oid)
            || self.graph.index.get(oid).is_some_and(|&i| {
                self.graph.kind[i as usize] != UNSEEN && !self.graph.hit[i as usize]
            })
    }
}

pub(crate) fn rewrite(
    repo: &WorkRepo,
    selection: &Selection,
    run: &CleanRun<'_>,
) -> Result<Rewritten, CleanError> {
    run.phase(Phase::Reading);
    let started = std::time::Instant::now();
    let format = repo.format;
    let mut graph = Graph::default();
    let mut objects_read = 0u64;
    let mut bytes_read = 0u64;
    let mut commits = 0u64;
    let mut scratch: Vec<u32> = Vec::new();
    // Blobs are rewritten as they are read: whether one changes depends on itself only.
    let mut pack = PackWriter::create(&repo.path, format)?;
    let mut map: OidMap<Oid> = OidMap::default();
    let mut written_clean: OidMap<()> = OidMap::default();
    let mut blobs_rewritten = 0u64;
    // Rewritten blobs whose base (by its original id) is not written yet: results come
    // in no particular order.
    let mut waiting: OidMap<Vec<(Oid, NewBlob)>> = OidMap::default();
    let mut record = |mut seen: Seen| -> Result<(), CleanError> {
        run.read(seen.size);
        if let Some(blob) = seen.blob.take() {
            let mut ready = vec![(seen.oid, blob)];
            while let Some((old, blob)) = ready.pop() {
                let base = match blob.base {
                    None => None,
                    Some(base) => match map.get(&base) {
                        Some(&new) => Some(new),
                        None => {
                            waiting.entry(base).or_default().push((old, blob));
                            continue;
                        }
                    },
                };
                let new = pack.add_prepared(blob.prepared, base)?;
                if map.insert(old, new).is_none() {
                    blobs_rewritten += 1;
                    run.written();
                }
                if blob.clean {
                    written_clean.insert(new, ());
                }
                ready.extend(waiting.remove(&old).unwrap_or_default());
            }
        }
        let (size, is_commit) = (seen.size, seen.kind == Kind::Commit);
        if !graph.record(seen, format, &mut scratch)? {
            return Ok(());
        }
        objects_read += 1;
        bytes_read += size as u64;
        if objects_read.is_multiple_of(4096) {
            run.check()?;
        }
        if is_commit {
            commits += 1;
        }
        Ok(())
    };
    // Reading the packs directly uses every core; git's own reader is the fallback for
    // stores it does not understand.
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let look = |object: Object<'_>| {
        let data = object.data.unwrap_or_default();
        // The search first (its finder is faster than the replacing one), then the
        // rewrite of a blob that holds a value.
        let hit = selection.is_match(data);
        let blob = (hit && object.kind == Kind::Blob)
            .then(|| NewBlob::of(format, selection, data, object.base))
            .flatten();
        Seen {
            oid: object.oid,
            kind: object.kind,
            size: data.len(),
            hit,
            data: (object.kind != Kind::Blob).then(|| data.to_vec()),
            blob,
        }
    };
    let store = ObjectStore::open(&repo.path, format).ok();
    match &store {
        Some(store) => store.read(
            &repo.path,
            threads,
            &|_, _| true,
            u64::MAX,
            look,
            &mut record,
        )?,
        None => objects::for_each_object(&repo.path, |oid, kind, data| {
            record(look(Object {
                oid,
                kind,
                size: data.len() as u64,
                data: Some(data),
                base: None,
                delta: None,
            }))
        })?,
    }
    run.check()?;
    if let Some(base) = waiting.keys().next() {
        // Cannot happen: a blob is written as a delta only of a base that holds a value
        // too, and every such base is read and rewritten.
        return Err(CleanError::Source(format!(
            "blob {base} was not rewritten, though rewritten blobs are built on it"
        )));
    }

    run.phase(Phase::Rewriting);
    let read_ms = super::millis(started);
    let started = std::time::Instant::now();
    let plan = plan(&graph);
    let mut rewritten = Rewritten {
        graph,
        map,
        written_clean,
        objects_read,
        bytes_read,
        commits,
        trees_rewritten: 0,
        blobs_rewritten,
        tags_rewritten: 0,
        commit_map: Vec::new(),
        signatures_dropped: Vec::new(),
        read_ms,
        rewrite_ms: 0,
    };
    if plan.is_empty() {
        pack.finish()?;
        return Ok(rewritten);
    }
    // Where the original trees are stored, so that the new ones are written in that
    // order, each as a delta of the rewritten version of its original's base.
    let placement = store
        .map(|store| {
            let planned: OidMap<()> = plan.trees.iter().map(|&oid| (oid, ())).collect();
            store.placement(|oid| planned.contains_key(oid))
        })
        .unwrap_or_default();
    let mut pending = Pending::new(&placement);
    write_trees(
        repo,
        selection,
        &plan.trees,
        &mut rewritten,
        &mut pack,
        &mut pending,
        run,
    )?;
    pending.flush(&mut rewritten, &mut pack, selection)?;
    write_commits(selection, &plan.commits, &mut rewritten, &mut pack, run)?;
    write_tags(repo, selection, &plan.tags, &mut rewritten, &mut pack, run)?;
    pack.finish()?;
    rewritten.rewrite_ms = super::millis(started);
    Ok(rewritten)
}

/// The objects to write, each list in an order where what an object refers to comes
/// before it.
#[derive(Default)]
struct Plan {
    blobs: Vec<Oid>,
    trees: Vec<Oid>,
    commits: Vec<Oid>,
    tags: Vec<Oid>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.blobs.is_empty()
            && self.trees.is_empty()
            && self.commits.is_empty()
            && self.tags.is_empty()
    }
}

/// Marks what changes: an object changes when it holds a value itself or refers to
/// something that changes. Depth-first, children before parents, without recursion
/// (histories are deep).
fn plan(graph: &Graph) -> Plan {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const SAME: u8 = 2;
    const CHANGED: u8 = 3;
    let n = graph.oids.len();
    let mut state = vec![NEW; n];
    let mut plan = Plan::default();
    let mut stack: Vec<(u32, u32)> = Vec::new();
    for root in 0..n as u32 {
        if state[root as usize] != NEW {
            continue;
        }
        stack.push((root, 0));
        state[root as usize] = OPEN;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let children = graph.children(node);
            if let Some(&child) = children.get(*next as usize) {
                *next += 1;
                if state[child as usize] == NEW {
                    state[child as usize] = OPEN;
                    stack.push((child, 0));
                }
                continue;
            }
            stack.pop();
            let i = node as usize;
            // A cycle cannot occur between content-addressed objects; an OPEN child
            // (only possible in a corrupt repository) counts as unchanged.
            let changed = graph.kind[i] != UNSEEN
                && (graph.hit[i] || children.iter().any(|&c| state[c as usize] == CHANGED));
            state[i] = if changed { CHANGED } else { SAME };
            if changed {
                let oid = graph.oids[i];
                match graph.kind[i] {
                    BLOB => plan.blobs.push(oid),
                    TREE => plan.trees.push(oid),
                    COMMIT => plan.commits.push(oid),
                    TAG => plan.tags.push(oid),
                    _ => {}
                }
            }
        }
    }
    plan
}

/// Rewritten trees held back to be written in the order the source stores their
/// originals: git writes a delta after its base, so that order meets the rewritten
/// version of each original's base first, and the tree is written as a delta of it (a
/// rewritten tree differs from it about as little as the original did from the
/// original base). At most [`Pending::BUDGET`] bytes wait at once. (Blobs need no
/// waiting: each is written as a delta of its base's rewritten version as it is read.)
struct Pending<'a> {
    placement: &'a OidMap<Placement>,
    objects: Vec<(Oid, Kind, Vec<u8>)>,
    bytes: usize,
}

impl<'a> Pending<'a> {
    const BUDGET: usize = 256 << 20;

    fn new(placement: &'a OidMap<Placement>) -> Self {
        Self {
            placement,
            objects: Vec::new(),
            bytes: 0,
        }
    }

    /// Holds the new content of `old`, whose new id the caller has already recorded.
    fn push(
        &mut self,
        old: Oid,
        kind: Kind,
        content: Vec<u8>,
        out: &mut Rewritten,
        pack: &mut PackWriter,
        selection: &Selection,
    ) -> Result<(), CleanError> {
        self.bytes += content.len();
        self.objects.push((old, kind, content));
        if self.bytes > Self::BUDGET {
            self.flush(out, pack, selection)?;
        }
        Ok(())
    }

    fn flush(
        &mut self,
        out: &mut Rewritten,
        pack: &mut PackWriter,
        selection: &Selection,
    ) -> Result<(), CleanError> {
        let mut objects = std::mem::take(&mut self.objects);
        self.bytes = 0;
        let placement = self.placement;
        objects.sort_by_key(|(old, _, _)| placement.get(old).map_or(u64::MAX, |p| p.order));
        let at: OidMap<usize> = objects
            .iter()
            .enumerate()
            .map(|(i, (old, _, _))| (*old, i))
            .collect();
        for (i, (old, kind, content)) in objects.iter().enumerate() {
            // Only a base written before: deltas then never form a cycle.
            let base = placement
                .get(old)
                .and_then(|p| p.base)
                .and_then(|base| at.get(&base))
                .filter(|&&j| j < i)
                .map(|&j| (out.new_id(&objects[j].0), objects[j].2.as_slice()));
            out.write(pack, selection, *kind, content, base)?;
        }
        Ok(())
    }
}

fn write_trees(
    repo: &WorkRepo,
    selection: &Selection,
    trees: &[Oid],
    out: &mut Rewritten,
    pack: &mut PackWriter,
    pending: &mut Pending<'_>,
    run: &CleanRun<'_>,
) -> Result<(), CleanError> {
    let format = repo.format;
    let raw_len = format.raw_len();
    objects::read_objects(
        &repo.path,
        trees,
        |oid, _, data| -> Result<(), CleanError> {
            run.check()?;
            let mut renamed = false;
            let mut entries = Vec::new();
            let mut bytes = data.to_vec();
            let mut offset = 0usize;
            for entry in tree_entries(data, format) {
                let (mode, name, child) = entry?;
                let entry_len = mode.len() + 1 + name.len() + 1 + raw_len;
                let new_child = if mode == b"160000" {
                    child
                } else {
                    out.map.get(&child).copied().unwrap_or(child)
                };
                // In place: same length, same order.
                let id_at = offset + entry_len - raw_len;
                bytes[id_at..id_at + raw_len].copy_from_slice(new_child.as_bytes());
                offset += entry_len;
                let new_name = selection.replace(name);
                if let Some(new_name) = &new_name {
                    let reserved = matches!(new_name.as_slice(), b"." | b"..")
                        || new_name.eq_ignore_ascii_case(b".git");
                    if reserved
                        || new_name.is_empty()
                        || new_name.contains(&b'/')
                        || new_name.contains(&0)
                    {
                        return Err(CleanError::Name(format!(
                            "an invalid file name in tree {oid}"
                        )));
                    }
                    renamed = true;
                }
                entries.push(objects::TreeEntry {
                    mode: mode.to_vec(),
                    name: new_name.unwrap_or_else(|| name.to_vec()),
                    oid: new_child,
                });
            }
            if renamed {
                bytes = objects::build_tree(&mut entries);
                let mut names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
                names.sort_unstable();
                if names.windows(2).any(|w| w[0] == w[1]) {
                    return Err(CleanError::Name(format!(
                        "two entries of tree {oid} share one name"
                    )));
                }
            }
            let new = format.hash(Kind::Tree, &bytes);
            if new != oid {
                out.map.insert(oid, new);
                out.trees_rewritten += 1;
            }
            pending.push(oid, Kind::Tree, bytes, out, pack, selection)?;
            run.written();
            Ok(())
        },
    )
}

fn write_commits(
    selection: &Selection,
    commits: &[Oid],
    out: &mut Rewritten,
    pack: &mut PackWriter,
    run: &CleanRun<'_>,
) -> Result<(), CleanError> {
    let raw = std::mem::take(&mut out.graph.commit_raw);
    let result = commits
        .iter()
        .try_for_each(|&oid| -> Result<(), CleanError> {
            let data = raw
                .get(&oid)
                .map(Vec::as_slice)
                .ok_or_else(|| CleanError::Source(format!("commit {oid} was not read")))?;
            run.check()?;
            let (rewritten, dropped) =
                rewrite_object(selection, &out.map, oid, Kind::Commit, data)?;
            let new = out.write(pack, selection, Kind::Commit, &rewritten, None)?;
            if dropped {
                out.signatures_dropped.push(DroppedSignature {
                    kind: "commit",
                    old: oid.to_hex(),
                });
            }
            if new != oid {
                out.map.insert(oid, new);
                out.commit_map.push((oid, new));
            }
            run.written();
            Ok(())
        });
    out.graph.commit_raw = raw;
    result
}

/// A commit or tag with its links (the header fields naming other objects) pointed at
/// their new ids, the selected values replaced everywhere else, and any
/// signature dropped (it no longer matches). Returns the new content and whether a
/// signature was dropped.
fn rewrite_object(
    selection: &Selection,
    map: &OidMap<Oid>,
    oid: Oid,
    kind: Kind,
    data: &[u8],
) -> Result<(Vec<u8>, bool), CleanError> {
    let links: &[&[u8]] = match kind {
        Kind::Tag => &[b"object"],
        _ => &[b"tree", b"parent"],
    };
    let (headers, mut message) = split_message(data);
    let mut rewritten = Vec::with_capacity(data.len());
    let mut dropped = false;
    for (name, field) in header_fields(headers) {
        let link = links
            .contains(&name)
            .then(|| Oid::from_hex(field_value(field)))
            .flatten();
        match (link, name) {
            (Some(old), _) => {
                rewritten.extend_from_slice(name);
                rewritten.push(b' ');
                rewritten.extend_from_slice(map.get(&old).unwrap_or(&old).to_hex().as_bytes());
                rewritten.push(b'\n');
            }
            (None, b"gpgsig" | b"gpgsig-sha256") => dropped = true,
            (None, _) if links.contains(&name) => rewritten.extend_from_slice(field),
            (None, _) => rewritten.extend_from_slice(&replace_header(selection, field, oid)?),
        }
    }
    // A signed tag carries its signature at the end of its message.
    if kind == Kind::Tag
        && let Some(at) = signature_start(message)
    {
        message = &message[..at];
        dropped = true;
    }
    if headers.len() < data.len() {
        rewritten.push(b'\n');
        rewritten.extend_from_slice(selection.replace(message).as_deref().unwrap_or(message));
    }
    Ok((rewritten, dropped))
}

/// A header field with the selected values replaced; refused when the replacement
/// would add or remove a line (and so forge or break a header).
fn replace_header(selection: &Selection, field: &[u8], oid: Oid) -> Result<Vec<u8>, CleanError> {
    let Some(replaced) = selection.replace(field) else {
        return Ok(field.to_vec());
    };
    let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    if lines(&replaced) != lines(field) || replaced.contains(&0) {
        return Err(CleanError::Source(format!(
            "replacing a selected value in a header of {oid} would break the object; \
             choose a replacement without line breaks"
        )));
    }
    Ok(replaced)
}

/// Signature blocks that `git tag -s` appends to a tag's message.
const TAG_SIGNATURES: &[&[u8]] = &[
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN PGP MESSAGE-----",
    b"-----BEGIN SSH SIGNATURE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
];

fn write_tags(
    repo: &WorkRepo,
    selection: &Selection,
    tags: &[Oid],
    out: &mut Rewritten,
    pack: &mut PackWriter,
    run: &CleanRun<'_>,
) -> Result<(), CleanError> {
    objects::read_objects(&repo.path, tags, |oid, _, data| -> Result<(), CleanError> {
        run.check()?;
        let (rewritten, dropped) = rewrite_object(selection, &out.map, oid, Kind::Tag, data)?;
        let new = out.write(pack, selection, Kind::Tag, &rewritten, None)?;
        if dropped {
            out.signatures_dropped.push(DroppedSignature {
                kind: "tag",
                old: oid.to_hex(),
            });
        }
        if new != oid {
            out.map.insert(oid, new);
            out.tags_rewritten += 1;
        }
        run.written();
        Ok(())
    })
}

/// Where the signature block of a signed tag starts: the last marker at the start of
/// a line (an earlier one is part of the message, as git reads it).
fn signature_start(message: &[u8]) -> Option<usize> {
    TAG_SIGNATURES
        .iter()
        .filter_map(|marker| {
            memchr::memmem::find_iter(message, marker)
                .filter(|&at| at == 0 || message[at - 1] == b'\n')
                .last()
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_signature_starts_at_the_last_marker_on_its_own_line() {
        let quoted = b"notes\n-----BEGIN PGP SIGNATURE-----\nquoted\n-----END PGP SIGNATURE-----\n";
        let mut message = quoted.to_vec();
        message.extend_from_slice(b"-----BEGIN PGP SIGNATURE-----\nreal\n");
        assert_eq!(signature_start(&message), Some(quoted.len()));
        assert_eq!(
            signature_start(b"see -----BEGIN PGP SIGNATURE----- inline\n"),
            None
        );
        assert_eq!(signature_start(b"-----BEGIN SSH SIGNATURE-----\n"), Some(0));
    }
}
