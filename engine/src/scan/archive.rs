//! Archives and compressed blobs in a repository, opened so that their members can be
//! scanned: recognising a format by its magic bytes ([`sniff`]), walking zip (and jar,
//! war, apk, whl…), tar, gzip, bzip2 and xz, nested ones included ([`expand`]), within
//! bounds that a hostile archive cannot get past ([`Limits`]), and recognising Java and
//! PKCS#12 key stores, whose presence is the leak ([`keystore`]).
//!
//! Nothing here trusts a size that an archive declares: every member is read through a
//! capped reader, and every decompressor's output is metered against the blob it came from.

use std::cell::Cell;
use std::io::{self, Cursor, Read};

/// An archive or compressed stream, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Also jar, war, ear, apk, aar, nupkg, whl: all are zips.
    Zip,
    Tar,
    Gzip,
    Bzip2,
    Xz,
}

/// Where a tar header keeps its magic.
const USTAR_OFFSET: usize = 257;

/// The format `data` starts as, if any: a look at a few fixed bytes, cheap enough for
/// every binary blob.
pub(crate) fn sniff(data: &[u8]) -> Option<Format> {
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        return Some(Format::Zip);
    }
    if data.starts_with(&[0x1f, 0x8b, 0x08]) {
        return Some(Format::Gzip);
    }
    if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Some(Format::Xz);
    }
    // "BZh", the block size, then the first block's magic (pi's digits in BCD): three
    // letters alone would match text.
    if data.len() >= 10
        && data.starts_with(b"BZh")
        && (b'1'..=b'9').contains(&data[3])
        && data[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
    {
        return Some(Format::Bzip2);
    }
    let magic = data.get(USTAR_OFFSET..)?;
    if magic.starts_with(b"ustar\0") || magic.starts_with(b"ustar  \0") {
        return Some(Format::Tar);
    }
    None
}

/// The bounds of one [`expand`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Archives opened one inside another, the blob itself being the first; a `.tar.gz`
    /// counts once.
    pub(crate) max_depth: u32,
    /// Regular-file members of the blob, nested ones included.
    pub(crate) max_members: usize,
    /// Bytes of one member once decompressed (the scan's largest blob).
    pub(crate) max_member_bytes: u64,
    /// Bytes decompressed from the blob, nested archives and skipped data included.
    pub(crate) max_total_bytes: u64,
    /// A stream that expands more than this many times its compressed size is a bomb…
    pub(crate) max_ratio: u64,
    /// …once it has expanded past this many bytes: small files compress well too.
    pub(crate) ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 3,
            max_members: 10_000,
            max_member_bytes: super::DEFAULT_MAX_BLOB_SIZE,
            max_total_bytes: 256 << 20,
            max_ratio: 100,
            ratio_floor: 1 << 20,
        }
    }
}

/// A regular file found inside an archive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    /// Its path in the blob, a nested archive's members after `!/`:
    /// `lib/inner.jar!/config/app.properties`.
    pub(crate) path: &'a str,
    /// Its decompressed bytes.
    pub(crate) data: &'a [u8],
}

/// Why part of an archive was not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalReason {
    /// Expanded beyond [`Limits::max_ratio`] times its compressed size: the walk stopped.
    Bomb,
    /// An archive nested deeper than [`Limits::max_depth`]: it was not opened.
    TooDeep,
    /// More members than [`Limits::max_members`]: the walk stopped.
    TooManyMembers,
    /// A member larger than [`Limits::max_member_bytes`]: it was skipped.
    MemberTooLarge,
    /// More bytes decompressed than [`Limits::max_total_bytes`]: the walk stopped.
    ExpandedTooLarge,
    /// A password-protected zip member.
    Encrypted,
    /// A compression method that is not decoded here (zip's deflate64, zstd, ppmd…).
    Unsupported,
    /// Truncated or invalid data. What was decoded before the error was visited.
    Corrupt,
}

/// A part of an archive that was not scanned, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The member's path, an archive's own path, or "" for the blob itself.
    pub(crate) path: String,
    pub(crate) reason: RefusalReason,
}

