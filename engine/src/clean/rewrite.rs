//! The history rewrite. One pass reads every object (in pack order, the fastest git can
//! give them) and searches it for the selected values, keeping only the shape of the
//! graph: a tree's children, a commit's tree and parents, a tag's target. From that
//! shape follows exactly what must change: the blobs that hold a value, every tree
//! above them, every commit whose tree or message changes and every commit after it,
//! and the tags on any of those. Only these are written, as one pack; everything else
//! keeps its id. A blob holding a value is rewritten as it is read (whether it changes
//! depends on it alone); trees are read again, commits are kept from the first pass.
//!
//! Whole files go the same way: a blob removed by id or size, and a tree holding an
//! entry a name pattern removes, are marked in the first pass and change like a blob
//! holding a value (the entry is dropped instead of pointed at a new id). Patterns
//! anchored at the root depend on where a tree is, not only on what it is: a walk from
//! every root tree down the directories they can match finds the trees to rewrite at
//! each path. Everything the tip of a protected ref holds is kept as it is, wherever
//! else it occurs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::git::objects::{
    self, Kind, ObjectFormat, Oid, OidMap, PackWriter, Prepared, field_value, header_fields,
    split_message, tree_entries,
};
use crate::git::pack::{Object, ObjectStore, Placement};

use super::paths::FileSelection;
use super::{CleanError, CleanRun, DroppedSignature, Phase, Selection, WorkRepo};

const UNSEEN: u8 = 0;
const COMMIT: u8 = 1;
const TREE: u8 = 2;
const BLOB: u8 = 3;
const TAG: u8 = 4;

/// What the first pass found an object to be, as flags.
/// It holds a selected value.
const HIT: u8 = 1;
/// A blob removed wherever it is (by id or size).
const REMOVED: u8 = 2;
/// A tree with an entry that a name pattern removes.
const NAMED: u8 = 4;
/// A commit whose root tree loses a path to an anchored pattern.
const ROOT_PATHS: u8 = 8;

/// Git LFS pointers are small text files starting so.
const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/";

/// The graph's shape, with objects numbered in the order they were first named.
#[derive(Default)]
struct Graph {
    index: OidMap<u32>,
    oids: Vec<Oid>,
    kind: Vec<u8>,
    /// What the object itself is: [`HIT`], [`REMOVED`], [`NAMED`], [`ROOT_PATHS`].
    flags: Vec<u8>,
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
    flags: u8,
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
        format: ObjectFormat,
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
        format: ObjectFormat,
        scratch: &mut Vec<u32>,
    ) -> Result<bool, CleanError> {
        let i = self.intern(seen.oid);
        if self.kind[i as usize] != UNSEEN {
            // Any copy holding a value marks the object.
            self.flags[i as usize] |= seen.flags;
            return Ok(false);
        }
        let data = seen.data.as_deref().unwrap_or_default();
        let mut links = Vec::new();
        links_of(format, seen.kind, data, &mut links)?;
        scratch.clear();
        scratch.extend(links.into_iter().map(|oid| self.intern(oid)));
        let code = match seen.kind {
            Kind::Blob => BLOB,
            Kind::Tree => TREE,
            Kind::Commit => COMMIT,
            Kind::Tag => TAG,
        };
        let too_large = || CleanError::Source("the repository is too large to clean".into());
        let start = u32::try_from(self.edges.len()).map_err(|_| too_large())?;
        self.edges.extend_from_slice(scratch);
        u32::try_from(self.edges.len()).map_err(|_| too_large())?;
        let i = i as usize;
        self.kind[i] = code;
        self.flags[i] = seen.flags;

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
        self.flags.push(0);
        self.span.push((0, 0));
        i
    }

    fn children(&self, i: u32) -> &[u32] {
        let (start, len) = self.span[i as usize];
        &self.edges[start as usize..(start + len) as usize]
    }

    fn flags_of(&self, oid: &Oid) -> u8 {
        self.index.get(oid).map_or(0, |&i| self.flags[i as usize])
    }

    /// The tree of a commit read in the first pass.
    fn commit_tree(&self, commit: &Oid) -> Option<Oid> {
        let &i = self.index.get(commit)?;
        (self.kind[i as usize] == COMMIT)
            .then(|| self.children(i).first().map(|&t| self.oids[t as usize]))
            .flatten()
    }

    /// The commit a ref's target is, through any tags.
    fn peel(&self, oid: Oid) -> Option<u32> {
        let mut i = *self.index.get(&oid)?;
        for _ in 0..64 {
            match self.kind[i as usize] {
                COMMIT => return Some(i),
                TAG => i = *self.children(i).first()?,
                _ => return None,
            }
        }
        None
    }

    /// Every object `roots` reach, marked.
    fn closure(&self, roots: impl IntoIterator<Item = u32>) -> Vec<bool> {
        let mut marked = vec![false; self.oids.len()];
        let mut stack: Vec<u32> = roots.into_iter().collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut marked[i as usize], true) {
                stack.extend_from_slice(self.children(i));
            }
        }
        marked
    }
}

/// The objects `data` (of `kind`) names, in order: a tree's entries (not submodules,
/// which name commits of other repositories), a commit's tree then its parents, a
/// tag's target.
fn links_of(
    format: ObjectFormat,
    kind: Kind,
    data: &[u8],
    out: &mut Vec<Oid>,
) -> Result<(), CleanError> {
    match kind {
        Kind::Blob => {}
        Kind::Tree => {
            for entry in tree_entries(data, format) {
                let (mode, _, child) = entry?;
                if mode != b"160000" {
                    out.push(child);
                }
            }
        }
        Kind::Commit | Kind::Tag => {
            let wanted: &[&[u8]] = if kind == Kind::Tag {
                &[b"object"]
            } else {
                &[b"tree", b"parent"]
            };
            let (headers, _) = split_message(data);
            for (name, field) in header_fields(headers) {
                if wanted.contains(&name)
                    && let Some(target) = Oid::from_hex(field_value(field))
                {
                    out.push(target);
                }
            }
        }
    }
    Ok(())
}

