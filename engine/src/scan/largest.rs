//! The largest blobs a history scan meets, kept in a bounded min-heap: every blob's size
//! is known as it is read (a pack header, a `cat-file` header), so keeping the top few
//! costs one comparison per blob, and a path is copied only for a blob that enters.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::git::objects::Oid;

use super::Origin;
use super::report::LargeBlob;

/// How many of the largest blobs a history scan lists unless told otherwise.
pub const DEFAULT_LARGEST_BLOBS: usize = 20;

/// The `limit` largest blobs offered so far.
pub(crate) struct Largest {
    limit: usize,
    /// The smallest kept on top, so that it is the one a larger blob pushes out.
    heap: BinaryHeap<Reverse<Entry>>,
}

/// A kept blob; ordered by size, then by id reversed, so that among blobs of one size
/// the smallest ids are kept and listed first.
struct Entry {
    size: u64,
    oid: Oid,
    path: Option<String>,
    commit: Option<String>,
}

impl Entry {
    fn key(&self) -> (u64, Reverse<Oid>) {
        (self.size, Reverse(self.oid))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl Largest {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: BinaryHeap::with_capacity(limit.saturating_add(1).min(1024)),
        }
    }

    /// Keeps the blob `oid` of `size` bytes, first met at `origin`, if it is among the
    /// largest. A blob offered twice (read from two packs, or at two origins) is kept
    /// once, at the first origin offered.
    pub(crate) fn offer(&mut self, oid: Oid, size: u64, origin: &Origin) {
        if self.limit == 0 {
            return;
        }
        let key = (size, Reverse(oid));
        if self.heap.len() >= self.limit
            && self
                .heap
                .peek()
                .is_some_and(|Reverse(smallest)| key <= smallest.key())
        {
            return;
        }
        if self.heap.iter().any(|Reverse(kept)| kept.oid == oid) {
            return;
        }
        self.heap.push(Reverse(Entry {
            size,
            oid,
            path: origin.path.clone(),
            commit: origin.commit.clone(),
        }));
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    /// The size below which no blob can enter any more: the smallest kept once there
    /// are `limit` (0 before).
    pub(crate) fn floor(&self) -> u64 {
        if self.limit == 0 {
            return u64::MAX;
        }
        match self.heap.peek() {
            Some(Reverse(smallest)) if self.heap.len() >= self.limit => smallest.size,
            _ => 0,
        }
    }

    /// The kept blobs, largest first, ties by id.
    pub(crate) fn into_list(self) -> Vec<LargeBlob> {
        // Ascending by `Reverse`: descending by size, then ascending by id.
        (self.heap.into_sorted_vec().into_iter())
            .map(|Reverse(entry)| LargeBlob {
                blob: entry.oid.to_hex(),
                size: entry.size,
                path: entry.path,
                commit: entry.commit,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::report::OccurrenceKind;

    fn oid(byte: u8) -> Oid {
        Oid::from_raw(&[byte; 20]).expect("a SHA-1 id")
    }

    fn at(path: &str) -> Origin {
        Origin {
            path: Some(path.to_owned()),
            commit: Some("c0ffee".into()),
            kind: OccurrenceKind::File,
        }
    }

    #[test]
    fn the_largest_are_kept_largest_first_and_ties_go_to_the_smaller_id() {
        let mut largest = Largest::new(3);
        for (byte, size) in [
            (1, 10),
            (2, 500),
            (3, 40),
            (4, 500),
            (5, 7),
            (6, 90),
            (0, 40),
        ] {
            largest.offer(oid(byte), size, &at(&format!("f{byte}")));
        }
        assert_eq!(largest.floor(), 90);
        let kept: Vec<(u64, Option<String>)> = (largest.into_list().into_iter())
            .map(|b| (b.size, b.path))
            .collect();
        assert_eq!(
            kept,
            [
                (500, Some("f2".into())),
                (500, Some("f4".into())),
                (90, Some("f6".into())),
            ]
        );
    }

    #[test]
    fn a_blob_offered_twice_is_kept_once_at_its_first_origin() {
        let mut largest = Largest::new(5);
        largest.offer(oid(9), 2048, &at("first/path.bin"));
        largest.offer(oid(9), 2048, &at("later/path.bin"));
        let kept = largest.into_list();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].path.as_deref(), Some("first/path.bin"));
        assert_eq!(kept[0].blob, "09".repeat(20));
    }

    #[test]
    fn a_limit_of_zero_keeps_nothing() {
        let mut largest = Largest::new(0);
        assert_eq!(largest.floor(), u64::MAX);
        largest.offer(oid(1), 1 << 30, &at("huge.iso"));
        assert!(largest.into_list().is_empty());
    }
}
