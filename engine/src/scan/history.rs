//! The whole history of a repository, read straight from its packs and loose objects.
//!
//! Three steps, none of them through `git log`:
//! 1. every commit, tree and tag is inflated on all cores (they are small next to the
//!    blobs: tokio's 86 000 trees and 23 000 commits hold 64 MiB against 3.3 GiB of
//!    blobs) and kept as a compact graph: interned names, object numbers, commit dates;
//!    commit messages are scanned on the way;
//! 2. the graph is walked from the refs, commit by commit, each tree once, which names
//!    every reachable blob with the commit and path that introduced it;
//! 3. every pack is read again for those blobs only, each delta chain resolved once, and
//!    each blob is scanned by the thread that inflated it, while it is in the cache. A
//!    blob stored as a delta takes its base's results where the delta copies what
//!    decided them (keywords, and rules' windows with their checks); only the bytes it
//!    inserts, the seams between its copies and the windows that are new are searched
//!    (see `Detector::see`).
//!
//! "Earliest": commits are visited parents before children and, among the commits whose
//! parents have all been visited, the oldest committer date first (ties: the order in
//! which the refs and their parents list them). A blob is attributed to the first commit
//! in that order whose tree holds it, at the first path (in git's tree order) it has
//! there. Blobs and trees that a ref names directly (`git tag name <blob>`) come first,
//! attributed to the ref with no commit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::git::objects::{
    Kind, ObjectFormat, Oid, OidMap, field_value, header_fields, split_message,
};
use crate::git::pack::{Object, ObjectStore};
use crate::git::{GitError, output};

use super::detect::{Seen, is_lock_file};
use super::report::{Findings, OccurrenceKind, SkipReason};
use super::{Context, Origin, ScanError, is_binary};

const UNSEEN: u8 = 0;
const COMMIT: u8 = 1;
const TREE: u8 = 2;
const TAG: u8 = 3;

/// Scans every blob reachable from any ref or `HEAD`, every commit message and every
/// annotated tag's message. `None` when the object store is in a form the pack reader
/// does not take (the caller then reads history through git).
pub(crate) fn scan_all(
    ctx: &Context<'_>,
    repo: &Path,
) -> Result<Option<(Findings, u64)>, ScanError> {
    // Git lists the refs while the pack indexes are read.
    let (opened, refs) = std::thread::scope(|scope| {
        let refs = scope.spawn(|| list_refs(repo));
        let opened = ObjectFormat::of(repo).map(|format| (format, ObjectStore::open(repo, format)));
        let refs = refs.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (opened, refs)
    });
    let (format, opened) = opened?;
    let Ok(store) = opened else {
        return Ok(None);
    };
    let refs = refs?;
    let threads = ctx.scanner.threads;

    // 1. Commits, trees and tags.
    let mut graph = Graph::with_capacity(store.len());
    let not_blobs = |_: &Oid, kind: Kind| kind != Kind::Blob;
    store.read(
        repo,
        threads,
        &not_blobs,
        u64::MAX,
        |object: Object<'_>| parse(ctx, object),
        |parsed| -> Result<(), ScanError> {
            if ctx.cancelled() {
                return Err(ScanError::Cancelled);
            }
            graph.record(parsed, format)
        },
    )?;

    // 2. Who introduced each blob.
    let mut findings = Findings::default();
    let mut claims = Claims::default();
    walk(ctx, &mut graph, &refs.roots, &mut claims, &mut findings)?;
    ctx.enumeration_done();

    // 3. The blobs, each once (an object may be stored twice: in two packs, or packed
    // and loose; the first copy read is scanned).
    let wanted: OidMap<(Vec<Origin>, AtomicBool)> = claims
        .origins
        .into_iter()
        .map(|(oid, origins)| (oid, (origins, AtomicBool::new(false))))
        .collect();
    let is_wanted = |oid: &Oid, kind: Kind| kind == Kind::Blob && wanted.contains_key(oid);
    let detector = &ctx.scanner.detector;
    // What detection finds in each blob, from its base's where it is a delta (see
    // `Detector::see`): a version of a file is searched only where it differs. Run on
    // the thread that walks the blob's delta tree, before the deltas built on it.
    let note = |object: &Object<'_>, base: Option<&Seen>| -> Option<Seen> {
        let data = object.data?;
        if ctx.cancelled() || is_binary(data) {
            return None;
        }
        let memo = Some(&ctx.memo);
        base.zip(object.delta)
            .and_then(|(seen, delta)| detector.see(data, Some((seen, delta)), memo))
            .or_else(|| detector.see(data, None, memo))
    };
    store.read_noted(
        repo,
        threads,
        &is_wanted,
        ctx.max_blob_size(),
        false,
        note,
        |object: Object<'_>, seen: Option<&Seen>| {
            let mut local = Findings::default();
            let Some((origins, taken)) = wanted.get(&object.oid) else {
                return local;
            };
            if ctx.cancelled() || taken.swap(true, Ordering::Relaxed) {
                return local;
            }
            if let Some(first) = origins.first() {
                ctx.blob_sized(object.oid, object.size, first);
            }
            let mut hits = Vec::new();
            for origin in origins {
                match object.data {
                    Some(data) => ctx.scan_item(data, origin, seen, &mut hits, &mut local),
                    None => ctx.skip(origin, object.size, SkipReason::TooLarge),
                }
            }
            local.name_blob(0, || object.oid.to_hex());
            local
        },
        |local| -> Result<(), ScanError> {
            if ctx.cancelled() {
                return Err(ScanError::Cancelled);
            }
            findings.merge(local);
            Ok(())
        },
    )?;
    // A blob a tree names that the repository does not have (a partial clone).
    for (origins, taken) in wanted.values() {
        if !taken.load(Ordering::Relaxed) {
            for origin in origins {
                ctx.skip(origin, 0, SkipReason::Missing);
            }
        }
    }
    Ok(Some((findings, refs.count)))
}

