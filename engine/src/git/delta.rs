//! Git's delta format: a new object described as copies from a base object and inserted
//! bytes. [`apply`] reads deltas out of packs; [`encode`] writes them, so that a
//! rewritten object is stored as its few differences from the rewritten version of the
//! base git had chosen for the original, rather than whole.
//!
//! The encoder indexes the base at every 16th byte and looks each position of the
//! target up with a rolling hash, extending every verified match both ways. It finds
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
/// Multiplier of the rolling hash; odd, so that it is invertible modulo 2^64.
const ROLL: u64 = 0x100_0000_01b3;

/// A delta that turns `base` into `target`, or `None` when it would be longer than
/// `limit` bytes (the caller then stores `target` whole).
pub fn encode(base: &[u8], target: &[u8], limit: usize) -> Option<Vec<u8>> {
    if u32::try_from(base.len()).is_err() {
        return None;
    }
    let mut out = Vec::with_capacity(limit.min(target.len() / 4 + 64));
    write_varint(&mut out, base.len());
    write_varint(&mut out, target.len());
    let mut literal = 0usize;
    if base.len() >= BLOCK && target.len() >= BLOCK {
        let index = Index::new(base);
        // ROLL^BLOCK, to take the byte leaving the window out of the hash.
        let leaving = (0..BLOCK).fold(1u64, |acc, _| acc.wrapping_mul(ROLL));
        let mut at = 0usize;
        let mut hash = window_hash(&target[..BLOCK]);
        loop {
            if let Some(candidate) = index.get(hash)
                && base[candidate..candidate + BLOCK] == target[at..at + BLOCK]
            {
                let (mut start, mut from) = (at, candidate);
                while start > literal && from > 0 && base[from - 1] == target[start - 1] {
                    start -= 1;
                    from -= 1;
                }
                let common = base[candidate + BLOCK..]
                    .iter()
                    .zip(&target[at + BLOCK..])
                    .take_while(|(a, b)| a == b)
                    .count();
                let end = at + BLOCK + common;
                insert(&mut out, &target[literal..start]);
                copy(&mut out, from, end - start);
                if out.len() > limit {
                    return None;
                }
                (at, literal) = (end, end);
                if at + BLOCK > target.len() {
                    break;
                }
                hash = window_hash(&target[at..at + BLOCK]);
                continue;
            }
            if at + BLOCK >= target.len() {
                break;
            }
            hash = hash
                .wrapping_mul(ROLL)
                .wrapping_add(u64::from(target[at + BLOCK]))
                .wrapping_sub(u64::from(target[at]).wrapping_mul(leaving));
            at += 1;
            if out.len() + (at - literal) > limit {
                return None;
            }
        }
    }
    insert(&mut out, &target[literal..]);
    (out.len() <= limit).then_some(out)
}

fn window_hash(window: &[u8]) -> u64 {
    window.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(ROLL).wrapping_add(u64::from(b))
    })
}

/// Where each hashed block of the base starts, one slot per hash (a later block with the
/// same hash takes the slot).
struct Index {
    slots: Vec<u32>,
    shift: u32,
}

impl Index {
    fn new(base: &[u8]) -> Self {
        let blocks = base.len() / BLOCK;
        let size = (blocks * 2).next_power_of_two().max(16);
        let mut index = Self {
            slots: vec![0; size],
            shift: 64 - size.trailing_zeros(),
        };
        for start in (0..=base.len() - BLOCK).step_by(BLOCK) {
            let slot = index.slot(window_hash(&base[start..start + BLOCK]));
            // Stored plus one: zero marks an empty slot. The base is under 4 GiB.
            index.slots[slot] = start as u32 + 1;
        }
        index
    }

    fn slot(&self, hash: u64) -> usize {
        (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
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

/// Applies a delta to `base`; `None` when the delta does not fit it.
pub fn apply(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    if varint(delta, &mut at)? != base.len() {
        return None;
    }
    let size = varint(delta, &mut at)?;
    let mut out = Vec::with_capacity(size.min(super::pack::RESERVE_LIMIT));
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
    }

    #[test]
    fn encoded_deltas_rebuild_the_target_from_edited_bases() {
        let mut bytes = Bytes(0x5eed);
        for round in 0..300 {
            let len = (bytes.next() % 5000) as usize;
            let base = bytes.fill(len, if round % 3 == 0 { 2 } else { 26 });
            let mut target = base.clone();
            for _ in 0..bytes.next() % 6 {
                let at = (bytes.next() as usize) % (target.len() + 1);
                let cut = ((bytes.next() % 40) as usize).min(target.len() - at);
                let len = (bytes.next() % 300) as usize;
                let inserted = bytes.fill(len, 26);
                target.splice(at..at + cut, inserted);
            }
            let delta = encode(&base, &target, usize::MAX).expect("no limit");
            assert_eq!(
                apply(&base, &delta).as_deref(),
                Some(&target[..]),
                "round {round}"
            );
        }
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
}