/// What the LFS pointer `data` names, if it is one.
fn lfs_pointer(data: &[u8]) -> Option<String> {
    if data.len() > 1024 || !data.starts_with(LFS_POINTER) {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let oid = text.lines().find_map(|l| l.strip_prefix("oid "))?.trim();
    let hex = oid.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| oid.to_owned())
}

/// What the rewrite is asked to do besides removing the selection.
pub(crate) struct Options<'a> {
    /// The targets of protected refs (commits or tags): the trees of these commits are
    /// kept as they are.
    pub protected_tips: &'a [Oid],
    /// Drop a commit that becomes empty (its tree the same as its parent's).
    pub prune_empty: bool,
    /// What every ref points at: a ref (or a tag) may name a tree directly.
    pub ref_targets: &'a [Oid],
}

/// What the tip of a protected ref still holds of the selection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// Blobs holding a selected value.
    pub values: u64,
    /// Files selected for removal (by path, id or size).
    pub files: u64,
}

/// What the rewrite produced.
pub(crate) struct Rewritten {
    graph: Graph,
    format: ObjectFormat,
    /// Everything the tips of protected refs hold, by graph index.
    protected: Vec<bool>,
    /// Blobs were read (values or sizes were selected); else they are known by id only.
    blobs_read: bool,
    /// The blob ids selected, sorted.
    removed_ids: Vec<Oid>,
    /// Blobs are removed by id or size (else no entry is dropped for its blob).
    removes_blobs: bool,
    /// New id per object that changed.
    map: OidMap<Oid>,
    /// New id of each root tree (of a commit, tag or ref) that lost a path to an
    /// anchored pattern: a tree's id there depends on where it is.
    root_map: OidMap<Oid>,
    /// The links (see [`links_of`]) of each object the rewrite wrote, by new id.
    links: OidMap<(Kind, Vec<Oid>)>,
    /// New objects searched as they were written and found clean.
    written_clean: OidMap<()>,
    /// Blobs dropped from at least one tree.
    dropped_blobs: OidMap<()>,
    /// Directories dropped from at least one tree.
    dropped_trees: OidMap<()>,
    pub objects_read: u64,
    pub bytes_read: u64,
    pub commits: u64,
    pub trees_rewritten: u64,
    pub blobs_rewritten: u64,
    pub tags_rewritten: u64,
    /// Tree entries dropped (files and directories), over all rewritten trees.
    pub entries_removed: u64,
    pub commits_pruned: u64,
    pub commit_map: Vec<(Oid, Oid)>,
    /// Per rewritten commit (old id), the oldest rewritten commit on its first-parent
    /// line.
    pub first_changed: OidMap<Oid>,
    /// Commit ids quoted in commit messages and rewritten to the new ids.
    pub message_ids_rewritten: u64,
    /// Quoted ids of rewritten commits that could not be rewritten (the commit they name
    /// was not rewritten yet when the message was: it is on another branch).
    pub message_ids_unmapped: Vec<String>,
    /// Path patterns and blob ids that matched nothing in the history.
    pub unmatched: Vec<String>,
    /// What each protected tip still holds, in the order the tips were given.
    pub held: Vec<Held>,
    pub signatures_dropped: Vec<DroppedSignature>,
    pub read_ms: u64,
    pub rewrite_ms: u64,
}

impl Rewritten {
    fn is_protected(&self, oid: &Oid) -> bool {
        self.graph
            .index
            .get(oid)
            .is_some_and(|&i| self.protected[i as usize])
    }