struct Refs {
    /// Refs listed by `git for-each-ref`.
    count: u64,
    /// `(name, id)` of every ref, then `HEAD`.
    roots: Vec<(String, Oid)>,
}

fn list_refs(repo: &Path) -> Result<Refs, GitError> {
    let out = output(repo, &["for-each-ref", "--format=%(objectname) %(refname)"])?;
    let mut roots: Vec<(String, Oid)> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|line| {
            let (oid, name) = line.split_once(' ')?;
            Some((name.to_owned(), Oid::from_hex(oid.as_bytes())?))
        })
        .collect();
    let count = roots.len() as u64;
    // `git log --all` reads a detached HEAD too.
    if let Ok(head) = output(repo, &["rev-parse", "-q", "--verify", "HEAD"])
        && let Some(oid) = Oid::from_hex(String::from_utf8_lossy(&head).trim().as_bytes())
    {
        roots.push(("HEAD".into(), oid));
    }
    Ok(Refs { count, roots })
}

/// What the first pass keeps of one commit, tree or tag.
enum Parsed {
    Commit {
        oid: Oid,
        tree: Option<Oid>,
        parents: Vec<Oid>,
        time: i64,
        /// The message's findings (scanned on the reading thread) and its length.
        message: Findings,
        message_len: usize,
    },
    Tree {
        oid: Oid,
        data: Vec<u8>,
    },
    Tag {
        oid: Oid,
        target: Option<Oid>,
        message: Vec<u8>,
    },
    Other,
}