/// Walks the archive in `data` (a blob that [`sniff`] recognised; anything else yields
/// nothing), calling `visit` with each regular file in it, nested archives opened up to
/// `limits.max_depth`. `name` is the blob's path, which names the content of a bare
/// gzip, bzip2 or xz stream (`app.env.gz` holds `app.env`; `-` without a name).
///
/// Directories, links, devices and sparse files are passed over. Returns what was not
/// scanned; members visited before a problem stay visited.
pub(crate) fn expand(
    data: &[u8],
    name: Option<&str>,
    limits: &Limits,
    visit: &mut dyn FnMut(Member<'_>),
) -> Vec<Refusal> {
    expand_metered(data, name, limits, visit).0
}

/// [`expand`], also returning the bytes decompressed (the tests bound a bomb's).
fn expand_metered(
    data: &[u8],
    name: Option<&str>,
    limits: &Limits,
    visit: &mut dyn FnMut(Member<'_>),
) -> (Vec<Refusal>, u64) {
    let Some(format) = sniff(data) else {
        return (Vec::new(), 0);
    };
    let budget = Budget::new(data.len() as u64, limits);
    let mut walk = Walk {
        limits,
        budget: &budget,
        members: 0,
        stopped: false,
        refusals: Vec::new(),
        visit,
    };
    if limits.max_depth == 0 {
        walk.refuse("", RefusalReason::TooDeep);
    } else {
        walk.archive(data, format, "", name, 1);
    }
    (walk.refusals, budget.expanded.get())
}

/// What one blob may expand to, shared by every decompressor opened in it.
struct Budget {
    expanded: Cell<u64>,
    /// [`Limits::max_ratio`] times the blob: nested or overlapping members that each look
    /// reasonable can still add up to a bomb.
    bomb_at: u64,
    total_at: u64,
    ratio: u64,
    floor: u64,
    /// Set by the first bound crossed; everything stops then.
    tripped: Cell<Option<RefusalReason>>,
}

impl Budget {
    fn new(blob: u64, limits: &Limits) -> Self {
        Self {
            expanded: Cell::new(0),
            bomb_at: limits
                .max_ratio
                .saturating_mul(blob)
                .max(limits.ratio_floor),
            total_at: limits.max_total_bytes,
            ratio: limits.max_ratio,
            floor: limits.ratio_floor,
            tripped: Cell::new(None),
        }
    }

    /// The most that a stream of `compressed` bytes may expand to.
    fn stream_cap(&self, compressed: u64) -> u64 {
        self.ratio.saturating_mul(compressed).max(self.floor)
    }
}

/// A decompressor's output, counted against the blob's [`Budget`] and its own stream's
/// ratio. Crossing either fails the read, so that a tar reader skipping an oversized
/// member, not only this module's reads, is bounded too.
struct Meter<'b, R> {
    inner: R,
    budget: &'b Budget,
    read: u64,
    cap: u64,
}

impl<'b, R: Read> Meter<'b, R> {
    fn new(inner: R, budget: &'b Budget, compressed: u64) -> Self {
        let cap = budget.stream_cap(compressed);
        Self {
            inner,
            budget,
            read: 0,
            cap,
        }
    }
}

impl<R: Read> Read for Meter<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.budget.tripped.get().is_some() {
            return Err(io::Error::other("expansion bound crossed"));
        }
        // Never asked for more than one byte past a bound, so that crossing it costs no
        // more than that (read_to_end offers buffers of megabytes).
        let budget = self.budget;
        let room = (self.cap.saturating_sub(self.read))
            .min(budget.bomb_at.saturating_sub(budget.expanded.get()))
            .min(budget.total_at.saturating_sub(budget.expanded.get()));
        let len = buf.len().min(
            usize::try_from(room)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        let n = self.inner.read(&mut buf[..len])?;
        self.read += n as u64;
        let expanded = self.budget.expanded.get() + n as u64;
        self.budget.expanded.set(expanded);
        let tripped = if self.read > self.cap || expanded > self.budget.bomb_at {
            Some(RefusalReason::Bomb)
        } else if expanded > self.budget.total_at {
            Some(RefusalReason::ExpandedTooLarge)
        } else {
            None
        };
        if tripped.is_some() {
            self.budget.tripped.set(tripped);
            return Err(io::Error::other("expansion bound crossed"));
        }
        Ok(n)
    }
}

/// How reading one member ended.
enum Capped {
    Whole(Vec<u8>),
    TooLarge,
    /// An error (or a bound crossed) after these bytes.
    Failed(Vec<u8>),
}

/// Reads at most `max + 1` bytes of `reader`: one more than allowed tells a member that
/// is too large from one that is exactly the limit.
fn read_capped(reader: impl Read, max: u64) -> Capped {
    let mut data = Vec::new();
    match reader.take(max.saturating_add(1)).read_to_end(&mut data) {
        Ok(_) if data.len() as u64 > max => Capped::TooLarge,
        Ok(_) => Capped::Whole(data),
        Err(_) => Capped::Failed(data),
    }
}

/// One [`expand`] call's state, shared by the archives nested in its blob.
struct Walk<'a> {
    limits: &'a Limits,
    budget: &'a Budget,
    members: usize,
    /// A bound that ends the whole walk was crossed (and refused once).
    stopped: bool,
    refusals: Vec<Refusal>,
    visit: &'a mut dyn FnMut(Member<'_>),
}