    /// Whether a child of a tree being rewritten is a blob removed wherever it is.
    fn is_removed(&self, oid: &Oid, files: &FileSelection) -> bool {
        self.removes_blobs
            && (self.graph.flags_of(oid) & REMOVED != 0 || files.names_blob(oid))
            && !self.is_protected(oid)
    }

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
        self.record(selection, new, kind, content)?;
        Ok(new)
    }

    /// Notes a new object's links, and whether it is clean (searched as it is written:
    /// an object id names its content, so this is as good as reading it back later).
    fn record(
        &mut self,
        selection: &Selection,
        new: Oid,
        kind: Kind,
        content: &[u8],
    ) -> Result<(), CleanError> {
        let mut links = Vec::new();
        links_of(self.format, kind, content, &mut links)?;
        self.links.insert(new, (kind, links));
        if !self.holds_selected(new, kind, content, selection)? {
            self.written_clean.insert(new, ());
        }
        Ok(())
    }

    /// Whether an object of the result, read whole, still holds something selected: a
    /// value, an entry a name pattern removes, a blob removed by id or size. (Anchored
    /// patterns depend on where a tree is: [`Rewritten::verify_paths`] checks them.)
    /// What a protected tip holds is kept on purpose and does not count.
    pub fn holds_selected(
        &self,
        oid: Oid,
        kind: Kind,
        data: &[u8],
        selection: &Selection,
    ) -> Result<bool, CleanError> {
        if self.is_protected(&oid) {
            return Ok(false);
        }
        if selection.is_match(data) {
            return Ok(true);
        }
        let files = selection.files();
        Ok(match kind {
            Kind::Blob => files.removes_blob(&oid, data.len() as u64),
            Kind::Tree if !files.has_names() && !self.removes_blobs => false,
            Kind::Tree => {
                let mut found = false;
                for entry in tree_entries(data, self.format) {
                    let (mode, name, child) = entry?;
                    let is_tree = mode == b"40000";
                    if (files.has_names() && files.name_match(name, is_tree).is_some())
                        || (!is_tree && mode != b"160000" && self.is_removed(&child, files))
                    {
                        found = true;
                        break;
                    }
                }
                found
            }
            Kind::Commit | Kind::Tag => false,
        })
    }

    /// The id `old` has in the cleaned history.
    pub fn new_id(&self, old: &Oid) -> Oid {
        self.map.get(old).copied().unwrap_or(*old)
    }

    /// The id a ref's target `old` has in the cleaned history (a ref may name a tree,
    /// which is then a root tree).
    pub fn new_target(&self, old: &Oid) -> Oid {
        self.root_map
            .get(old)
            .copied()
            .unwrap_or_else(|| self.new_id(old))
    }

    /// Every object of the cleaned history that `roots` reach, by its new id, each
    /// once; `roots` are ids before the rewrite (the refs' old targets). An object the
    /// rewrite wrote has the links it was written with; any other is an object of the
    /// source that did not change, and so has the links the first pass read (an object
    /// that keeps its id refers only to objects that keep theirs). This is what `git
    /// rev-list --objects --all` would list on the result, found without reading
    /// anything again. An object the repository lacks is listed as it is (packing it
    /// then fails).
    pub fn reachable(&self, roots: impl IntoIterator<Item = Oid>) -> Vec<Oid> {
        let graph = &self.graph;
        let mut seen: OidMap<()> = OidMap::default();
        let mut stack: Vec<Oid> = roots.into_iter().map(|r| self.new_target(&r)).collect();
        let mut out: Vec<Oid> = Vec::new();
        while let Some(oid) = stack.pop() {
            if seen.insert(oid, ()).is_some() {
                continue;
            }
            out.push(oid);
            if let Some((_, links)) = self.links.get(&oid) {
                stack.extend_from_slice(links);
            } else if let Some(&i) = graph.index.get(&oid) {
                stack.extend(graph.children(i).iter().map(|&c| graph.oids[c as usize]));
            }
        }
        out.sort_unstable();
        out
    }

    /// True when `oid` was read and searched before the rewrite (or as it was written)
    /// and holds nothing selected, or is kept on purpose by a protected tip: being named
    /// by its content, it needs no second look.
    pub fn searched_clean(&self, oid: &Oid) -> bool {
        self.written_clean.contains_key(oid)
            || self.graph.index.get(oid).is_some_and(|&i| {
                let i = i as usize;
                match self.graph.kind[i] {
                    // Blobs not read (nothing selected depends on their content): only
                    // their ids matter.
                    UNSEEN => !self.blobs_read && self.removed_ids.binary_search(oid).is_err(),
                    _ => self.protected[i] || self.graph.flags[i] & (HIT | REMOVED | NAMED) == 0,
                }
            })
    }

    /// Distinct blobs dropped from at least one tree.
    pub fn blobs_removed(&self) -> u64 {
        self.dropped_blobs.len() as u64
    }

    /// Git LFS objects that pointers reached before the rewrite and none reaches after
    /// it. Only a file dropped from a tree (itself or in a dropped directory) can be a
    /// pointer that left; of those no longer in `new_objects` (sorted, what the refs
    /// reach after), the small ones are read.
    pub fn lfs_orphaned(
        &self,
        repo: &std::path::Path,
        new_objects: &[Oid],
    ) -> Result<Vec<String>, CleanError> {
        let graph = &self.graph;
        let inside = graph.closure(
            self.dropped_trees
                .keys()
                .filter_map(|oid| graph.index.get(oid).copied()),
        );
        let mut gone: Vec<Oid> = (0..graph.oids.len())
            .filter(|&i| inside[i] && matches!(graph.kind[i], BLOB | UNSEEN))
            .map(|i| graph.oids[i])
            .chain(self.dropped_blobs.keys().copied())
            .filter(|oid| new_objects.binary_search(oid).is_err())
            .collect();
        gone.sort_unstable();
        gone.dedup();
        let small = objects::small_objects(repo, &gone, 1024)?;
        let mut lost = std::collections::BTreeSet::new();
        objects::read_objects(repo, &small, |_, _, data| -> Result<(), CleanError> {
            if let Some(lfs) = lfs_pointer(data) {
                lost.insert(lfs);
            }
            Ok(())
        })?;
        Ok(lost.into_iter().collect())
    }

    /// Checks that no tree of the result holds a path an anchored pattern removes, by
    /// walking the result's root trees down the directories the patterns can match
    /// (what a protected tip holds is kept on purpose and not walked). Returns the
    /// number of such paths found.
    pub fn verify_paths(
        &self,
        repo: &std::path::Path,
        selection: &Selection,
        objects: &[Oid],
        ref_targets: &[Oid],
    ) -> Result<usize, CleanError> {
        let files = selection.files();
        if !files.has_anchored() {
            return Ok(0);
        }
        let is_tree = |oid: &Oid| match self.links.get(oid) {
            Some((kind, _)) => *kind == Kind::Tree,
            None => self
                .graph
                .index
                .get(oid)
                .is_some_and(|&i| self.graph.kind[i as usize] == TREE),
        };
        // Root trees: of commits, of tags naming a tree, of refs naming one.
        let mut roots: Vec<Oid> = ref_targets.iter().copied().filter(|o| is_tree(o)).collect();
        for oid in objects {
            let target = match self.links.get(oid) {
                // A written commit's tree, a written tag's target, come first.
                Some((Kind::Commit | Kind::Tag, links)) => links.first().copied(),
                Some(_) => None,
                None => self.graph.index.get(oid).and_then(|&i| {
                    matches!(self.graph.kind[i as usize], COMMIT | TAG)
                        .then(|| {
                            self.graph
                                .children(i)
                                .first()
                                .map(|&t| self.graph.oids[t as usize])
                        })
                        .flatten()
                }),
            };
            roots.extend(target.filter(|t| is_tree(t)));
        }
        roots.sort_unstable();
        roots.dedup();
        let walk = walk_paths(
            repo,
            self.format,
            files,
            roots,
            &|oid| self.is_protected(oid),
            &[],
        )?;
        Ok(walk.nodes.iter().map(|n| n.removed.len()).sum())
    }

    /// Where the history of a ref whose target was `tip` starts to differ: the oldest
    /// rewritten commit on its first-parent line, before and after. `None` when the
    /// ref's commit did not change.
    pub fn first_change_of(&self, tip: Oid) -> Option<(Oid, Oid)> {
        let commit = self.graph.oids[self.graph.peel(tip)? as usize];
        let first = *self.first_changed.get(&commit)?;
        Some((first, self.new_id(&first)))
    }

    /// The tree of a commit of the result.
    fn tree_of(&self, commit: &Oid) -> Option<Oid> {
        match self.links.get(commit) {
            Some((Kind::Commit, links)) => links.first().copied(),
            Some(_) => None,
            None => self.graph.commit_tree(commit),
        }
    }
}