fn parse(ctx: &Context<'_>, object: Object<'_>) -> Parsed {
    let data = object.data.unwrap_or_default();
    match object.kind {
        Kind::Tree => Parsed::Tree {
            oid: object.oid,
            data: data.to_vec(),
        },
        Kind::Commit => {
            let (headers, message) = split_message(data);
            let mut tree = None;
            let mut parents = Vec::new();
            let mut time = 0;
            for (name, field) in header_fields(headers) {
                match name {
                    b"tree" => tree = Oid::from_hex(field_value(field)),
                    b"parent" => parents.extend(Oid::from_hex(field_value(field))),
                    b"committer" => time = signature_time(field_value(field)),
                    _ => {}
                }
            }
            let mut findings = Findings::default();
            if !message.is_empty() && !ctx.cancelled() {
                let origin = Origin {
                    path: None,
                    commit: Some(object.oid.to_hex()),
                    kind: OccurrenceKind::CommitMessage,
                };
                ctx.detect(message, &origin, None, &mut Vec::new(), &mut findings);
            }
            Parsed::Commit {
                oid: object.oid,
                tree,
                parents,
                time,
                message: findings,
                message_len: message.len(),
            }
        }
        Kind::Tag => {
            let (headers, message) = split_message(data);
            let target = header_fields(headers)
                .into_iter()
                .find(|(name, _)| *name == b"object")
                .and_then(|(_, field)| Oid::from_hex(field_value(field)));
            Parsed::Tag {
                oid: object.oid,
                target,
                message: message.to_vec(),
            }
        }
        Kind::Blob => Parsed::Other,
    }
}