impl Walk<'_> {
    fn refuse(&mut self, path: &str, reason: RefusalReason) {
        self.refusals.push(Refusal {
            path: path.to_owned(),
            reason,
        });
    }

    /// A read failed at `path`: because the budget tripped (which stops everything), or
    /// because the data is bad.
    fn failed(&mut self, path: &str) {
        match self.budget.tripped.get() {
            Some(reason) => self.stop(path, reason),
            None => self.refuse(path, RefusalReason::Corrupt),
        }
    }

    fn stop(&mut self, path: &str, reason: RefusalReason) {
        if !self.stopped {
            self.stopped = true;
            self.refuse(path, reason);
        }
    }

    /// Counts a member, or stops the walk at the limit (`archive` is where it stopped).
    fn admit(&mut self, archive: &str) -> bool {
        if self.members >= self.limits.max_members {
            self.stop(archive, RefusalReason::TooManyMembers);
            return false;
        }
        self.members += 1;
        true
    }

    /// Opens the archive at `path` ("" for the blob), which is `depth` archives deep.
    fn archive(&mut self, data: &[u8], format: Format, path: &str, name: Option<&str>, depth: u32) {
        match format {
            Format::Zip => self.zip(data, path, depth),
            Format::Tar => self.tar(data, path, depth),
            Format::Gzip => {
                let decoder = flate2::read::MultiGzDecoder::new(data);
                self.stream(decoder, data.len(), path, name, depth);
            }
            Format::Bzip2 => {
                let decoder = bzip2::read::MultiBzDecoder::new(data);
                self.stream(decoder, data.len(), path, name, depth);
            }
            Format::Xz => {
                // lzma-rust2 grows its window with the output rather than allocating the
                // dictionary size a header declares, so the meter bounds its memory too.
                let decoder = lzma_rust2::XzReader::new(data, true);
                self.stream(decoder, data.len(), path, name, depth);
            }
        }
    }

    /// A member found in an archive `depth` deep: visited, or opened if it is an archive.
    fn member(&mut self, path: &str, data: &[u8], depth: u32) {
        match sniff(data) {
            None => (self.visit)(Member { path, data }),
            Some(_) if depth >= self.limits.max_depth => {
                self.refuse(path, RefusalReason::TooDeep);
            }
            Some(format) => self.archive(data, format, path, Some(path), depth + 1),
        }
    }

    fn zip(&mut self, data: &[u8], path: &str, depth: u32) {
        let mut zip = match zip::ZipArchive::new(Cursor::new(data)) {
            Ok(zip) => zip,
            Err(_) => return self.refuse(path, RefusalReason::Corrupt),
        };
        for index in 0..zip.len() {
            if self.stopped {
                return;
            }
            // Read from the central directory first, so that nothing is decompressed for
            // a member passed over.
            let (name, encrypted, supported, compressed) = match zip.by_index_data(index) {
                Err(_) => {
                    self.refuse(path, RefusalReason::Corrupt);
                    continue;
                }
                Ok(entry) if entry.is_dir() || entry.is_symlink() => continue,
                Ok(entry) => (
                    entry.name().map_or_else(
                        |_| String::from_utf8_lossy(entry.name_raw()).into_owned(),
                        |name| name.into_owned(),
                    ),
                    entry.encrypted(),
                    zip::SUPPORTED_COMPRESSION_METHODS.contains(&entry.compression()),
                    // A declared size; the blob bounds what can really be read.
                    entry.compressed_size().min(data.len() as u64),
                ),
            };
            if !self.admit(path) {
                return;
            }
            let member = join(path, &name);
            if encrypted {
                self.refuse(&member, RefusalReason::Encrypted);
                continue;
            }
            if !supported {
                self.refuse(&member, RefusalReason::Unsupported);
                continue;
            }
            let read = match zip.by_index(index) {
                Ok(file) => read_capped(
                    Meter::new(file, self.budget, compressed),
                    self.limits.max_member_bytes,
                ),
                Err(zip::result::ZipError::UnsupportedArchive(_)) => {
                    self.refuse(&member, RefusalReason::Unsupported);
                    continue;
                }
                Err(_) => {
                    self.refuse(&member, RefusalReason::Corrupt);
                    continue;
                }
            };
            match read {
                Capped::Whole(content) => self.member(&member, &content, depth),
                Capped::TooLarge => self.refuse(&member, RefusalReason::MemberTooLarge),
                Capped::Failed(content) => self.broken(&member, &content, depth),
            }
        }
    }

    fn tar(&mut self, data: impl Read, path: &str, depth: u32) {
        let mut archive = tar::Archive::new(data);
        let entries = match archive.entries() {
            Ok(entries) => entries,
            Err(_) => return self.failed(path),
        };
        for entry in entries {
            if self.stopped {
                return;
            }
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(_) => return self.failed(path),
            };
            let kind = entry.header().entry_type();
            // Sparse files are left out with links and devices: a few bytes of map can
            // stand for any number of zeros, which no decompressor meter would see.
            if !(kind.is_file() || kind.is_contiguous()) {
                continue;
            }
            if !self.admit(path) {
                return;
            }
            let member = join(path, &String::from_utf8_lossy(&entry.path_bytes()));
            let declared = entry.size();
            match read_capped(&mut entry, self.limits.max_member_bytes) {
                // Shorter than its header says: the archive ends inside it.
                Capped::Whole(content) if (content.len() as u64) < declared => {
                    self.refuse(&member, RefusalReason::Corrupt);
                    if !content.is_empty() {
                        self.member(&member, &content, depth);
                    }
                    return;
                }
                Capped::Whole(content) => self.member(&member, &content, depth),
                // The tar reader skips the rest itself, through the meter when compressed.
                Capped::TooLarge => self.refuse(&member, RefusalReason::MemberTooLarge),
                Capped::Failed(content) => return self.broken(&member, &content, depth),
            }
        }
    }

    /// A gzip, bzip2 or xz stream: a tar inside is walked as part of the same archive (a
    /// `.tar.gz` is one), anything else is one member named after the stream.
    fn stream(
        &mut self,
        decoder: impl Read,
        compressed: usize,
        path: &str,
        name: Option<&str>,
        depth: u32,
    ) {
        let mut reader = Meter::new(decoder, self.budget, compressed as u64);
        let member = join(path, &stream_member_name(name));
        // Enough to sniff a tar header, which is all a tar needs to be streamed; any other
        // content is read whole (a zip needs to seek).
        let mut head = Vec::new();
        if (&mut reader)
            .take(USTAR_OFFSET as u64 + 8)
            .read_to_end(&mut head)
            .is_err()
        {
            return self.failed_stream(path, &member, &head, depth);
        }
        if sniff(&head) == Some(Format::Tar) {
            return self.tar(Cursor::new(head).chain(reader), path, depth);
        }
        if !self.admit(path) {
            return;
        }
        let max = self.limits.max_member_bytes;
        match read_capped(Cursor::new(head).chain(reader), max) {
            Capped::Whole(content) => self.member(&member, &content, depth),
            Capped::TooLarge => self.refuse(&member, RefusalReason::MemberTooLarge),
            Capped::Failed(content) => self.broken(&member, &content, depth),
        }
    }

    /// The stream at `path` broke before a tar header could be told, after `content`,
    /// which is then its one member.
    fn failed_stream(&mut self, path: &str, member: &str, content: &[u8], depth: u32) {
        if content.is_empty() || self.admit(path) {
            self.broken(member, content, depth);
        }
    }

    /// Reading `member` failed after `content`: refused, and what decoded is still visited
    /// (a bad CRC or a cut stream may hold secrets) unless a bound stopped the walk.
    fn broken(&mut self, member: &str, content: &[u8], depth: u32) {
        self.failed(member);
        if !self.stopped && !content.is_empty() {
            self.member(member, content, depth);
        }
    }
}

/// `inner` inside the archive at `outer` ("" for the blob).
fn join(outer: &str, inner: &str) -> String {
    if outer.is_empty() {
        inner.to_owned()
    } else {
        format!("{outer}!/{inner}")
    }
}

/// The file a compressed stream named `name` holds: its name less the compression's
/// suffix (`app.env.gz` → `app.env`, `site.tgz` → `site.tar`), `-` without a name.
fn stream_member_name(name: Option<&str>) -> String {
    let Some(name) = name.and_then(|name| name.rsplit('/').next()) else {
        return "-".to_owned();
    };
    let lower = name.to_ascii_lowercase();
    for (suffix, replacement) in [
        (".tgz", ".tar"),
        (".tbz2", ".tar"),
        (".tbz", ".tar"),
        (".txz", ".tar"),
        (".gz", ""),
        (".bz2", ""),
        (".xz", ""),
    ] {
        if lower.ends_with(suffix) && lower.len() > suffix.len() {
            // The suffixes are ASCII, so the cut is on a character boundary.
            let stem = &name[..name.len() - suffix.len()];
            return format!("{stem}{replacement}");
        }
    }
    if name.is_empty() {
        "-".to_owned()
    } else {
        name.to_owned()
    }
}

