//! Git's delta format: a new object described as copies from a base object and inserted
//! bytes. [`apply`] reads deltas out of packs; [`encode`] writes them, so that a
//! rewritten object is stored as its few differences from the rewritten version of the
//! base git had chosen for the original, rather than whole.
//!
//! The encoder copies what base and target share at their start and end, indexes the
//! rest of the base at every 16th byte (more sparsely in a base over a megabyte) and
//! looks each position of the rest of the target up, extending every verified match
//! both ways. It finds
//! fewer matches than git's own search, which also indexes overlapping windows, but a
//! rewritten object differs from its base where the original differed from its base
//! plus where values were replaced: long runs in common, which this finds at once.

/// Bytes hashed per block of the base.
const BLOCK: usize = 16;
/// The longest copy one instruction makes (as git writes them; readers take up to
/// 2^24 - 1).
const MAX_COPY: usize = 0x10000;
/// The longest insert one instruction carries.
const MAX_INSERT: usize = 0x7f;

/// A delta that turns `base` into `target`, or `None` when it would be longer than
/// `limit` bytes (the caller then stores `target` whole).
pub fn encode(base: &[u8], target: &[u8], limit: usize) -> Option<Vec<u8>> {
    if u32::try_from(base.len()).is_err() {
        return None;
    }
    let mut out = Vec::with_capacity(limit.min(target.len() / 4 + 64));
    write_varint(&mut out, base.len());
    write_varint(&mut out, target.len());
    // What the two share at their start and at their end is copied as it is (most
    // versions of a file differ in a few places); only the rest of the target is looked
    // up, in an index of the rest of the base.
    let prefix = common_prefix(base, target);
    let suffix = common_suffix(&base[prefix..], &target[prefix..]);
    copy(&mut out, 0, prefix);
    let (base_end, target_end) = (base.len() - suffix, target.len() - suffix);
    let mut literal = prefix;
    if base_end - prefix >= BLOCK && target_end - prefix >= BLOCK {
        let index = Index::new(base, prefix..base_end);
        let mut at = prefix;
        loop {
            if let Some(candidate) = index.get(window_hash(&target[at..at + BLOCK]))
                && base[candidate..candidate + BLOCK] == target[at..at + BLOCK]
            {
                let (mut start, mut from) = (at, candidate);
                while start > literal && from > 0 && base[from - 1] == target[start - 1] {
                    start -= 1;
                    from -= 1;
                }
                let end = at
                    + BLOCK
                    + common_prefix(&base[candidate + BLOCK..], &target[at + BLOCK..target_end]);
                insert(&mut out, &target[literal..start]);
                copy(&mut out, from, end - start);
                if out.len() > limit {
                    return None;
                }
                (at, literal) = (end, end);
                if at + BLOCK > target_end {
                    break;
                }
                continue;
            }
            if at + BLOCK >= target_end {
                break;
            }
            at += 1;
            if out.len() + (at - literal) > limit {
                return None;
            }
        }
    }
    insert(&mut out, &target[literal..target_end]);
    copy(&mut out, base_end, suffix);
    (out.len() <= limit).then_some(out)
}

