//! What detection found in each piece of text, remembered for one scan.
//!
//! A history holds the same text many times over: every version of a file repeats most
//! of the last one, and detection gives the same answer for the same bytes.
//!
//! **Keywords.** The keyword search (the first step of detection) runs over each blob
//! cut into pieces of whole lines, and a piece met before is not searched again. Keywords hold no line break, so
//! no keyword can straddle two pieces, and the places found piece by piece are exactly
//! those a search of the whole blob finds, in the same order.
//!
//! Pieces end after a line break whose preceding 16 bytes hash to a chosen pattern (one
//! line in 64), at least [`MIN_PIECE`] bytes after the last end: the cuts depend on
//! content, so an edit moves only the cuts near it and the rest of the file still falls
//! into pieces met before.
//!
//! **Rules.** A rule's pattern searched in a window around its keywords finds what the
//! window's bytes, and the few before it that its look-behind assertions (`\b`, `^`)
//! read, make it find: the same window met again (the same lines around the same
//! keyword in the next version of the file) reuses the matches, which then pass the
//! checks (placeholders, entropy, allowlists, inline suppression) afresh on the blob.
//!
//! Pieces and windows are known by two 64-bit hashes with seeds drawn at random for
//! each scan (so no one can craft text that collides with one met before).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::detect::Keywords;

/// Pieces are at least this long (identical short lines would otherwise cut often).
const MIN_PIECE: usize = 512;
/// Pieces and windows remembered at most: beyond, new ones are searched but not kept.
const MAX_ENTRIES: usize = 4 << 20;
/// Bytes before a window that a pattern's look-behind can read (a UTF-8 character's).
pub(crate) const CONTEXT: usize = 4;
const SHARDS: usize = 16;

/// One keyword occurrence: its span (inside a piece, or a whole blob), and the
/// keyword's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub start: u32,
    pub end: u32,
    pub keyword: u32,
}

/// What a rule's pattern matched in a window, before any check: the secret's span and,
/// for URL credentials, the user's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub secret: (usize, usize),
    pub user: Option<(usize, usize)>,
}

impl Candidate {
    /// The same spans counted from `to` instead of `from`.
    fn moved(self, from: usize, to: usize) -> Self {
        let span = |(a, b): (usize, usize)| (a - from + to, b - from + to);
        Self {
            secret: span(self.secret),
            user: self.user.map(span),
        }
    }
}

/// One of the maps a memo spreads its entries over (one lock each).
type Shard<V> = Mutex<HashMap<u128, Arc<[V]>>>;

pub struct Memo {
    seeds: (
        foldhash::quality::RandomState,
        foldhash::quality::RandomState,
    ),
    pieces: Vec<Shard<Place>>,
    windows: Vec<Shard<Candidate>>,
    entries: AtomicUsize,
}

impl Default for Memo {
    fn default() -> Self {
        Self {
            seeds: Default::default(),
            pieces: (0..SHARDS).map(|_| Mutex::default()).collect(),
            windows: (0..SHARDS).map(|_| Mutex::default()).collect(),
            entries: AtomicUsize::new(0),
        }
    }
}

impl Memo {
    /// The candidates rule `rule` finds in `data[from..to]`, as `search` (which fills
    /// its vector from the window alone) finds them, appended to `out`.
    pub fn candidates(
        &self,
        rule: usize,
        data: &[u8],
        from: usize,
        to: usize,
        out: &mut Vec<Candidate>,
        search: impl FnOnce(&mut Vec<Candidate>),
    ) {
        // What the pattern reads: the window and the bytes before it (fewer at the
        // start of the blob, which the key tells apart). Kept relative to that start.
        let start = from.saturating_sub(CONTEXT);
        let key = self.key(&(rule, from - start, &data[start..to]));
        let found = self.remember(&self.windows, key, || {
            let mut fresh = Vec::new();
            search(&mut fresh);
            fresh.iter().map(|c| c.moved(start, 0)).collect()
        });
        out.extend(found.iter().map(|c| c.moved(0, start)));
    }

    /// What `shards` holds under `key`, or what `make` makes, kept there while fewer
    /// than [`MAX_ENTRIES`] are.
    fn remember<V>(
        &self,
        shards: &[Shard<V>],
        key: u128,
        make: impl FnOnce() -> Arc<[V]>,
    ) -> Arc<[V]> {
        let shard = &shards[(key as usize) % SHARDS];
        let known = shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(known) = known {
            return known;
        }
        let made = make();
        if self.entries.fetch_add(1, Ordering::Relaxed) < MAX_ENTRIES {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, made.clone());
        }
        made
    }

    fn key(&self, value: &impl std::hash::Hash) -> u128 {
        (u128::from(self.seeds.0.hash_one(value)) << 64) | u128::from(self.seeds.1.hash_one(value))
    }

    /// Calls `found(start, end, keyword)` for every occurrence of `keywords` in `data`,
    /// overlapping ones included, in the order an overlapping search of the whole of
    /// `data` reports them. `keywords` must hold no line break and be the same
    /// automaton on every call.
    pub(crate) fn places(
        &self,
        keywords: &Keywords,
        data: &[u8],
        found: &mut impl FnMut(usize, usize, usize),
    ) {
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', data) {
            let end = newline + 1;
            if end - start >= MIN_PIECE && cuts(&data[end - 16..end]) {
                self.piece(keywords, data, start, end, found);
                start = end;
            }
        }
        if start < data.len() {
            self.piece(keywords, data, start, data.len(), found);
        }
    }

    fn piece(
        &self,
        keywords: &Keywords,
        data: &[u8],
        start: usize,
        end: usize,
        found: &mut impl FnMut(usize, usize, usize),
    ) {
        let piece = &data[start..end];
        if u32::try_from(piece.len()).is_err() {
            keywords.find(data, start, end, found);
            return;
        }
        let key = self.key(&piece);
        // Spans fit in u32: the piece does. A piece follows a line break (or begins the
        // blob), which a keyword that begins words may follow: the piece alone decides.
        let places = self.remember(&self.pieces, key, || {
            let mut places = Vec::new();
            keywords.find(piece, 0, piece.len(), &mut |start, end, keyword| {
                places.push(Place {
                    start: start as u32,
                    end: end as u32,
                    keyword: keyword as u32,
                });
            });
            places.into()
        });
        for place in places.iter() {
            found(
                start + place.start as usize,
                start + place.end as usize,
                place.keyword as usize,
            );
        }
    }
}

/// Whether a piece ends after these 16 bytes (which end in a line break): one time in
/// 64, by their content only.
fn cuts(last: &[u8]) -> bool {
    crate::git::delta::window_hash(last) >> 58 == 0
}