/// A key store: a file whose presence in a repository is the leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyStore {
    /// A Java KeyStore (`keytool`'s format before Java 9).
    Jks,
    /// The JCE's Java KeyStore.
    Jceks,
    /// PKCS#12 (`.p12`, `.pfx`; Java's default since 9).
    Pkcs12,
}

/// 1.2.840.113549.1.7.1, pkcs7-data, as a DER OBJECT IDENTIFIER.
const PKCS7_DATA: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];
/// 1.2.840.113549.1.7.2, pkcs7-signedData: the authenticated safe of a PFX signed with a
/// key rather than protected by a password.
const PKCS7_SIGNED_DATA: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];

/// The key store `data` is, by its structure. `path`, when it ends in `.p12` or `.pfx`,
/// also admits the rare PKCS#12 whose content is signed rather than password-protected;
/// a name alone never makes a key store.
pub(crate) fn keystore(data: &[u8], path: Option<&str>) -> Option<KeyStore> {
    // JKS and JCEKS: a magic number, then format version 1 or 2.
    if let Some(version) = data.get(4..8)
        && matches!(version, [0, 0, 0, 1 | 2])
    {
        match data[..4] {
            [0xfe, 0xed, 0xfe, 0xed] => return Some(KeyStore::Jks),
            [0xce, 0xce, 0xce, 0xce] => return Some(KeyStore::Jceks),
            _ => {}
        }
    }
    let named = path.is_some_and(|path| {
        let lower = path.to_ascii_lowercase();
        lower.ends_with(".p12") || lower.ends_with(".pfx")
    });
    is_pfx(data, named).then_some(KeyStore::Pkcs12)
}

/// Whether `data` starts as RFC 7292's PFX: SEQUENCE { INTEGER 3, ContentInfo { OID
/// pkcs7-data, [0] content } }. An X.509 certificate is a SEQUENCE too, but of a
/// SEQUENCE, so it fails at the version.
fn is_pfx(data: &[u8], signed_too: bool) -> bool {
    let Some((0x30, outer_len, outer_header)) = der_header(data, 0) else {
        return false;
    };
    let mut pos = outer_header;
    if data.get(pos..pos + 3) != Some(&[0x02, 0x01, 0x03]) {
        return false;
    }
    pos += 3;
    let Some((0x30, info_len, info_header)) = der_header(data, pos) else {
        return false;
    };
    // Definite lengths (BER also allows indefinite ones) must nest, and leave room for
    // the OID and its content's tag.
    if let Some(info_len) = info_len {
        let info_end = (pos + info_header).saturating_add(info_len);
        if info_len < PKCS7_DATA.len() + 2
            || outer_len.is_some_and(|outer_len| info_end > outer_header.saturating_add(outer_len))
        {
            return false;
        }
    }
    pos += info_header;
    let Some(oid) = data.get(pos..pos + PKCS7_DATA.len()) else {
        return false;
    };
    if oid != PKCS7_DATA && !(signed_too && oid == PKCS7_SIGNED_DATA) {
        return false;
    }
    // The content, [0] EXPLICIT, which a PFX never leaves out.
    data.get(pos + PKCS7_DATA.len()) == Some(&0xa0)
}