pub(crate) fn rewrite(
    repo: &WorkRepo,
    selection: &Selection,
    options: &Options<'_>,
    run: &CleanRun<'_>,
) -> Result<Rewritten, CleanError> {
    run.phase(Phase::Reading);
    let started = std::time::Instant::now();
    let format = repo.format;
    let files = selection.files();
    let mut graph = Graph::default();
    let mut objects_read = 0u64;
    let mut bytes_read = 0u64;
    let mut commits = 0u64;
    let mut scratch: Vec<u32> = Vec::new();
    // Blobs are rewritten as they are read: whether one changes depends on itself only.
    let mut pack = PackWriter::create(&repo.path, format)?;
    let mut map: OidMap<Oid> = OidMap::default();
    let mut written_clean: OidMap<()> = OidMap::default();
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
    let matched: Vec<AtomicBool> = files
        .patterns()
        .iter()
        .map(|_| AtomicBool::new(false))
        .collect();
    // Blobs are read only when what they hold matters: values, or sizes.
    let blobs_read = !selection.is_empty() || files.bigger_than().is_some();
    let look_at_entries = files.has_names() || !files.blob_ids().is_empty();
    let removes_blob = |oid: &Oid, size: u64| files.removes_blob(oid, size);
    let look = |object: Object<'_>| {
        let data = object.data.unwrap_or_default();
        // The search first (its finder is faster than the replacing one), then the
        // rewrite of a blob that holds a value.
        let hit = selection.is_match(data);
        let mut flags = if hit { HIT } else { 0 };
        match object.kind {
            Kind::Blob if removes_blob(&object.oid, data.len() as u64) => flags |= REMOVED,
            Kind::Tree if look_at_entries => {
                for (mode, name, child) in tree_entries(data, format).flatten() {
                    let is_tree = mode == b"40000";
                    for i in files.name_matches(name, is_tree) {
                        matched[i].store(true, Ordering::Relaxed);
                        flags |= NAMED;
                    }
                    // A selected blob, when blobs are not read to be marked themselves.
                    if !is_tree && mode != b"160000" && files.names_blob(&child) {
                        flags |= NAMED;
                    }
                }
            }
            _ => {}
        }
        // A removed blob is not rewritten, and so is no base for one that is.
        let base = object
            .base
            .filter(|(oid, content)| !removes_blob(oid, content.len() as u64));
        let blob = (hit && object.kind == Kind::Blob && flags & REMOVED == 0)
            .then(|| NewBlob::of(format, selection, data, base))
            .flatten();
        Seen {
            oid: object.oid,
            kind: object.kind,
            size: data.len(),
            flags,
            data: (object.kind != Kind::Blob).then(|| data.to_vec()),
            blob,
        }
    };
    let store = ObjectStore::open(&repo.path, format).ok();
    match &store {
        Some(store) => store.read(
            &repo.path,
            threads,
            &|_, kind| blobs_read || kind != Kind::Blob,
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

    // What protected tips hold is kept everywhere: a blob rewritten as it was read
    // keeps its old id after all.
    let tips: Vec<u32> = (options.protected_tips.iter())
        .filter_map(|tip| graph.peel(*tip))
        .collect();
    let tip_trees: Vec<u32> = tips
        .iter()
        .filter_map(|&c| graph.children(c).first().copied())
        .collect();
    let protected = graph.closure(tip_trees.iter().copied());
    map.retain(|old, _| graph.index.get(old).is_none_or(|&i| !protected[i as usize]));
    let blobs_rewritten = map.len() as u64;

    // Anchored patterns: which trees lose a path, and where.
    let is_protected = |oid: &Oid| graph.index.get(oid).is_some_and(|&i| protected[i as usize]);
    let walk = if files.has_anchored() {
        // Root trees: of commits, of tags that name a tree, of refs that do.
        let is_tree = |oid: &Oid| {
            graph
                .index
                .get(oid)
                .is_some_and(|&i| graph.kind[i as usize] == TREE)
        };
        let mut roots: Vec<Oid> = (0..graph.oids.len() as u32)
            .filter(|&i| matches!(graph.kind[i as usize], COMMIT | TAG))
            .filter_map(|i| graph.children(i).first().map(|&t| graph.oids[t as usize]))
            .filter(|oid| is_tree(oid))
            .chain(
                options
                    .ref_targets
                    .iter()
                    .copied()
                    .filter(|oid| is_tree(oid)),
            )
            .collect();
        roots.sort_unstable();
        roots.dedup();
        let walk = walk_paths(&repo.path, format, files, roots, &is_protected, &matched)?;
        Some(walk)
    } else {
        None
    };
    let changed_roots: OidMap<usize> = walk
        .as_ref()
        .map(PathWalk::changed_roots)
        .unwrap_or_default();
    if !changed_roots.is_empty() {
        for i in 0..graph.oids.len() {
            if matches!(graph.kind[i], COMMIT | TAG)
                && let Some(&tree) = graph.children(i as u32).first()
                && changed_roots.contains_key(&graph.oids[tree as usize])
            {
                graph.flags[i] |= ROOT_PATHS;
            }
        }
    }
    // What each protected tip still holds, for the warning.
    let mut held = Vec::new();
    for tip in options.protected_tips {
        let tree = graph
            .peel(*tip)
            .and_then(|c| graph.children(c).first().copied());
        let Some(tree) = tree else {
            held.push(Held::default());
            continue;
        };
        let inside = graph.closure([tree]);
        let mut h = Held::default();
        for (i, &is_inside) in inside.iter().enumerate() {
            if !is_inside {
                continue;
            }
            let flags = graph.flags[i];
            if flags & HIT != 0 && graph.kind[i] == BLOB {
                h.values += 1;
            }
            if flags & (REMOVED | NAMED) != 0 {
                h.files += 1;
            }
        }
        if files.has_anchored() {
            let at_tip = walk_paths(
                &repo.path,
                format,
                files,
                vec![graph.oids[tree as usize]],
                &|_| false,
                &[],
            )?;
            h.files += at_tip
                .nodes
                .iter()
                .map(|n| n.removed.len() as u64)
                .sum::<u64>();
        }
        held.push(h);
    }
    let mut unmatched: Vec<String> = files
        .patterns()
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !m.load(Ordering::Relaxed))
        .map(|(p, _)| p.clone())
        .collect();
    unmatched.extend(
        files
            .blob_ids()
            .iter()
            .filter(|oid| {
                // A blob not read is known by a tree naming it.
                graph
                    .index
                    .get(oid)
                    .is_none_or(|&i| match graph.kind[i as usize] {
                        BLOB => false,
                        UNSEEN => blobs_read,
                        _ => true,
                    })
            })
            .map(Oid::to_hex),
    );

    run.phase(Phase::Rewriting);
    let read_ms = super::millis(started);
    let started = std::time::Instant::now();
    let plan = plan(&graph, &protected);
    let mut rewritten = Rewritten {
        graph,
        format,
        protected,
        blobs_read,
        removed_ids: files.blob_ids().to_vec(),
        removes_blobs: !files.blob_ids().is_empty() || files.bigger_than().is_some(),
        map,
        root_map: OidMap::default(),
        links: OidMap::default(),
        written_clean,
        dropped_blobs: OidMap::default(),
        dropped_trees: OidMap::default(),
        objects_read,
        bytes_read,
        commits,
        trees_rewritten: 0,
        blobs_rewritten,
        tags_rewritten: 0,
        entries_removed: 0,
        commits_pruned: 0,
        commit_map: Vec::new(),
        first_changed: OidMap::default(),
        message_ids_rewritten: 0,
        message_ids_unmapped: Vec::new(),
        unmatched,
        held,
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
    let new_roots = match &walk {
        Some(walk) => write_path_trees(repo, selection, walk, &mut rewritten, &mut pack, run)?,
        None => OidMap::default(),
    };
    write_commits(
        selection,
        &plan.commits,
        &new_roots,
        options.prune_empty,
        &mut rewritten,
        &mut pack,
        run,
    )?;
    write_tags(
        repo,
        selection,
        &plan.tags,
        &new_roots,
        &mut rewritten,
        &mut pack,
        run,
    )?;
    rewritten.root_map = new_roots;
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

/// Marks what changes: an object changes when it holds something selected itself or
/// refers to something that changes, unless a protected tip holds it. Depth-first,
/// children before parents, without recursion (histories are deep).
fn plan(graph: &Graph, protected: &[bool]) -> Plan {
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
                && !protected[i]
                && (graph.flags[i] != 0 || children.iter().any(|&c| state[c as usize] == CHANGED));
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

/// One directory a path walk visited: a tree at a path.
struct PathNode {
    tree: Oid,
    path: Vec<u8>,
    /// Names of entries an anchored pattern removes here.
    removed: Vec<Vec<u8>>,
    /// Subdirectories walked into, by name, with their nodes.
    subtrees: Vec<(Vec<u8>, usize)>,
}

/// The directories of a history that anchored patterns can reach. Each tree at each
/// path is visited once; a node's subdirectories always come after it.
struct PathWalk {
    nodes: Vec<PathNode>,
}

impl PathWalk {
    /// Whether each node loses something, itself or below.
    fn changed(&self) -> Vec<bool> {
        let mut changed = vec![false; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            let node = &self.nodes[i];
            changed[i] = !node.removed.is_empty() || node.subtrees.iter().any(|&(_, c)| changed[c]);
        }
        changed
    }

    /// Root trees that lose something, with their nodes.
    fn changed_roots(&self) -> OidMap<usize> {
        let changed = self.changed();
        (self.nodes.iter().enumerate())
            .filter(|(i, node)| node.path.is_empty() && changed[*i])
            .map(|(i, node)| (node.tree, i))
            .collect()
    }
}

/// Walks from `roots` down every directory an anchored pattern of `files` can match
/// below, level by level (each level's trees read in one batch), noting the entries the
/// patterns remove. Trees `skip` says are kept are not entered. A pattern that matched
/// is marked in `matched` (when given).
fn walk_paths(
    repo: &std::path::Path,
    format: ObjectFormat,
    files: &FileSelection,
    roots: Vec<Oid>,
    skip: &dyn Fn(&Oid) -> bool,
    matched: &[AtomicBool],
) -> Result<PathWalk, CleanError> {
    let mut nodes: Vec<PathNode> = Vec::new();
    let mut known: HashMap<(Oid, Vec<u8>), usize> = HashMap::new();
    let mut level: Vec<usize> = Vec::new();
    for root in roots {
        if skip(&root) || known.contains_key(&(root, Vec::new())) {
            continue;
        }
        known.insert((root, Vec::new()), nodes.len());
        level.push(nodes.len());
        nodes.push(PathNode {
            tree: root,
            path: Vec::new(),
            removed: Vec::new(),
            subtrees: Vec::new(),
        });
    }
    while !level.is_empty() {
        let mut at: OidMap<Vec<usize>> = OidMap::default();
        for &i in &level {
            at.entry(nodes[i].tree).or_default().push(i);
        }
        let trees: Vec<Oid> = at.keys().copied().collect();
        let mut next = Vec::new();
        objects::read_objects(repo, &trees, |oid, _, data| -> Result<(), CleanError> {
            for &i in at.get(&oid).map(Vec::as_slice).unwrap_or_default() {
                for entry in tree_entries(data, format) {
                    let (mode, name, child) = entry?;
                    let is_tree = mode == b"40000";
                    let mut path = nodes[i].path.clone();
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(name);
                    let mut removed = false;
                    for p in files.path_matches(&path, is_tree) {
                        removed = true;
                        if let Some(flag) = matched.get(p) {
                            flag.store(true, Ordering::Relaxed);
                        }
                    }
                    if removed {
                        nodes[i].removed.push(name.to_vec());
                    } else if is_tree && !skip(&child) && files.may_match_below(&path) {
                        let child_node = match known.get(&(child, path.clone())) {
                            Some(&c) => c,
                            None => {
                                let c = nodes.len();
                                known.insert((child, path.clone()), c);
                                nodes.push(PathNode {
                                    tree: child,
                                    path,
                                    removed: Vec::new(),
                                    subtrees: Vec::new(),
                                });
                                next.push(c);
                                c
                            }
                        };
                        nodes[i].subtrees.push((name.to_vec(), child_node));
                    }
                }
            }
            Ok(())
        })?;
        level = next;
    }
    Ok(PathWalk { nodes })
}

/// Compresses `objects` (kind, content, index of the one it is best written as a delta
/// of, always earlier) on every core, then adds them to `pack` in order.
fn pack_together(
    pack: &mut PackWriter,
    format: ObjectFormat,
    objects: &[(Kind, Vec<u8>, Option<usize>)],
) -> Result<(), CleanError> {
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let chunk = objects.len().div_ceil(threads).max(1);
    let prepared: Vec<Prepared> = std::thread::scope(|scope| {
        let parts: Vec<_> = (0..objects.len())
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || {
                    let mut compress = objects::compressor();
                    (start..(start + chunk).min(objects.len()))
                        .map(|i| {
                            let (kind, content, base) = &objects[i];
                            let base = base.map(|j| objects[j].1.as_slice());
                            Prepared::with(format, *kind, content, base, &mut compress)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .map(|part| part.join())
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.into_iter().flatten().collect())
    })
    .map_err(|_| CleanError::Source("compressing new objects failed".into()))?;
    let ids: Vec<Oid> = prepared.iter().map(|p| p.oid).collect();
    for (prepared, (_, _, base)) in prepared.into_iter().zip(objects) {
        let base = base.map(|j| ids[j]).filter(|&b| b != prepared.oid);
        let base = if prepared.is_delta() { base } else { None };
        pack.add_prepared(prepared, base)?;
    }
    Ok(())
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
        let mut batch = Vec::with_capacity(objects.len());
        for (i, (old, kind, content)) in objects.into_iter().enumerate() {
            // Only a base written before: deltas then never form a cycle.
            let base = placement
                .get(&old)
                .and_then(|p| p.base)
                .and_then(|base| at.get(&base))
                .copied()
                .filter(|&j| j < i);
            let new = out.format.hash(kind, &content);
            out.record(selection, new, kind, &content)?;
            batch.push((kind, content, base));
        }
        pack_together(pack, out.format, &batch)
    }
}

/// What becomes of one entry of a tree being rewritten, before the rules every tree
/// follows (removed blobs, name patterns, new ids).
enum Fate {
    Usual,
    Drop,
    Link(Oid),
}

/// An entry a rewritten tree keeps: its mode, (new) name and new id.
type Kept<'a> = (&'a [u8], std::borrow::Cow<'a, [u8]>, Oid);

/// The new content of tree `oid`: each entry dropped when it is removed (by `fate`, a
/// name pattern or its blob being removed), else pointed at its new id, with any
/// selected value taken out of its name.
fn rebuild_tree(
    out: &mut Rewritten,
    selection: &Selection,
    oid: Oid,
    data: &[u8],
    fate: &dyn Fn(&[u8]) -> Fate,
) -> Result<Vec<u8>, CleanError> {
    let files = selection.files();
    let mut kept: Vec<Kept<'_>> = Vec::new();
    let empty_tree = out.format.hash(Kind::Tree, &[]);
    let mut renamed = false;
    for entry in tree_entries(data, out.format) {
        let (mode, name, child) = entry?;
        let is_tree = mode == b"40000";
        let gitlink = mode == b"160000";
        let named = files.has_names() && files.name_match(name, is_tree).is_some();
        let new_child = match fate(name) {
            _ if named => None,
            Fate::Link(new) => Some(new),
            Fate::Drop => None,
            // A submodule's commit is in another repository: kept as it is.
            Fate::Usual if gitlink => Some(child),
            Fate::Usual if !is_tree && out.is_removed(&child, files) => None,
            Fate::Usual => Some(out.new_id(&child)),
        };
        // A directory that lost everything goes too, as git never records an empty one.
        let emptied = is_tree && new_child.is_some_and(|new| new != child && new == empty_tree);
        let Some(new_child) = new_child.filter(|_| !emptied) else {
            out.entries_removed += 1;
            if is_tree {
                out.dropped_trees.insert(child, ());
            } else if !gitlink {
                out.dropped_blobs.insert(child, ());
            }
            continue;
        };
        let name = match selection.replace(name) {
            Some(new_name) => {
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
                std::borrow::Cow::Owned(new_name)
            }
            None => std::borrow::Cow::Borrowed(name),
        };
        kept.push((mode, name, new_child));
    }
    if renamed {
        let mut entries: Vec<objects::TreeEntry> = kept
            .into_iter()
            .map(|(mode, name, oid)| objects::TreeEntry {
                mode: mode.to_vec(),
                name: name.into_owned(),
                oid,
            })
            .collect();
        let bytes = objects::build_tree(&mut entries);
        let mut names: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(CleanError::Name(format!(
                "two entries of tree {oid} share one name"
            )));
        }
        return Ok(bytes);
    }
    // Same names, same order: only ids change and entries go.
    let mut bytes = Vec::with_capacity(data.len());
    for (mode, name, child) in kept {
        bytes.extend_from_slice(mode);
        bytes.push(b' ');
        bytes.extend_from_slice(&name);
        bytes.push(0);
        bytes.extend_from_slice(child.as_bytes());
    }
    Ok(bytes)
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
    objects::read_objects(
        &repo.path,
        trees,
        |oid, _, data| -> Result<(), CleanError> {
            run.check()?;
            let bytes = rebuild_tree(out, selection, oid, data, &|_| Fate::Usual)?;
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

/// Writes the trees that lose a path to an anchored pattern, each at each path it
/// loses one at, deepest first; returns the new id of each root tree that changed. A
/// tree is written as a delta of the one written last at the same path.
fn write_path_trees(
    repo: &WorkRepo,
    selection: &Selection,
    walk: &PathWalk,
    out: &mut Rewritten,
    pack: &mut PackWriter,
    run: &CleanRun<'_>,
) -> Result<OidMap<Oid>, CleanError> {
    let changed = walk.changed();
    let mut wanted: Vec<Oid> = (walk.nodes.iter().zip(&changed))
        .filter(|(_, c)| **c)
        .map(|(n, _)| n.tree)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut contents: OidMap<Vec<u8>> = OidMap::default();
    objects::read_objects(
        &repo.path,
        &wanted,
        |oid, _, data| -> Result<(), CleanError> {
            contents.insert(oid, data.to_vec());
            Ok(())
        },
    )?;
    let mut new_ids: Vec<Option<Oid>> = vec![None; walk.nodes.len()];
    let mut last_at: HashMap<&[u8], (Oid, Vec<u8>)> = HashMap::new();
    for i in (0..walk.nodes.len()).rev().filter(|&i| changed[i]) {
        run.check()?;
        let node = &walk.nodes[i];
        let data = contents
            .get(&node.tree)
            .ok_or_else(|| CleanError::Source(format!("tree {} was not read", node.tree)))?;
        let fate = |name: &[u8]| {
            if node.removed.iter().any(|r| r == name) {
                return Fate::Drop;
            }
            match node.subtrees.iter().find(|(n, _)| n == name) {
                Some(&(_, child)) => new_ids[child].map_or(Fate::Usual, Fate::Link),
                None => Fate::Usual,
            }
        };
        let bytes = rebuild_tree(out, selection, node.tree, data, &fate)?;
        let base = last_at
            .get(node.path.as_slice())
            .map(|(oid, content)| (*oid, content.as_slice()));
        let new = out.write(pack, selection, Kind::Tree, &bytes, base)?;
        out.trees_rewritten += 1;
        run.written();
        new_ids[i] = Some(new);
        last_at.insert(&node.path, (new, bytes));
    }
    Ok((walk.nodes.iter().enumerate())
        .filter(|(_, node)| node.path.is_empty())
        .filter_map(|(i, node)| new_ids[i].map(|new| (node.tree, new)))
        .collect())
}

fn write_commits(
    selection: &Selection,
    commits: &[Oid],
    new_roots: &OidMap<Oid>,
    prune_empty: bool,
    out: &mut Rewritten,
    pack: &mut PackWriter,
    run: &CleanRun<'_>,
) -> Result<(), CleanError> {
    let raw = std::mem::take(&mut out.graph.commit_raw);
    // Every commit id, in order, to resolve the ids messages quote.
    let mut all: Vec<Oid> = raw.keys().copied().collect();
    all.sort_unstable();
    let planned: OidMap<()> = commits.iter().map(|&oid| (oid, ())).collect();
    // Hashed as they are made (each names its parents' new ids), compressed together.
    let mut batch: Vec<(Kind, Vec<u8>, Option<usize>)> = Vec::new();
    let result = commits
        .iter()
        .try_for_each(|&oid| -> Result<(), CleanError> {
            let data = raw
                .get(&oid)
                .map(Vec::as_slice)
                .ok_or_else(|| CleanError::Source(format!("commit {oid} was not read")))?;
            run.check()?;
            let links = out
                .graph
                .index
                .get(&oid)
                .map(|&i| out.graph.children(i).to_vec())
                .unwrap_or_default();
            let old_tree = links.first().map(|&t| out.graph.oids[t as usize]);
            let old_parents: Vec<Oid> = (links.iter().skip(1))
                .map(|&p| out.graph.oids[p as usize])
                .collect();
            let new_tree =
                old_tree.map(|t| new_roots.get(&t).copied().unwrap_or_else(|| out.new_id(&t)));
            let first = match old_parents.first() {
                Some(p) if planned.contains_key(p) => {
                    out.first_changed.get(p).copied().unwrap_or(*p)
                }
                _ => oid,
            };
            out.first_changed.insert(oid, first);
            if prune_empty && let [parent] = old_parents.as_slice() {
                let new_parent = out.new_id(parent);
                let was_empty = old_tree == out.graph.commit_tree(parent);
                if !was_empty && new_tree.is_some() && new_tree == out.tree_of(&new_parent) {
                    out.map.insert(oid, new_parent);
                    out.commit_map.push((oid, new_parent));
                    out.commits_pruned += 1;
                    run.written();
                    return Ok(());
                }
            }
            let (mut rewritten, dropped) = {
                let link = |name: &[u8], old: Oid| match (name, new_tree) {
                    (b"tree", Some(tree)) => tree,
                    _ => out.new_id(&old),
                };
                rewrite_object(selection, &link, oid, Kind::Commit, data)?
            };
            if prune_empty {
                rewritten = without_repeated_parents(&rewritten);
            }
            rewritten = requote_ids(&rewritten, &all, &planned, out);
            let new = out.format.hash(Kind::Commit, &rewritten);
            out.record(selection, new, Kind::Commit, &rewritten)?;
            batch.push((Kind::Commit, rewritten, None));
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
    result?;
    pack_together(pack, out.format, &batch)
}

/// A commit without a parent line that repeats an earlier one (two parents pruned to
/// the same commit).
fn without_repeated_parents(commit: &[u8]) -> Vec<u8> {
    let (headers, message) = split_message(commit);
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut out = Vec::with_capacity(commit.len());
    for (name, field) in header_fields(headers) {
        if name == b"parent" {
            if seen.contains(&field) {
                continue;
            }
            seen.push(field);
        }
        out.extend_from_slice(field);
    }
    if headers.len() < commit.len() {
        out.push(b'\n');
        out.extend_from_slice(message);
    }
    out
}

/// At most this many unmapped quoted ids are listed.
const UNMAPPED_LISTED: usize = 100;

/// A commit with the commit ids its message quotes (7 to 64 hex digits, a whole word,
/// naming exactly one commit of the history) pointed at their new ids, at the same
/// length, as git-filter-repo does. An id of a commit that is rewritten but not yet
/// (it is on another branch) is noted as unmapped.
fn requote_ids(commit: &[u8], all: &[Oid], planned: &OidMap<()>, out: &mut Rewritten) -> Vec<u8> {
    let (headers, message) = split_message(commit);
    if headers.len() >= commit.len() {
        return commit.to_vec();
    }
    let mut text = message.to_vec();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_hexdigit() || (i > 0 && text[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let end = (i..text.len())
            .find(|&j| !matches!(text[j], b'0'..=b'9' | b'a'..=b'f'))
            .unwrap_or(text.len());
        let word_ends = end == text.len() || !text[end].is_ascii_alphanumeric();
        if !(7..=64).contains(&(end - i)) || !word_ends {
            i = end.max(i + 1);
            continue;
        }
        let quoted = String::from_utf8_lossy(&text[i..end]).into_owned();
        let from = all.partition_point(|oid| oid.to_hex().as_str() < quoted.as_str());
        let named: Vec<&Oid> = all[from..]
            .iter()
            .take(2)
            .filter(|oid| oid.to_hex().starts_with(&quoted))
            .collect();
        if let [one] = named.as_slice()
            && planned.contains_key(one)
        {
            match out.map.get(one) {
                Some(new) => {
                    let hex = new.to_hex();
                    let len = quoted.len().min(hex.len());
                    text[i..i + len].copy_from_slice(&hex.as_bytes()[..len]);
                    out.message_ids_rewritten += 1;
                }
                None if out.message_ids_unmapped.len() < UNMAPPED_LISTED => {
                    out.message_ids_unmapped.push(quoted);
                }
                None => {}
            }
        }
        i = end;
    }
    let mut rewritten = headers.to_vec();
    rewritten.push(b'\n');
    rewritten.extend_from_slice(&text);
    rewritten
}

/// A commit or tag with its links (the header fields naming other objects) pointed at
/// their new ids by `link` (given the field's name and old id), the selected values
/// replaced everywhere else, and any signature dropped (it no longer matches). Returns
/// the new content and whether a signature was dropped.
fn rewrite_object(
    selection: &Selection,
    link: &dyn Fn(&[u8], Oid) -> Oid,
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
        let target = links
            .contains(&name)
            .then(|| Oid::from_hex(field_value(field)))
            .flatten();
        match (target, name) {
            (Some(old), _) => {
                rewritten.extend_from_slice(name);
                rewritten.push(b' ');
                rewritten.extend_from_slice(link(name, old).to_hex().as_bytes());
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
    new_roots: &OidMap<Oid>,
    out: &mut Rewritten,
    pack: &mut PackWriter,
    run: &CleanRun<'_>,
) -> Result<(), CleanError> {
    objects::read_objects(&repo.path, tags, |oid, _, data| -> Result<(), CleanError> {
        run.check()?;
        let (rewritten, dropped) = {
            let link = |_: &[u8], old: Oid| {
                new_roots
                    .get(&old)
                    .copied()
                    .unwrap_or_else(|| out.new_id(&old))
            };
            rewrite_object(selection, &link, oid, Kind::Tag, data)?
        };
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