/// The seconds of a `Name <email> 1700000000 +0000` signature; 0 when there are none.
fn signature_time(value: &[u8]) -> i64 {
    let after_email = memchr::memrchr(b'>', value).map_or(value, |i| &value[i + 1..]);
    std::str::from_utf8(after_email)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// FNV-1a, for the interned names.
#[derive(Default)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

struct TreeEdge {
    name: u32,
    child: u32,
    is_tree: bool,
}

struct CommitNode {
    tree: Option<u32>,
    /// `parents[start..start + len]`.
    parents: (u32, u32),
    time: i64,
    message: Option<Findings>,
    message_len: usize,
}

struct TagNode {
    target: Option<u32>,
    message: Vec<u8>,
}

/// Commits, trees and tags with their links, objects numbered as first named.
#[derive(Default)]
struct Graph {
    index: OidMap<u32>,
    oids: Vec<Oid>,
    kind: Vec<u8>,
    /// Per object: its tree span, commit or tag number, by kind.
    slot: Vec<u32>,
    tree_spans: Vec<(u32, u32)>,
    edges: Vec<TreeEdge>,
    names: HashMap<Vec<u8>, u32, BuildHasherDefault<NameHasher>>,
    name_list: Vec<Vec<u8>>,
    commits: Vec<CommitNode>,
    commit_nodes: Vec<u32>,
    parents: Vec<u32>,
    tags: Vec<TagNode>,
}

impl Graph {
    /// A graph sized for a store of `objects` objects: growing the index on the way
    /// rehashes it again and again.
    fn with_capacity(objects: usize) -> Self {
        let mut graph = Self::default();
        graph.index.reserve(objects);
        graph.oids.reserve(objects);
        graph.kind.reserve(objects);
        graph.slot.reserve(objects);
        graph
    }

    fn intern(&mut self, oid: Oid) -> u32 {
        if let Some(&i) = self.index.get(&oid) {
            return i;
        }
        let i = self.oids.len() as u32;
        self.index.insert(oid, i);
        self.oids.push(oid);
        self.kind.push(UNSEEN);
        self.slot.push(0);
        i
    }

    fn name(&mut self, name: &[u8]) -> u32 {
        if let Some(&i) = self.names.get(name) {
            return i;
        }
        let i = self.name_list.len() as u32;
        self.names.insert(name.to_vec(), i);
        self.name_list.push(name.to_vec());
        i
    }

    fn record(&mut self, parsed: Parsed, format: ObjectFormat) -> Result<(), ScanError> {
        let too_large = || ScanError::Git {
            command: "read objects".into(),
            message: "the repository has more objects than a scan can number".into(),
        };
        match parsed {
            Parsed::Other => {}
            Parsed::Tree { oid, data } => {
                let node = self.intern(oid) as usize;
                if self.kind[node] != UNSEEN {
                    return Ok(());
                }
                let start = u32::try_from(self.edges.len()).map_err(|_| too_large())?;
                for entry in crate::git::objects::tree_entries(&data, format) {
                    let (mode, name, child) = entry?;
                    // Submodule entries name commits of other repositories.
                    if mode == b"160000" {
                        continue;
                    }
                    let is_tree = mode == b"40000";
                    let name = self.name(name);
                    let child = self.intern(child);
                    self.edges.push(TreeEdge {
                        name,
                        child,
                        is_tree,
                    });
                }
                let end = u32::try_from(self.edges.len()).map_err(|_| too_large())?;
                self.kind[node] = TREE;
                self.slot[node] = self.tree_spans.len() as u32;
                self.tree_spans.push((start, end - start));
            }
            Parsed::Commit {
                oid,
                tree,
                parents,
                time,
                message,
                message_len,
            } => {
                let node = self.intern(oid);
                if self.kind[node as usize] != UNSEEN {
                    return Ok(());
                }
                let tree = tree.map(|t| self.intern(t));
                let start = u32::try_from(self.parents.len()).map_err(|_| too_large())?;
                for parent in parents {
                    let parent = self.intern(parent);
                    self.parents.push(parent);
                }
                let len = self.parents.len() as u32 - start;
                self.kind[node as usize] = COMMIT;
                self.slot[node as usize] = self.commits.len() as u32;
                self.commit_nodes.push(node);
                self.commits.push(CommitNode {
                    tree,
                    parents: (start, len),
                    time,
                    message: Some(message),
                    message_len,
                });
            }
            Parsed::Tag {
                oid,
                target,
                message,
            } => {
                let node = self.intern(oid) as usize;
                if self.kind[node] != UNSEEN {
                    return Ok(());
                }
                let target = target.map(|t| self.intern(t));
                self.kind[node] = TAG;
                self.slot[node] = self.tags.len() as u32;
                self.tags.push(TagNode { target, message });
            }
        }
        Ok(())
    }

    fn tree_edges(&self, node: u32) -> &[TreeEdge] {
        let (start, len) = self.tree_spans[self.slot[node as usize] as usize];
        &self.edges[start as usize..(start + len) as usize]
    }

    fn commit_parents(&self, commit: usize) -> &[u32] {
        let (start, len) = self.commits[commit].parents;
        &self.parents[start as usize..(start + len) as usize]
    }
}

/// Where each blob is scanned: up to two origins, the first where its path is not
/// allow-listed and, if that was a lock file (where generic rules stay quiet), the first
/// that is not one.
#[derive(Default)]
struct Claims {
    origins: OidMap<Vec<Origin>>,
    /// Per object number: a blob scanned where generic rules apply.
    settled: Vec<bool>,
    /// Trees whose every blob is settled; visited once.
    done_trees: Vec<bool>,
    /// Trees holding a blob not yet settled, with (a hash of) the paths they were
    /// walked at.
    open_trees: HashSet<(u32, u64)>,
    /// Trees the repository lacks, reported once.
    missing: HashSet<u32>,
}

impl Claims {
    /// Takes the blob `node` at `path`; false when it is still unsettled after.
    fn claim(&mut self, ctx: &Context<'_>, graph: &Graph, node: u32, origin: Origin) -> bool {
        if self.settled[node as usize] {
            return true;
        }
        let path = origin.path.as_deref().unwrap_or_default();
        if ctx.path_allowed(path) {
            return false;
        }
        let lock = is_lock_file(path);
        let origins = self.origins.entry(graph.oids[node as usize]).or_default();
        if lock {
            if origins.is_empty() {
                ctx.discovered();
                origins.push(origin);
            }
            return false;
        }
        ctx.discovered();
        origins.push(origin);
        self.settled[node as usize] = true;
        true
    }
}

/// Names every reachable blob with its origin (step 2), scanning the reachable commits'
/// and tags' messages on the way.
fn walk(
    ctx: &Context<'_>,
    graph: &mut Graph,
    roots: &[(String, Oid)],
    claims: &mut Claims,
    findings: &mut Findings,
) -> Result<(), ScanError> {
    // A ref may name a blob no tree names (`git tag name <blob>`): blobs are numbered
    // as trees name them, so it gets its number here.
    for (_, oid) in roots {
        graph.intern(*oid);
    }
    claims.done_trees = vec![false; graph.oids.len()];
    claims.settled = vec![false; graph.oids.len()];
    let mut root_commits: Vec<u32> = Vec::new();
    let mut tags_seen: HashSet<u32> = HashSet::new();
    let mut hits = Vec::new();
    for (name, oid) in roots {
        let Some(mut node) = graph.index.get(oid).copied() else {
            let origin = Origin {
                path: Some(name.clone()),
                commit: None,
                kind: OccurrenceKind::File,
            };
            ctx.skip(&origin, 0, SkipReason::Missing);
            continue;
        };
        // Peel tags, scanning each message once.
        loop {
            if graph.kind[node as usize] != TAG {
                break;
            }
            let tag = &graph.tags[graph.slot[node as usize] as usize];
            if tags_seen.insert(node) && !tag.message.is_empty() {
                let origin = Origin {
                    path: Some(name.clone()),
                    commit: tag.target.map(|t| graph.oids[t as usize].to_hex()),
                    kind: OccurrenceKind::TagMessage,
                };
                ctx.scan_item(&tag.message, &origin, None, &mut hits, findings);
            }
            match tag.target {
                Some(target) => node = target,
                None => break,
            }
        }
        match graph.kind[node as usize] {
            COMMIT => root_commits.push(node),
            TREE => walk_tree(ctx, graph, node, &format!("{name}:"), None, claims),
            TAG => {}
            _ => {
                // A ref naming a blob (or an object the repository lacks).
                claims.claim(
                    ctx,
                    graph,
                    node,
                    Origin {
                        path: Some(name.clone()),
                        commit: None,
                        kind: OccurrenceKind::File,
                    },
                );
            }
        }
        if ctx.cancelled() {
            return Err(ScanError::Cancelled);
        }
    }

    for commit in commit_order(graph, &root_commits) {
        if ctx.cancelled() {
            return Err(ScanError::Cancelled);
        }
        ctx.commit_seen();
        // The messages of reachable commits only: a dangling commit is not history.
        if graph.commits[commit].message_len > 0 {
            ctx.message_scanned(graph.commits[commit].message_len);
        }
        if let Some(message) = graph.commits[commit].message.take() {
            findings.merge(message);
        }
        let hex = graph.oids[graph.commit_nodes[commit] as usize].to_hex();
        if let Some(tree) = graph.commits[commit].tree {
            walk_tree(ctx, graph, tree, "", Some(&hex), claims);
        }
    }
    Ok(())
}

/// Commits reachable from `roots`, parents before children, oldest committer date first
/// among those ready.
fn commit_order(graph: &Graph, roots: &[u32]) -> Vec<usize> {
    let n = graph.commits.len();
    const UNREACHED: u32 = u32::MAX;
    // Discovery number per commit (depth first from the refs, parents in order).
    let mut seq = vec![UNREACHED; n];
    let mut next = 0u32;
    let mut stack: Vec<u32> = roots.iter().rev().copied().collect();
    while let Some(node) = stack.pop() {
        if graph.kind[node as usize] != COMMIT {
            continue;
        }
        let commit = graph.slot[node as usize] as usize;
        if seq[commit] != UNREACHED {
            continue;
        }
        seq[commit] = next;
        next += 1;
        stack.extend(graph.commit_parents(commit).iter().rev());
    }
    let mut waiting = vec![0u32; n];
    let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
    for commit in (0..n).filter(|&c| seq[c] != UNREACHED) {
        for &parent in graph.commit_parents(commit) {
            if graph.kind[parent as usize] == COMMIT {
                let p = graph.slot[parent as usize] as usize;
                children[p].push(commit as u32);
                waiting[commit] += 1;
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<(i64, u32, u32)>> = (0..n)
        .filter(|&c| seq[c] != UNREACHED && waiting[c] == 0)
        .map(|c| Reverse((graph.commits[c].time, seq[c], c as u32)))
        .collect();
    let mut order = Vec::with_capacity(next as usize);
    while let Some(Reverse((_, _, commit))) = ready.pop() {
        order.push(commit as usize);
        for &child in &children[commit as usize] {
            let c = child as usize;
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(Reverse((graph.commits[c].time, seq[c], child)));
            }
        }
    }
    order
}

/// Walks the tree `root` at `prefix`, claiming every blob not yet settled. A tree all of
/// whose blobs are settled is never walked again; one that holds an unsettled blob (at
/// an allow-listed path, or a lock file) is walked again only at another path.
fn walk_tree(
    ctx: &Context<'_>,
    graph: &Graph,
    root: u32,
    prefix: &str,
    commit: Option<&str>,
    claims: &mut Claims,
) {
    let path_key = |path: &[u8]| {
        let mut h = NameHasher::default();
        h.write(path);
        h.finish()
    };
    let mut path: Vec<u8> = prefix.as_bytes().to_vec();
    if !enter(graph, root, &path, claims, path_key(&path), ctx, commit) {
        return;
    }
    // (tree, next entry, path length before its name, all settled so far)
    let mut stack: Vec<(u32, usize, usize, bool)> = vec![(root, 0, path.len(), true)];
    while let Some(frame) = stack.last_mut() {
        let (tree, next, base_len) = (frame.0, frame.1, frame.2);
        let edges = graph.tree_edges(tree);
        let Some(edge) = edges.get(next) else {
            let Some((tree, _, base_len, settled)) = stack.pop() else {
                break;
            };
            if settled {
                claims.done_trees[tree as usize] = true;
            } else {
                claims
                    .open_trees
                    .insert((tree, path_key(&path[..base_len])));
                if let Some(parent) = stack.last_mut() {
                    parent.3 = false;
                }
            }
            continue;
        };
        frame.1 += 1;
        path.truncate(base_len);
        let name = &graph.name_list[edge.name as usize];
        path.extend_from_slice(name);
        if edge.is_tree {
            if claims.done_trees[edge.child as usize] {
                continue;
            }
            path.push(b'/');
            if enter(
                graph,
                edge.child,
                &path,
                claims,
                path_key(&path),
                ctx,
                commit,
            ) {
                let len = path.len();
                stack.push((edge.child, 0, len, true));
            } else if let Some(parent) = stack.last_mut() {
                // Open at this path already, or missing: not settled here.
                parent.3 = false;
            }
            continue;
        }
        // Most blobs of a tree walked again are settled: no origin is made for them.
        if claims.settled[edge.child as usize] {
            continue;
        }
        let origin = Origin {
            path: Some(String::from_utf8_lossy(&path).into_owned()),
            commit: commit.map(str::to_owned),
            kind: OccurrenceKind::File,
        };
        if !claims.claim(ctx, graph, edge.child, origin)
            && let Some(frame) = stack.last_mut()
        {
            frame.3 = false;
        }
    }
}

/// True when the tree `node`, met at `path` (ending in `/`, or the prefix), is to be
/// walked now. A tree the repository lacks is reported as skipped, once.
fn enter(
    graph: &Graph,
    node: u32,
    path: &[u8],
    claims: &mut Claims,
    key: u64,
    ctx: &Context<'_>,
    commit: Option<&str>,
) -> bool {
    if graph.kind[node as usize] != TREE {
        if claims.missing.insert(node) {
            let shown = String::from_utf8_lossy(path.strip_suffix(b"/").unwrap_or(path));
            let origin = Origin {
                path: (!shown.is_empty()).then(|| shown.into_owned()),
                commit: commit.map(str::to_owned),
                kind: OccurrenceKind::File,
            };
            ctx.skip(&origin, 0, SkipReason::Missing);
        }
        return false;
    }
    !claims.done_trees[node as usize] && !claims.open_trees.contains(&(node, key))
}