/// How many bytes `a` and `b` share at their start, compared eight at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let mut at = 0;
    while at + 8 <= len {
        let x = u64::from_le_bytes(a[at..at + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        if x != y {
            return at + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + a[at..len]
        .iter()
        .zip(&b[at..len])
        .take_while(|(x, y)| x == y)
        .count()
}

/// How many bytes `a` and `b` share at their end, compared eight at a time.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let (a, b) = (&a[a.len() - len..], &b[b.len() - len..]);
    let mut done = 0;
    while done + 8 <= len {
        let (i, j) = (len - done - 8, len - done);
        let x = u64::from_le_bytes(a[i..j].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[i..j].try_into().unwrap_or_default());
        if x != y {
            return done + ((x ^ y).leading_zeros() / 8) as usize;
        }
        done += 8;
    }
    done + a[..len - done]
        .iter()
        .rev()
        .zip(b[..len - done].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// A hash of 16 bytes from their two halves: as cheap at every position of the target
/// as a rolling hash would be, and much cheaper for indexing the base. (The scan's memo
/// cuts text where it says, too.)
pub(crate) fn window_hash(window: &[u8]) -> u64 {
    let half = |at: usize| {
        u64::from_le_bytes(
            window
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_default(),
        )
    };
    half(0).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ half(8).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

/// Where each hashed block of the base starts, one slot per hash.
struct Index {
    slots: Vec<u32>,
    shift: u32,
}

impl Index {
    /// Indexes the blocks of `base` in `range` (at least one block long).
    fn new(base: &[u8], range: std::ops::Range<usize>) -> Self {
        // A large base is indexed more sparsely (at most about 64 Ki blocks): the long
        // runs a rewritten object shares with its base are still found, a few bytes
        // later, and indexing costs far less.
        let stride = (range.len() >> 16).next_power_of_two().max(BLOCK);
        let blocks = range.len() / stride;
        let size = (blocks * 2).next_power_of_two().max(16);
        let mut index = Self {
            slots: vec![0; size],
            shift: 64 - size.trailing_zeros(),
        };
        for start in (range.start..=range.end - BLOCK).step_by(stride) {
            let slot = index.slot(window_hash(&base[start..start + BLOCK]));
            // Stored plus one: zero marks an empty slot. The base is under 4 GiB. The
            // first block keeps the slot: a match there extends the furthest through
            // repeated content.
            if index.slots[slot] == 0 {
                index.slots[slot] = start as u32 + 1;
            }
        }
        index
    }

    fn slot(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    fn get(&self, hash: u64) -> Option<usize> {
        match self.slots[self.slot(hash)] {
            0 => None,
            stored => Some(stored as usize - 1),
        }
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn insert(out: &mut Vec<u8>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let (now, rest) = bytes.split_at(bytes.len().min(MAX_INSERT));
        out.push(now.len() as u8);
        out.extend_from_slice(now);
        bytes = rest;
    }
}

fn copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let now = len.min(MAX_COPY);
        let op_at = out.len();
        out.push(0x80);
        for byte in 0..4 {
            let value = (offset >> (8 * byte)) as u8;
            if value != 0 {
                out[op_at] |= 1 << byte;
                out.push(value);
            }
        }
        // A size of 0x10000 is written as no size bytes at all.
        let size = if now == MAX_COPY { 0 } else { now };
        for byte in 0..3 {
            let value = (size >> (8 * byte)) as u8;
            if value != 0 {
                out[op_at] |= 0x10 << byte;
                out.push(value);
            }
        }
        offset += now;
        len -= now;
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

/// One instruction of a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op<'a> {
    /// Bytes `from..from + len` of the base.
    Copy { from: usize, len: usize },
    /// These bytes.
    Insert(&'a [u8]),
}

/// A delta's sizes (its base's, its result's) and its instructions, read one by one: an
/// instruction that cannot be read is `Some(None)`.
fn instructions(delta: &[u8]) -> Option<(usize, usize, impl Iterator<Item = Option<Op<'_>>>)> {
    let mut at = 0;
    let base_len = varint(delta, &mut at)?;
    let size = varint(delta, &mut at)?;
    let ops = std::iter::from_fn(move || {
        let &op = delta.get(at)?;
        at += 1;
        let mut read = || -> Option<Op<'_>> {
            if op & 0x80 != 0 {
                let mut from = 0usize;
                let mut len = 0usize;
                for bit in 0..4 {
                    if op & (1 << bit) != 0 {
                        from |= usize::from(*delta.get(at)?) << (8 * bit);
                        at += 1;
                    }
                }
                for bit in 0..3 {
                    if op & (0x10 << bit) != 0 {
                        len |= usize::from(*delta.get(at)?) << (8 * bit);
                        at += 1;
                    }
                }
                Some(Op::Copy {
                    from,
                    len: if len == 0 { 0x10000 } else { len },
                })
            } else if op != 0 {
                let bytes = delta.get(at..at + usize::from(op))?;
                at += bytes.len();
                Some(Op::Insert(bytes))
            } else {
                None
            }
        };
        let read = read();
        if read.is_none() {
            // Nothing after a damaged instruction is read.
            at = delta.len();
        }
        Some(read)
    });
    Some((base_len, size, ops))
}

/// Applies a delta to `base`; `None` when the delta does not fit it.
pub fn apply(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    let (base_len, size, ops) = instructions(delta)?;
    if base_len != base.len() {
        return None;
    }
    let mut out = Vec::with_capacity(size.min(super::pack::RESERVE_LIMIT));
    for op in ops {
        match op? {
            Op::Copy { from, len } => {
                out.extend_from_slice(base.get(from..from.checked_add(len)?)?)
            }
            Op::Insert(bytes) => out.extend_from_slice(bytes),
        }
        if out.len() > size {
            return None;
        }
    }
    (out.len() == size).then_some(out)
}

/// Bytes of a delta's result copied from its base: `len` bytes at `at` in the result
/// are the base's at `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copied {
    pub at: usize,
    pub from: usize,
    pub len: usize,
}

/// What a delta (that fits a base of `base_len` bytes) copies, in the result's order,
/// copies that continue each other in both base and result joined into one; every
/// other byte of the result is inserted. `None` when the delta does not fit.
pub fn copies(base_len: usize, delta: &[u8]) -> Option<Vec<Copied>> {
    let (named_len, size, ops) = instructions(delta)?;
    if named_len != base_len {
        return None;
    }
    let mut out: Vec<Copied> = Vec::new();
    let mut at = 0usize;
    for op in ops {
        match op? {
            Op::Copy { from, len } => {
                if from.checked_add(len)? > base_len {
                    return None;
                }
                match out.last_mut() {
                    Some(last) if last.at + last.len == at && last.from + last.len == from => {
                        last.len += len;
                    }
                    _ => out.push(Copied { at, from, len }),
                }
                at += len;
            }
            Op::Insert(bytes) => at += bytes.len(),
        }
        if at > size {
            return None;
        }
    }
    (at == size).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_copy_and_insert() {
        let base = b"hello, world";
        // base size 12, result size 11: copy 5 bytes from 0, insert "!!", copy 4 from 8.
        let delta = [12, 11, 0x90, 5, 2, b'!', b'!', 0x91, 8, 4];
        assert_eq!(apply(base, &delta).as_deref(), Some(&b"hello!!orld"[..]));
        // A copy beyond the base is refused, not a panic.
        assert_eq!(apply(base, &[12, 4, 0x91, 10, 4]), None);
        assert_eq!(apply(base, &[3, 0]), None);
    }

    /// A small deterministic generator: the tests need varied bytes, not randomness.
    struct Bytes(u64);

    impl Bytes {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn fill(&mut self, len: usize, alphabet: u8) -> Vec<u8> {
            (0..len)
                .map(|_| b'a' + (self.next() % u64::from(alphabet)) as u8)
                .collect()
        }

        /// `base` with up to `edits - 1` stretches of up to 40 bytes replaced by up to
        /// `longest - 1` new ones.
        fn edited(&mut self, base: &[u8], edits: u64, longest: u64) -> Vec<u8> {
            let mut target = base.to_vec();
            for _ in 0..self.next() % edits {
                let at = (self.next() as usize) % (target.len() + 1);
                let cut = ((self.next() % 40) as usize).min(target.len() - at);
                let len = (self.next() % longest) as usize;
                let inserted = self.fill(len, 26);
                target.splice(at..at + cut, inserted);
            }
            target
        }
    }

    #[test]
    fn encoded_deltas_rebuild_the_target_from_edited_bases() {
        let mut bytes = Bytes(0x5eed);
        for round in 0..300 {
            let len = (bytes.next() % 5000) as usize;
            let base = bytes.fill(len, if round % 3 == 0 { 2 } else { 26 });
            let target = bytes.edited(&base, 6, 300);
            let delta = encode(&base, &target, usize::MAX).expect("no limit");
            assert_eq!(
                apply(&base, &delta).as_deref(),
                Some(&target[..]),
                "round {round}"
            );
        }
    }

    #[test]
    fn copies_name_exactly_the_bytes_a_delta_takes_from_its_base() {
        let mut bytes = Bytes(0xc0b1e5);
        for round in 0..300 {
            let len = (bytes.next() % 3000) as usize;
            let base = bytes.fill(len, if round % 2 == 0 { 3 } else { 26 });
            let target = bytes.edited(&base, 5, 200);
            let delta = encode(&base, &target, usize::MAX).expect("no limit");
            let copied = copies(base.len(), &delta).expect("the delta fits");
            let mut covered = 0;
            let mut end = 0;
            for (i, c) in copied.iter().enumerate() {
                assert!(c.at >= end, "round {round}: copies in order");
                assert_eq!(target[c.at..c.at + c.len], base[c.from..c.from + c.len]);
                if let Some(next) = copied.get(i + 1) {
                    let joined = c.at + c.len == next.at && c.from + c.len == next.from;
                    assert!(!joined, "round {round}: continuing copies are one");
                }
                covered += c.len;
                end = c.at + c.len;
            }
            assert!(covered <= target.len());
        }
        // Deltas that do not fit their base, or that run past their result, are refused.
        assert_eq!(copies(12, &[12, 4, 0x91, 10, 4]), None);
        assert_eq!(copies(3, &[12, 0]), None);
        assert_eq!(copies(12, &[12, 2, 0x90, 5]), None);
        assert_eq!(copies(12, &[12, 2, 0x00]), None);
        assert_eq!(
            copies(12, &[12, 11, 0x90, 5, 2, b'!', b'!', 0x91, 8, 4]),
            Some(vec![
                Copied {
                    at: 0,
                    from: 0,
                    len: 5
                },
                Copied {
                    at: 7,
                    from: 8,
                    len: 4
                }
            ])
        );
    }

    #[test]
    fn a_small_change_makes_a_small_delta() {
        let mut bytes = Bytes(7);
        let base = bytes.fill(200_000, 26);
        let mut target = base.clone();
        target[100_000..100_020].copy_from_slice(&[b'*'; 20]);
        let delta = encode(&base, &target, usize::MAX).expect("no limit");
        assert!(delta.len() < 64, "{} bytes", delta.len());
        assert_eq!(apply(&base, &delta).as_deref(), Some(&target[..]));
        // Copies longer than one instruction's limit are split.
        let same = encode(&base, &base, usize::MAX).expect("no limit");
        assert_eq!(apply(&base, &same).as_deref(), Some(&base[..]));
    }

    #[test]
    fn a_delta_over_the_limit_is_not_made() {
        let mut bytes = Bytes(11);
        let base = bytes.fill(4096, 26);
        let other = bytes.fill(4096, 26);
        assert_eq!(encode(&base, &other, 2048), None);
        let delta = encode(&base, &other, usize::MAX).expect("no limit");
        assert_eq!(apply(&base, &delta).as_deref(), Some(&other[..]));
    }

    #[test]
    fn short_and_empty_objects_round_trip() {
        for (base, target) in [
            (&b""[..], &b""[..]),
            (b"", b"new"),
            (b"old", b""),
            (b"tiny", b"tinier"),
            (b"0123456789abcdef0123", b"0123456789abcdef0123"),
        ] {
            let delta = encode(base, target, usize::MAX).expect("no limit");
            assert_eq!(apply(base, &delta).as_deref(), Some(target));
        }
    }

    #[test]
    fn shared_starts_and_ends_are_measured_exactly() {
        let mut bytes = Bytes(3);
        for _ in 0..500 {
            let len = (bytes.next() % 40) as usize;
            let a = bytes.fill(len, 2);
            let len = (bytes.next() % 40) as usize;
            let b = bytes.fill(len, 2);
            let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            let suffix = a
                .iter()
                .rev()
                .zip(b.iter().rev())
                .take_while(|(x, y)| x == y)
                .count();
            assert_eq!(common_prefix(&a, &b), prefix, "{a:?} {b:?}");
            assert_eq!(common_suffix(&a, &b), suffix, "{a:?} {b:?}");
        }
    }

    #[test]
    fn edits_at_either_end_and_repeated_content_round_trip() {
        let body = b"0123456789abcdef".repeat(64);
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (body.clone(), [b"new start ".as_slice(), &body].concat()),
            (body.clone(), [body.as_slice(), b" new end"].concat()),
            (body.clone(), body[7..body.len() - 9].to_vec()),
            (b"aaaa".repeat(50), b"aaaa".repeat(51)),
            (
                [body.as_slice(), b"x", &body].concat(),
                [body.as_slice(), &body].concat(),
            ),
        ];
        for (base, target) in cases {
            let delta = encode(&base, &target, usize::MAX).expect("no limit");
            assert_eq!(apply(&base, &delta).as_deref(), Some(&target[..]));
            assert!(delta.len() < 64, "{} bytes", delta.len());
        }
    }

    #[test]
    fn a_large_base_indexed_sparsely_still_gives_a_small_delta() {
        let mut bytes = Bytes(5);
        let base = bytes.fill(4 << 20, 26);
        let mut target = base.clone();
        // Shifted content between two edits: only the index can find it.
        target.splice(400_000..400_000, *b"inserted");
        target[3_600_000..3_600_010].copy_from_slice(b"0123456789");
        let delta = encode(&base, &target, usize::MAX).expect("no limit");
        assert_eq!(apply(&base, &delta).as_deref(), Some(&target[..]));
        assert!(delta.len() < 1024, "{} bytes", delta.len());
    }
}