/// The tag, length (`None` when indefinite) and header size of the DER element at `pos`.
fn der_header(data: &[u8], pos: usize) -> Option<(u8, Option<usize>, usize)> {
    let tag = *data.get(pos)?;
    let first = *data.get(pos + 1)?;
    if first < 0x80 {
        return Some((tag, Some(usize::from(first)), 2));
    }
    if first == 0x80 {
        return Some((tag, None, 2));
    }
    let count = usize::from(first & 0x7f);
    if count > 4 {
        return None;
    }
    let bytes = data.get(pos + 2..pos + 2 + count)?;
    let len = bytes
        .iter()
        .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
    Some((tag, Some(len), 2 + count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;

    const TEXT: &[u8] = b"db.password=hunter2-but-longer\napi.key=AKIAEXAMPLEEXAMPLE00\n";

    fn zip_of(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            zip.start_file(*name, options).expect("start a zip member");
            zip.write_all(data).expect("write a zip member");
        }
        zip.finish().expect("finish the zip").into_inner()
    }

    fn tar_header(size: usize, kind: tar::EntryType) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_entry_type(kind);
        header.set_cksum();
        header
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar_header(data.len(), tar::EntryType::Regular);
            tar.append_data(&mut header, name, *data)
                .expect("append a tar member");
        }
        tar.into_inner().expect("finish the tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("finish the gzip")
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(data).expect("bzip2");
        bz.finish().expect("finish the bzip2")
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let options = lzma_rust2::XzOptions::with_preset(1);
        let mut xz = lzma_rust2::XzWriter::new(Vec::new(), options).expect("an xz writer");
        xz.write_all(data).expect("xz");
        xz.finish().expect("finish the xz")
    }

    type Visited = Vec<(String, Vec<u8>)>;

    fn walk(data: &[u8], name: Option<&str>, limits: &Limits) -> (Visited, Vec<Refusal>) {
        let mut visited = Vec::new();
        let refusals = expand(data, name, limits, &mut |member| {
            visited.push((member.path.to_owned(), member.data.to_vec()));
        });
        (visited, refusals)
    }

    fn refusal(path: &str, reason: RefusalReason) -> Refusal {
        Refusal {
            path: path.to_owned(),
            reason,
        }
    }

    #[test]
    fn sniff_recognises_each_format_by_its_magic_and_text_as_none() {
        assert_eq!(
            sniff(&zip_of(&[("a", b"a")], CompressionMethod::Stored)),
            Some(Format::Zip)
        );
        assert_eq!(
            sniff(&zip_of(&[], CompressionMethod::Stored)),
            Some(Format::Zip)
        );
        assert_eq!(sniff(&tar_of(&[("a", b"a")])), Some(Format::Tar));
        assert_eq!(sniff(&gzip(b"a")), Some(Format::Gzip));
        assert_eq!(sniff(&bzip2(b"a")), Some(Format::Bzip2));
        assert_eq!(sniff(&xz(b"a")), Some(Format::Xz));
        let mut ustar = tar_of(&[("a", b"a")]);
        ustar[257..265].copy_from_slice(b"ustar\x0000");
        assert_eq!(sniff(&ustar), Some(Format::Tar));

        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"PK"), None);
        assert_eq!(sniff(b"BZh9 is how a bzip2 file starts"), None);
        assert_eq!(sniff(TEXT), None);
        assert_eq!(sniff(&[b'x'; 600]), None);
    }

    #[test]
    fn properties_in_a_jar_in_a_tar_gz_are_visited_with_their_joined_path() {
        let mut jar = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default();
        jar.add_directory("config/", options).expect("a directory");
        jar.start_file("config/app.properties", options)
            .expect("a member");
        jar.write_all(TEXT).expect("its text");
        let jar = jar.finish().expect("the jar").into_inner();
        let bundle = gzip(&tar_of(&[("lib/inner.jar", &jar), ("README", b"read me")]));

        let (visited, refusals) = walk(&bundle, Some("dist/bundle.tar.gz"), &Limits::default());

        assert_eq!(refusals, []);
        assert_eq!(
            visited,
            [
                (
                    "lib/inner.jar!/config/app.properties".to_owned(),
                    TEXT.to_vec()
                ),
                ("README".to_owned(), b"read me".to_vec()),
            ]
        );
    }

    #[test]
    fn a_gzipped_file_is_one_member_named_after_the_stream() {
        let (visited, refusals) = walk(&gzip(TEXT), Some("deploy/app.env.gz"), &Limits::default());
        assert_eq!(refusals, []);
        assert_eq!(visited, [("app.env".to_owned(), TEXT.to_vec())]);

        let (visited, _) = walk(&gzip(TEXT), None, &Limits::default());
        assert_eq!(visited, [("-".to_owned(), TEXT.to_vec())]);

        // Concatenated gzip members are one file, as gunzip sees them.
        let mut twice = gzip(&TEXT[..10]);
        twice.extend(gzip(&TEXT[10..]));
        let (visited, _) = walk(&twice, Some("x.gz"), &Limits::default());
        assert_eq!(visited, [("x".to_owned(), TEXT.to_vec())]);

        // In an archive, the stream is named after the member.
        let zip = zip_of(
            &[("logs/app.env.gz", &gzip(TEXT))],
            CompressionMethod::Stored,
        );
        let (visited, _) = walk(&zip, None, &Limits::default());
        assert_eq!(
            visited,
            [("logs/app.env.gz!/app.env".to_owned(), TEXT.to_vec())]
        );
    }

    #[test]
    fn a_stream_member_is_named_by_the_outer_name_less_its_suffix() {
        assert_eq!(stream_member_name(Some("a/b/app.env.gz")), "app.env");
        assert_eq!(stream_member_name(Some("dump.SQL.BZ2")), "dump.SQL");
        assert_eq!(stream_member_name(Some("site.tgz")), "site.tar");
        assert_eq!(stream_member_name(Some("site.tbz2")), "site.tar");
        assert_eq!(stream_member_name(Some("site.txz")), "site.tar");
        assert_eq!(stream_member_name(Some("notes.xz")), "notes");
        assert_eq!(stream_member_name(Some("blob")), "blob");
        assert_eq!(stream_member_name(Some(".gz")), ".gz");
        assert_eq!(stream_member_name(Some("dir/")), "-");
        assert_eq!(stream_member_name(None), "-");
    }

    #[test]
    fn bzip2_and_xz_streams_and_tars_in_them_are_expanded() {
        let limits = Limits::default();
        let (visited, refusals) = walk(&bzip2(TEXT), Some("app.env.bz2"), &limits);
        assert_eq!(refusals, []);
        assert_eq!(visited, [("app.env".to_owned(), TEXT.to_vec())]);

        let (visited, refusals) = walk(&xz(TEXT), Some("app.env.xz"), &limits);
        assert_eq!(refusals, []);
        assert_eq!(visited, [("app.env".to_owned(), TEXT.to_vec())]);

        let tar = tar_of(&[("etc/app.env", TEXT)]);
        for compressed in [bzip2(&tar), xz(&tar)] {
            let (visited, refusals) = walk(&compressed, Some("etc.tar"), &limits);
            assert_eq!(refusals, []);
            assert_eq!(visited, [("etc/app.env".to_owned(), TEXT.to_vec())]);
        }
    }

    #[test]
    fn zip_members_compressed_with_bzip2_and_xz_are_read() {
        for method in [CompressionMethod::Bzip2, CompressionMethod::Xz] {
            let zip = zip_of(&[("app.env", TEXT)], method);
            let (visited, refusals) = walk(&zip, None, &Limits::default());
            assert_eq!(refusals, [], "{method:?}");
            assert_eq!(
                visited,
                [("app.env".to_owned(), TEXT.to_vec())],
                "{method:?}"
            );
        }
    }

    #[test]
    fn archives_nested_beyond_max_depth_are_refused_as_too_deep() {
        let d = zip_of(&[("deep.txt", b"too deep")], CompressionMethod::Deflated);
        let c = zip_of(
            &[("three.txt", b"third level"), ("d.zip", &d)],
            CompressionMethod::Deflated,
        );
        let b = zip_of(&[("c.zip", &c)], CompressionMethod::Stored);
        let a = zip_of(&[("b.zip", &b)], CompressionMethod::Deflated);

        let (visited, refusals) = walk(&a, Some("a.zip"), &Limits::default());

        assert_eq!(
            visited,
            [(
                "b.zip!/c.zip!/three.txt".to_owned(),
                b"third level".to_vec()
            )]
        );
        assert_eq!(
            refusals,
            [refusal("b.zip!/c.zip!/d.zip", RefusalReason::TooDeep)]
        );

        let limits = Limits {
            max_depth: 0,
            ..Limits::default()
        };
        let (visited, refusals) = walk(&a, None, &limits);
        assert_eq!(visited, []);
        assert_eq!(refusals, [refusal("", RefusalReason::TooDeep)]);
    }

    #[test]
    fn a_zip_in_a_tar_gz_in_a_zip_is_within_the_default_depth() {
        let inner = zip_of(&[("secret.txt", TEXT)], CompressionMethod::Deflated);
        let tgz = gzip(&tar_of(&[("inner.zip", &inner)]));
        let outer = zip_of(&[("bundle.tar.gz", &tgz)], CompressionMethod::Stored);

        let (visited, refusals) = walk(&outer, None, &Limits::default());

        assert_eq!(refusals, []);
        assert_eq!(
            visited,
            [(
                "bundle.tar.gz!/inner.zip!/secret.txt".to_owned(),
                TEXT.to_vec()
            )]
        );
    }

    /// 50 MiB of zeros, deflated in a zip to about 50 KiB.
    fn zero_bomb() -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        zip.start_file("before.txt", options).expect("a member");
        zip.write_all(TEXT).expect("its text");
        zip.start_file("zeros.bin", options).expect("the bomb");
        let zeros = vec![0; 1 << 20];
        for _ in 0..50 {
            zip.write_all(&zeros).expect("zeros");
        }
        zip.finish().expect("the zip").into_inner()
    }

    #[test]
    fn zip_bomb_is_refused_without_inflating_it() {
        let bomb = zero_bomb();
        let limits = Limits {
            max_member_bytes: 100 << 20,
            ..Limits::default()
        };
        let mut visited = Vec::new();
        let (refusals, expanded) = expand_metered(&bomb, None, &limits, &mut |member| {
            visited.push(member.path.to_owned());
        });

        assert_eq!(visited, ["before.txt"]);
        assert_eq!(refusals, [refusal("zeros.bin", RefusalReason::Bomb)]);
        // Stopped at 100 × its compressed size (and a read buffer), not at 50 MiB.
        let cap = 100 * bomb.len() as u64;
        assert!(
            expanded <= cap + (64 << 10),
            "{expanded} bytes for a {cap} cap"
        );
        assert!(expanded < 50 << 20);
    }

    #[test]
    fn gzip_bomb_in_a_tar_is_refused_while_the_tar_skips_it() {
        // A tar member's data is skipped through the decompressor: that counts too.
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let size = 20 << 20;
        let mut header = tar_header(size, tar::EntryType::Regular);
        tar.append_data(&mut header, "zeros.bin", io::repeat(0).take(size as u64))
            .expect("the bomb");
        let mut header = tar_header(TEXT.len(), tar::EntryType::Regular);
        tar.append_data(&mut header, "after.txt", TEXT)
            .expect("a member");
        let tgz = tar
            .into_inner()
            .expect("the tar")
            .finish()
            .expect("the gzip");
        // Small members, so that the tar reader skips the bomb rather than this module
        // reading it.
        let limits = Limits {
            max_member_bytes: 1 << 10,
            ..Limits::default()
        };

        let (visited, refusals) = walk(&tgz, Some("bomb.tgz"), &limits);

        assert_eq!(visited, []);
        assert_eq!(
            refusals,
            [
                refusal("zeros.bin", RefusalReason::MemberTooLarge),
                refusal("", RefusalReason::Bomb),
            ]
        );
    }

    #[test]
    fn many_small_members_that_add_up_to_a_bomb_are_refused() {
        // Each member is within the ratio's 1 MiB floor; together they are 30 MiB from a
        // zip of some 30 KiB.
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        let zeros = vec![0; 1 << 20];
        for i in 0..30 {
            zip.start_file(format!("zeros-{i}.bin"), options)
                .expect("a member");
            zip.write_all(&zeros).expect("zeros");
        }
        let zip = zip.finish().expect("the zip").into_inner();

        let mut visited = 0;
        let (refusals, expanded) =
            expand_metered(&zip, None, &Limits::default(), &mut |_| visited += 1);

        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].reason, RefusalReason::Bomb);
        assert!(visited < 30);
        assert!(expanded <= 100 * zip.len() as u64 + 1);
    }

    #[test]
    fn too_many_members_stop_the_walk_after_the_limit() {
        let names: Vec<String> = (0..20).map(|i| format!("m{i}.txt")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|name| (name.as_str(), TEXT)).collect();
        let limits = Limits {
            max_members: 5,
            ..Limits::default()
        };
        let tgz = gzip(&tar_of(&entries));
        let jar = zip_of(&entries, CompressionMethod::Deflated);
        for (archive, path) in [(tgz, ""), (jar, "")] {
            let (visited, refusals) = walk(&archive, None, &limits);
            assert_eq!(visited.len(), 5);
            assert_eq!(visited[4].0, "m4.txt");
            assert_eq!(refusals, [refusal(path, RefusalReason::TooManyMembers)]);
        }
    }

    #[test]
    fn an_oversized_member_is_skipped_and_the_next_one_visited() {
        let mut rng = fastrand::Rng::with_seed(7);
        let noise: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(5000).collect();
        let limits = Limits {
            max_member_bytes: 4096,
            ..Limits::default()
        };
        let entries: [(&str, &[u8]); 2] = [("big.bin", &noise), ("small.txt", TEXT)];
        for archive in [
            zip_of(&entries, CompressionMethod::Deflated),
            gzip(&tar_of(&entries)),
            tar_of(&entries),
        ] {
            let (visited, refusals) = walk(&archive, None, &limits);
            assert_eq!(visited, [("small.txt".to_owned(), TEXT.to_vec())]);
            assert_eq!(
                refusals,
                [refusal("big.bin", RefusalReason::MemberTooLarge)]
            );
        }
        // Exactly the limit is not too large.
        let (visited, refusals) = walk(&gzip(&noise[..4096]), Some("n.gz"), &limits);
        assert_eq!(refusals, []);
        assert_eq!(visited, [("n".to_owned(), noise[..4096].to_vec())]);
    }

    #[test]
    fn encrypted_zip_members_are_refused() {
        let mut zip = zip_of(
            &[("locked.txt", TEXT), ("open.txt", TEXT)],
            CompressionMethod::Stored,
        );
        // The writer has no ZipCrypto without the aes-crypto feature: set the encryption
        // flag of the first member in its local and central headers instead.
        zip[6] |= 1;
        let central = memchr::memmem::find(&zip, b"PK\x01\x02").expect("a central header");
        zip[central + 8] |= 1;

        let (visited, refusals) = walk(&zip, None, &Limits::default());

        assert_eq!(visited, [("open.txt".to_owned(), TEXT.to_vec())]);
        assert_eq!(refusals, [refusal("locked.txt", RefusalReason::Encrypted)]);
    }

    #[test]
    fn directories_and_links_are_passed_over() {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default();
        zip.add_directory("conf/", options).expect("a directory");
        zip.add_symlink("conf/link", "/etc/passwd", options)
            .expect("a link");
        zip.start_file("conf/app.env", options).expect("a file");
        zip.write_all(TEXT).expect("its text");
        let zip = zip.finish().expect("the zip").into_inner();
        let (visited, refusals) = walk(&zip, None, &Limits::default());
        assert_eq!(refusals, []);
        assert_eq!(visited, [("conf/app.env".to_owned(), TEXT.to_vec())]);

        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar_header(0, tar::EntryType::Directory);
        tar.append_data(&mut header, "conf/", io::empty())
            .expect("a directory");
        let mut header = tar_header(0, tar::EntryType::Symlink);
        tar.append_link(&mut header, "conf/link", "/etc/passwd")
            .expect("a link");
        let mut header = tar_header(0, tar::EntryType::Char);
        tar.append_data(&mut header, "conf/tty", io::empty())
            .expect("a device");
        let mut header = tar_header(TEXT.len(), tar::EntryType::Regular);
        tar.append_data(&mut header, "conf/app.env", TEXT)
            .expect("a file");
        let tar = tar.into_inner().expect("the tar");
        let (visited, refusals) = walk(&tar, None, &Limits::default());
        assert_eq!(refusals, []);
        assert_eq!(visited, [("conf/app.env".to_owned(), TEXT.to_vec())]);
    }

    #[test]
    fn a_corrupt_member_loses_neither_the_members_before_it_nor_its_own_bytes() {
        let mut zip = zip_of(
            &[("a.txt", b"first member"), ("b.txt", TEXT)],
            CompressionMethod::Stored,
        );
        // Change b.txt's bytes (not its CRC): its read fails at the end.
        let at = memchr::memmem::find(&zip, b"hunter2").expect("b.txt's data");
        zip[at] = b'H';

        let (visited, refusals) = walk(&zip, None, &Limits::default());

        assert_eq!(visited.len(), 2);
        assert_eq!(visited[0], ("a.txt".to_owned(), b"first member".to_vec()));
        assert_eq!(visited[1].0, "b.txt");
        assert_eq!(refusals, [refusal("b.txt", RefusalReason::Corrupt)]);
    }

    /// Every strict prefix of `archive` is refused or yields every member whole, and
    /// whatever is visited from it is a member of `archive` (or the start of one).
    fn assert_truncations_are_corrupt(archive: &[u8], members: &[(&str, &[u8])]) {
        for cut in 0..archive.len() {
            let prefix = &archive[..cut];
            let (visited, refusals) = walk(prefix, Some("cut.tar.gz"), &Limits::default());
            if sniff(prefix).is_none() {
                assert_eq!((visited, refusals), (vec![], vec![]), "cut at {cut}");
                continue;
            }
            // A cut past the tar's last member (in its end blocks or the gzip trailer)
            // loses nothing, and is not read: the tar ends at its first end block.
            let whole = members
                .iter()
                .filter(|(name, _)| *name != "cut.tar")
                .map(|(name, data)| ((*name).to_owned(), data.to_vec()))
                .collect::<Visited>();
            assert!(
                refusals
                    .iter()
                    .any(|refusal| refusal.reason == RefusalReason::Corrupt)
                    || (refusals.is_empty() && visited == whole),
                "cut at {cut}: {refusals:?}"
            );
            for (path, data) in visited {
                let member = members.iter().find(|(name, _)| *name == path);
                let (_, whole) = member.unwrap_or_else(|| panic!("cut at {cut}: {path}"));
                assert!(whole.starts_with(&data), "cut at {cut}: {path}");
            }
        }
    }

    #[test]
    fn a_truncated_zip_never_panics_and_is_corrupt() {
        let members: [(&str, &[u8]); 2] = [("a.txt", b"first member"), ("b.env", TEXT)];
        let zip = zip_of(&members, CompressionMethod::Deflated);
        assert_truncations_are_corrupt(&zip, &members);
    }

    #[test]
    fn a_truncated_tar_gz_never_panics_and_keeps_the_members_before_the_cut() {
        let members: [(&str, &[u8]); 2] = [("a.txt", b"first member"), ("b.env", TEXT)];
        let tar = tar_of(&members);
        // Cut before a tar header decompresses, the stream is one member, named after it.
        let visitable = [members[0], members[1], ("cut.tar", &tar)];
        assert_truncations_are_corrupt(&gzip(&tar), &visitable);

        // Cut inside the second member's data: the first is whole.
        let cut = 512 * 3 + 10;
        let (visited, refusals) = walk(&gzip(&tar[..cut]), None, &Limits::default());
        assert_eq!(visited[0], ("a.txt".to_owned(), b"first member".to_vec()));
        assert_eq!(visited[1], ("b.env".to_owned(), TEXT[..10].to_vec()));
        assert_eq!(refusals, [refusal("b.env", RefusalReason::Corrupt)]);
    }

    #[test]
    fn random_bytes_after_a_valid_magic_never_panic() {
        let magics: [&[u8]; 6] = [
            b"PK\x03\x04",
            b"PK\x05\x06",
            &[0x1f, 0x8b, 0x08],
            b"BZh91AY&SY",
            &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
            b"",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let limits = Limits {
            max_member_bytes: 1 << 16,
            ..Limits::default()
        };
        for _ in 0..3000 {
            let magic = magics[rng.usize(..magics.len())];
            let mut data = magic.to_vec();
            let len = rng.usize(..1500);
            data.extend(std::iter::repeat_with(|| rng.u8(..)).take(len));
            if magic.is_empty() {
                // A tar header: random, but for its magic.
                data.resize(data.len().max(USTAR_OFFSET + 8), 0);
                data[USTAR_OFFSET..USTAR_OFFSET + 6].copy_from_slice(b"ustar\0");
            }
            assert!(sniff(&data).is_some());
            walk(&data, Some("random.tar.gz"), &limits);
        }
    }

    #[test]
    fn mutated_archives_never_panic() {
        let inner = zip_of(&[("a.env", TEXT)], CompressionMethod::Deflated);
        let tar = tar_of(&[("inner.zip", &inner), ("b.txt", b"second member")]);
        let archives = [
            zip_of(
                &[("a.env", TEXT), ("b.txt", b"b")],
                CompressionMethod::Deflated,
            ),
            zip_of(&[("inner.tar", &tar)], CompressionMethod::Stored),
            tar.clone(),
            gzip(&tar),
            bzip2(&tar),
            xz(&tar),
        ];
        let mut rng = fastrand::Rng::with_seed(0xdef1a7e);
        let limits = Limits {
            max_member_bytes: 1 << 16,
            ..Limits::default()
        };
        for _ in 0..2000 {
            let mut data = archives[rng.usize(..archives.len())].clone();
            for _ in 0..rng.usize(1..5) {
                let at = rng.usize(..data.len());
                data[at] = rng.u8(..);
            }
            if rng.bool() {
                data.truncate(rng.usize(..=data.len()));
            }
            walk(&data, None, &limits);
        }
    }

    /// A DER element: `tag`, its definite length, `content`.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut element = vec![tag];
        match content.len() {
            len @ 0..0x80 => element.push(len as u8),
            len @ 0x80..0x100 => element.extend([0x81, len as u8]),
            len => element.extend([0x82, (len >> 8) as u8, len as u8]),
        }
        element.extend(content);
        element
    }

    /// A PFX's opening: version 3, then `oid`'s ContentInfo holding a 300-byte safe, then
    /// a MAC's bytes.
    fn pfx(oid: &[u8]) -> Vec<u8> {
        let safe = der(0xa0, &der(0x04, &[0x30; 300]));
        let content_info = der(0x30, &[oid, &safe].concat());
        let mac = der(0x30, &[0x04; 40]);
        der(
            0x30,
            &[&[0x02, 0x01, 0x03][..], &content_info, &mac].concat(),
        )
    }

    #[test]
    fn java_keystores_are_recognised_by_their_magic() {
        let jks = [0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(keystore(&jks, Some("keystore.jks")), Some(KeyStore::Jks));
        assert_eq!(keystore(&jks, None), Some(KeyStore::Jks));
        let jceks = [0xce, 0xce, 0xce, 0xce, 0, 0, 0, 2, 0, 0, 0, 0];
        assert_eq!(keystore(&jceks, None), Some(KeyStore::Jceks));
        // The magic without a known version, or cut short, is not one.
        assert_eq!(keystore(&[0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 9], None), None);
        assert_eq!(keystore(&[0xfe, 0xed, 0xfe, 0xed], Some("a.jks")), None);
    }

    #[test]
    fn pkcs12_is_recognised_by_its_structure() {
        assert_eq!(keystore(&pfx(&PKCS7_DATA), None), Some(KeyStore::Pkcs12));
        assert_eq!(
            keystore(&pfx(&PKCS7_DATA), Some("client.P12")),
            Some(KeyStore::Pkcs12)
        );
        // Its opening alone is enough: a probe need not read the whole blob.
        assert_eq!(
            keystore(&pfx(&PKCS7_DATA)[..40], None),
            Some(KeyStore::Pkcs12)
        );
        // BER's indefinite lengths, as some tools write them.
        let ber = [
            &[0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80][..],
            &PKCS7_DATA,
            &[0xa0, 0x80, 0x24, 0x80],
        ]
        .concat();
        assert_eq!(keystore(&ber, None), Some(KeyStore::Pkcs12));
        // A signed (not password-protected) one, only when its name says PKCS#12.
        let signed = pfx(&PKCS7_SIGNED_DATA);
        assert_eq!(
            keystore(&signed, Some("certs/server.pfx")),
            Some(KeyStore::Pkcs12)
        );
        assert_eq!(keystore(&signed, Some("server.der")), None);
        assert_eq!(keystore(&signed, None), None);
    }

    #[test]
    fn certificates_random_bytes_and_a_p12_name_alone_are_not_keystores() {
        // An X.509 certificate: SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, serial… }, … }.
        let certificate = [
            0x30, 0x82, 0x03, 0x5d, 0x30, 0x82, 0x02, 0x45, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02,
            0x09, 0x00, 0xc1, 0x2f, 0x66, 0x03, 0x5a, 0x20, 0x19, 0x3d, 0x30, 0x0d, 0x06, 0x09,
            0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
        ];
        assert_eq!(keystore(&certificate, Some("server.cer")), None);
        assert_eq!(keystore(&certificate, Some("server.p12")), None);
        // Version 3 but another content type, or another version.
        let sha256_rsa = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
        ];
        assert_eq!(keystore(&pfx(&sha256_rsa), Some("a.p12")), None);
        let mut version_2 = pfx(&PKCS7_DATA);
        let at = memchr::memmem::find(&version_2, &[0x02, 0x01, 0x03]).expect("the version");
        version_2[at + 2] = 2;
        assert_eq!(keystore(&version_2, None), None);
        // A ContentInfo longer than the PFX around it.
        let mut overlong = pfx(&PKCS7_DATA);
        overlong[8] = 0xff;
        assert_eq!(keystore(&overlong, None), None);
        // A name is not a structure.
        assert_eq!(keystore(TEXT, Some("client.p12")), None);
        assert_eq!(keystore(b"", Some("client.pfx")), None);

        let mut rng = fastrand::Rng::with_seed(12);
        for _ in 0..10_000 {
            let len = rng.usize(..200);
            let mut data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            if let Some(first) = data.first_mut() {
                // As often a SEQUENCE as not, to reach the structure's checks.
                if rng.bool() {
                    *first = 0x30;
                }
            }
            assert_eq!(keystore(&data, Some("random.p12")), None);
        }
    }
}
