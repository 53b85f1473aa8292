//! What a scan produces: findings grouped into secrets (one per rule and value, with
//! every occurrence), keyed fingerprints, and the JSON, SARIF and text renderings. The
//! JSON layout is versioned ([`REPORT_VERSION`]); full values never appear in it unless
//! the caller asks for them explicitly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use super::rules::{Confidence, Rule};

/// Version of the JSON report layout; bumped on any incompatible change. 2: an
/// occurrence inside an archive has the archive as its `path` and the file in it as its
/// `member`; `stats.blobs_unread` counts parts of archives not read; `files` lists key
/// stores; occurrences carry `author` and more `encoding`s; secrets carry `parts`.
pub const REPORT_VERSION: u32 = 2;

/// Version of the secrets file layout (`--secrets-out`).
pub const SECRETS_FILE_VERSION: u32 = 2;

/// Key for fingerprints and value hashes. Reports made with the same key agree on ids,
/// which is what baselines and `.deployguardignore` rely on.
#[derive(Clone)]
pub struct HashKey {
    id: String,
    key: Vec<u8>,
}

impl HashKey {
    pub fn new(id: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            key: key.into(),
        }
    }

    /// The key every local scan uses unless one is configured, so that fingerprints are
    /// stable across machines and runs.
    pub fn builtin() -> Self {
        Self::new("builtin-v1", b"deployguard fingerprint key v1".to_vec())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Keyed hash of a value alone (rule-independent), as stored by the service.
    pub fn value_hash(&self, value: &[u8]) -> [u8; 32] {
        self.mac(&[b"value", value])
    }

    /// Fingerprint of a secret: depends on the rule and the value only, never on where it
    /// was found, so it survives history rewrites.
    pub fn fingerprint(&self, rule_id: &str, value: &[u8]) -> String {
        hex::encode(&self.mac(&[b"fingerprint", rule_id.as_bytes(), value])[..16])
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where a secret was seen.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OccurrenceKind {
    File,
    CommitMessage,
    TagMessage,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Occurrence {
    /// The file path; for a message, the ref or commit it belongs to.
    pub path: Option<String>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in bytes.
    pub column: u32,
    /// The commit that introduced the blob (or carries the message); `None` outside git
    /// history (plain files, the index).
    pub commit: Option<String>,
    pub kind: OccurrenceKind,
    /// How the secret was written here when not as itself: then `line` and `column`
    /// are those of the encoded text that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The file inside an archive at `path` that holds it (`lib/app.jar!/a.properties`
    /// for an archive in an archive). Replacing a value does not reach into compressed
    /// archives: the archive itself has to go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Who wrote `commit`, and when: whom a security team asks about the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
}

/// A commit's author, as `git log` shows it (the repository's `.mailmap` applied).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Author {
    pub name: String,
    pub email: String,
    /// The author date, ISO 8601 with the author's offset (`2024-03-01T09:30:00+01:00`).
    pub date: String,
}

/// An encoding a secret was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Base64,
    Hex,
    Percent,
    /// Backslash escapes: JSON's `\u0041` and `\/`, `\x41`.
    Escaped,
    /// The whole file is UTF-16 text; `line` and `column` are those of its text.
    Utf16,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base64 => "base64",
            Self::Hex => "hex",
            Self::Percent => "percent",
            Self::Escaped => "escaped",
            Self::Utf16 => "utf16",
        }
    }
}

/// One distinct (rule, value) with all its occurrences.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Secret {
    /// Fingerprint: keyed hash of rule and value.
    pub id: String,
    pub rule_id: String,
    pub secret_type: String,
    pub category: String,
    /// First and last characters only.
    pub preview: String,
    /// Keyed HMAC-SHA-256 of the value, hex.
    pub hash: String,
    pub confidence: Confidence,
    pub occurrences: Vec<Occurrence>,
    /// The values found with it (an AWS secret key's key id), previews only; their
    /// full values are in `value`'s, and the clean removes them with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartPreview>,
    /// The full value, rendered only once revealed (`--show-secrets`, the secrets file,
    /// the service's encrypted report).
    #[serde(flatten)]
    pub value: SecretValue,
}

/// One part of a multi-part secret, as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartPreview {
    pub name: String,
    pub preview: String,
}

/// A secret's full value: the bytes as found, which need not be UTF-8. It is kept from
/// detection to the clean, and written out only once [revealed](SecretValue::reveal):
/// as `value` when it is UTF-8, as `value_base64` when it is not. `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue {
    bytes: Vec<u8>,
    /// The encoded texts the value was found in (base64 that decodes to text holding
    /// it): the clean removes them too.
    encoded: Vec<Vec<u8>>,
    /// The values of its parts, by name (see [`Secret::parts`]).
    parts: Vec<(String, Vec<u8>)>,
    revealed: bool,
}

impl SecretValue {
    /// A value found by a scan (not revealed).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
            encoded: Vec::new(),
            parts: Vec::new(),
            revealed: false,
        }
    }

    /// The value, found also inside these encoded texts.
    pub fn with_encoded(mut self, encoded: Vec<Vec<u8>>) -> Self {
        self.encoded = encoded;
        self
    }

    /// The value, found with these parts.
    pub fn with_parts(mut self, parts: Vec<(String, Vec<u8>)>) -> Self {
        self.parts = parts;
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its parts' names and values (see [`SecretValue::with_parts`]).
    pub fn parts(&self) -> &[(String, Vec<u8>)] {
        &self.parts
    }

    /// The encoded texts that hold the value (see [`SecretValue::with_encoded`]).
    pub fn encoded(&self) -> &[Vec<u8>] {
        &self.encoded
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The value as text for a person to read (invalid UTF-8 shown as `\u{FFFD}`).
    pub fn to_text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Lets the value be written out.
    pub fn reveal(&mut self) {
        self.revealed = true;
    }

    pub fn is_revealed(&self) -> bool {
        self.revealed
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.bytes.len())
    }
}

/// Bytes as JSON text when they are UTF-8, else as base64 (a UTF-16 form, a Latin-1
/// password): either way they read back byte for byte.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Base64 { base64: String },
}

impl Written {
    fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Written::Text(text.to_owned()),
            Err(_) => Written::Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }

    fn bytes(self) -> Option<Vec<u8>> {
        match self {
            Written::Text(text) => Some(text.into_bytes()),
            Written::Base64 { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64.trim())
                .ok(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PartValue {
    name: String,
    value: Written,
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shown = self.revealed.then_some(&self.bytes);
        let encoded: Vec<Written> = (self.revealed.then_some(&self.encoded).into_iter())
            .flatten()
            .map(|e| Written::of(e))
            .collect();
        let parts: Vec<PartValue> = (self.revealed.then_some(&self.parts).into_iter())
            .flatten()
            .map(|(name, value)| PartValue {
                name: name.clone(),
                value: Written::of(value),
            })
            .collect();
        let entries = usize::from(shown.is_some())
            + usize::from(!encoded.is_empty())
            + usize::from(!parts.is_empty());
        let mut map = serializer.serialize_map(Some(entries))?;
        if let Some(bytes) = shown {
            match std::str::from_utf8(bytes) {
                Ok(text) => map.serialize_entry("value", text)?,
                Err(_) => map.serialize_entry(
                    "value_base64",
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                )?,
            }
        }
        if !encoded.is_empty() {
            map.serialize_entry("encoded", &encoded)?;
        }
        if !parts.is_empty() {
            map.serialize_entry("part_values", &parts)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = SecretValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a secret's fields")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretValue, A::Error> {
                let mut found: Option<Vec<u8>> = None;
                let mut encoded: Vec<Vec<u8>> = Vec::new();
                let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "part_values" => {
                            // The message must not quote the values.
                            let shown = map.next_value::<Vec<PartValue>>().map_err(|_| {
                                serde::de::Error::custom(
                                    "part_values is not a list of names and values",
                                )
                            })?;
                            parts = Vec::with_capacity(shown.len());
                            for part in shown {
                                let value = part.value.bytes().ok_or_else(|| {
                                    serde::de::Error::custom("a part's base64 is not base64")
                                })?;
                                parts.push((part.name, value));
                            }
                        }
                        "encoded" => {
                            // The message must not quote the texts.
                            let texts = map.next_value::<Vec<Written>>().map_err(|_| {
                                serde::de::Error::custom("encoded is not a list of texts")
                            })?;
                            encoded = Vec::with_capacity(texts.len());
                            for text in texts {
                                encoded.push(text.bytes().ok_or_else(|| {
                                    serde::de::Error::custom("an encoded base64 is not base64")
                                })?);
                            }
                        }
                        "value" => found = Some(map.next_value::<String>()?.into_bytes()),
                        "value_base64" => {
                            let encoded = map.next_value::<String>()?;
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(encoded.trim())
                                // The message must not quote the value.
                                .map_err(|_| {
                                    serde::de::Error::custom("value_base64 is not base64")
                                })?;
                            found = Some(bytes);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(match found {
                    Some(bytes) => SecretValue {
                        bytes,
                        encoded,
                        parts,
                        revealed: true,
                    },
                    None => SecretValue::default(),
                })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// What was scanned.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Source {
    /// `git`, `staged`, `directory` or `file`.
    pub kind: String,
    /// Path, or URL with any credentials removed.
    pub location: String,
    /// The revisions walked (`--all`, `A..B`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub commits: u64,
    pub refs: u64,
    pub blobs_scanned: u64,
    pub bytes_scanned: u64,
    pub blobs_skipped: u64,
    /// Blobs not read at all (too large, unreadable, missing from the repository), and
    /// parts of archives not read (a bomb, too deep, encrypted, corrupt): content the
    /// scan could not look at. Binary blobs are not counted.
    #[serde(default)]
    pub blobs_unread: u64,
    pub messages_scanned: u64,
    /// Secrets left out by `.deployguardignore` or the baseline.
    pub secrets_suppressed: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Binary,
    TooLarge,
    Unreadable,
    /// A tree names it but the repository does not hold it (a partial clone).
    Missing,
    /// An archive that expands beyond any plausible ratio (a zip bomb): it was not read
    /// past that point.
    ArchiveBomb,
    /// An archive nested deeper than the scan opens.
    ArchiveTooDeep,
    /// An archive with more members than the scan reads.
    ArchiveTooManyMembers,
    /// A password-protected archive member.
    Encrypted,
    /// A truncated or invalid archive: what was read before the damage was scanned.
    Corrupt,
}

/// What kind of file a [`FileFinding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A PKCS#12 key store (`.p12`, `.pfx`).
    Pkcs12,
    /// A Java KeyStore.
    Jks,
    /// A JCE Java KeyStore.
    Jceks,
    /// An SSH, PEM, PGP or PuTTY private key file (`id_rsa`, `server.key`, `.ppk`).
    PrivateKey,
    /// A KeePass password database (`.kdbx`, `.kdb`).
    Keepass,
    /// A cloud SDK's credentials: a GCP service account key, an AWS shared credentials
    /// file.
    CloudCredentials,
    /// An `.npmrc` holding a registry token or password.
    Npmrc,
    /// A `.pypirc` holding a password.
    Pypirc,
    /// A `.netrc` (`_netrc`) holding a password.
    Netrc,
    /// An `.env` file holding values (not a template such as `.env.example`).
    EnvFile,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pkcs12 => "pkcs12",
            Self::Jks => "jks",
            Self::Jceks => "jceks",
            Self::PrivateKey => "private_key",
            Self::Keepass => "keepass",
            Self::CloudCredentials => "cloud_credentials",
            Self::Npmrc => "npmrc",
            Self::Pypirc => "pypirc",
            Self::Netrc => "netrc",
            Self::EnvFile => "env_file",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Pkcs12 => "PKCS#12 key store",
            Self::Jks => "Java KeyStore",
            Self::Jceks => "JCE Java KeyStore",
            Self::PrivateKey => "private key file",
            Self::Keepass => "KeePass database",
            Self::CloudCredentials => "cloud credentials file",
            Self::Npmrc => ".npmrc with a registry credential",
            Self::Pypirc => ".pypirc with a password",
            Self::Netrc => ".netrc with a password",
            Self::EnvFile => ".env file with values",
        }
    }

    /// The id its findings have in SARIF, and that their fingerprints are keyed by:
    /// `file-` and the kind, in the rules' kebab case (`file-private-key`).
    pub fn rule_id(self) -> String {
        format!("file-{}", self.as_str().replace('_', "-"))
    }
}

/// A file whose presence is the leak (a key store holds private keys, whatever its
/// password; an `.env` holds a deployment's settings): reported by where it is, since
/// it has no one value to replace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileFinding {
    /// Fingerprint: keyed hash of its kind and content, so that `.deployguardignore`
    /// and baselines can suppress a test key store as they do a secret.
    pub id: String,
    pub path: Option<String>,
    /// The file inside the archive at `path`, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    pub commit: Option<String>,
    /// The git blob at `path` (hex), in history and the index: what a clean that removes
    /// blobs by id takes. For a file inside an archive, the archive's blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    pub kind: FileKind,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
}

/// One of the largest blobs in a repository's history, with where it first appeared:
/// what makes a clone heavy, and what a clean stripping large blobs would take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeBlob {
    /// Its id, hex.
    pub blob: String,
    pub size: u64,
    /// The path it was introduced at (for a blob a ref names directly, the ref).
    pub path: Option<String>,
    /// The commit that introduced it; `None` for a blob a ref names directly.
    pub commit: Option<String>,
}

/// A blob or file not scanned, and why. Reports list them by path, then commit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Skipped {
    pub path: Option<String>,
    pub commit: Option<String>,
    pub size: u64,
    pub reason: SkipReason,
}

/// At most this many skipped entries are listed (all are counted in the stats): the
/// first in the listing's order, whatever order they were met in.
pub const SKIPPED_LISTED: usize = 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub tool: Tool,
    pub source: Source,
    pub hash_key_id: String,
    pub stats: Stats,
    pub skipped: Vec<Skipped>,
    pub secrets: Vec<Secret>,
    /// Files whose presence is the leak, by path then commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileFinding>,
    /// The largest blobs of the history scanned, largest first (ties by id); history
    /// scans only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub largest_blobs: Vec<LargeBlob>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

impl Tool {
    pub fn current() -> Self {
        Self {
            name: "deployguard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// First and last few characters, never more than a third of the value.
pub fn preview(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let chars: Vec<char> = text.chars().collect();
    let shown = (chars.len() / 6).min(3);
    if shown == 0 {
        return "…".into();
    }
    let head: String = chars[..shown].iter().collect();
    let tail: String = chars[chars.len() - shown..].iter().collect();
    format!("{head}…{tail}")
}

/// Collects raw findings into secrets.
#[derive(Default)]
pub(crate) struct Findings {
    by_secret: BTreeMap<(usize, Vec<u8>), Found>,
    files: Vec<FileFinding>,
}

/// Where one secret was found, and the encoded texts it was found in.
#[derive(Default)]
struct Found {
    occurrences: Vec<Occurrence>,
    encoded: BTreeSet<Vec<u8>>,
    /// Its parts, by name and value.
    parts: BTreeSet<(String, Vec<u8>)>,
}

impl Findings {
    pub(crate) fn add(&mut self, rule: usize, value: Vec<u8>, occurrence: Occurrence) {
        self.by_secret
            .entry((rule, value))
            .or_default()
            .occurrences
            .push(occurrence);
    }

    /// A secret found with its parts.
    pub(crate) fn add_with_parts(
        &mut self,
        rule: usize,
        value: Vec<u8>,
        parts: Vec<(String, Vec<u8>)>,
        occurrence: Occurrence,
    ) {
        let found = self.by_secret.entry((rule, value)).or_default();
        found.occurrences.push(occurrence);
        found.parts.extend(parts);
    }

    /// A secret found by decoding `encoded`.
    pub(crate) fn add_encoded(
        &mut self,
        rule: usize,
        value: Vec<u8>,
        encoded: &[u8],
        occurrence: Occurrence,
    ) {
        let found = self.by_secret.entry((rule, value)).or_default();
        found.occurrences.push(occurrence);
        if !found.encoded.contains(encoded) {
            found.encoded.insert(encoded.to_vec());
        }
    }

    /// Findings in text transcoded from `encoding` (UTF-16), given how to write text
    /// back in it: each value, and each encoded text that held one, is removed in the
    /// form the file holds.
    pub(crate) fn transcoded(
        self,
        encoding: Encoding,
        encode: impl Fn(&[u8]) -> Vec<u8>,
    ) -> Findings {
        let mut out = Findings {
            files: self.files,
            ..Findings::default()
        };
        for ((rule, value), found) in self.by_secret {
            let mut encoded: BTreeSet<Vec<u8>> = found.encoded.iter().map(|e| encode(e)).collect();
            encoded.insert(encode(&value));
            let occurrences = found
                .occurrences
                .into_iter()
                .map(|o| Occurrence {
                    encoding: Some(encoding),
                    ..o
                })
                .collect();
            // A part is removed in the file's form too.
            let parts = found.parts;
            encoded.extend(parts.iter().map(|(_, part)| encode(part)));
            out.by_secret.insert(
                (rule, value),
                Found {
                    occurrences,
                    encoded,
                    parts,
                },
            );
        }
        out
    }

    pub(crate) fn add_file(&mut self, file: FileFinding) {
        self.files.push(file);
    }

    /// Names the blob that holds the file findings added since there were `since`:
    /// those the scan of one blob made.
    pub(crate) fn name_blob(&mut self, since: usize, blob: impl FnOnce() -> String) {
        if let Some(found) = self.files.get_mut(since..)
            && !found.is_empty()
        {
            let blob = blob();
            for file in found.iter_mut().filter(|f| f.blob.is_none()) {
                file.blob = Some(blob.clone());
            }
        }
    }

    pub(crate) fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Findings in a member of the archive at `path`: the member's path (which the
    /// detection read, for lock files and allowlists) moves to `member`.
    pub(crate) fn within(mut self, path: Option<&str>) -> Findings {
        for found in self.by_secret.values_mut() {
            for o in &mut found.occurrences {
                o.member = o.path.take();
                o.path = path.map(str::to_owned);
            }
        }
        for file in &mut self.files {
            file.member = file.path.take();
            file.path = path.map(str::to_owned);
        }
        self
    }

    pub(crate) fn merge(&mut self, other: Findings) {
        self.files.extend(other.files);
        for (key, found) in other.by_secret {
            let into = self.by_secret.entry(key).or_default();
            into.occurrences.extend(found.occurrences);
            into.encoded.extend(found.encoded);
            into.parts.extend(found.parts);
        }
    }

    /// Secrets, minus the suppressed fingerprints, in a stable order: by first occurrence.
    pub(crate) fn into_secrets(
        self,
        rules: &[Rule],
        key: &HashKey,
        suppressed: &HashSet<String>,
    ) -> (Vec<Secret>, Vec<FileFinding>, u64) {
        let mut files = self.files;
        // By place, as the listing reads (the ids are hashes: no order to a reader).
        files.sort_by(|a, b| {
            (&a.path, &a.member, &a.commit, a.kind, &a.id)
                .cmp(&(&b.path, &b.member, &b.commit, b.kind, &b.id))
        });
        files.dedup();
        // A suppressed key store counts once, however many places hold it.
        let mut gone: BTreeSet<String> = BTreeSet::new();
        files.retain(|f| {
            let keep = !suppressed.contains(&f.id);
            if !keep {
                gone.insert(f.id.clone());
            }
            keep
        });
        let mut dropped = gone.len() as u64;
        let mut secrets: Vec<Secret> = Vec::new();
        for ((rule_index, value), found) in self.by_secret {
            let mut occurrences = found.occurrences;
            let rule = &rules[rule_index];
            let id = key.fingerprint(&rule.id, &value);
            if suppressed.contains(&id) {
                dropped += 1;
                continue;
            }
            occurrences.sort();
            occurrences.dedup();
            secrets.push(Secret {
                id,
                rule_id: rule.id.clone(),
                secret_type: rule.name.clone(),
                category: rule.category.clone(),
                preview: preview(&value),
                hash: hex::encode(key.value_hash(&value)),
                confidence: rule.confidence,
                occurrences,
                parts: (found.parts.iter())
                    .map(|(name, part)| PartPreview {
                        name: name.clone(),
                        preview: preview(part),
                    })
                    .collect(),
                value: SecretValue::new(value)
                    .with_encoded(found.encoded.into_iter().collect())
                    .with_parts(found.parts.into_iter().collect()),
            });
        }
        secrets.sort_by(|a, b| {
            a.occurrences
                .first()
                .cmp(&b.occurrences.first())
                .then_with(|| a.id.cmp(&b.id))
        });
        (secrets, files, dropped)
    }
}

impl Report {
    /// Puts the full values into the rendered report (`--show-secrets`).
    pub fn reveal_values(&mut self) {
        for secret in &mut self.secrets {
            secret.value.reveal();
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The file the clean step reads: fingerprint, rule, value hash and full value of
    /// every secret (`value`, or `value_base64` for a value that is not UTF-8), and,
    /// when there are any, the files whose presence is the leak (`files`: id, kind,
    /// path, member, blob).
    pub fn secrets_file(&self) -> String {
        #[derive(Serialize)]
        struct Entry<'a> {
            id: &'a str,
            rule_id: &'a str,
            hash: &'a str,
            /// The archives it is inside, which the clean cannot reach into.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            archives: Vec<&'a str>,
            #[serde(flatten)]
            value: SecretValue,
        }
        let secrets: Vec<Entry<'_>> = self
            .secrets
            .iter()
            .map(|s| {
                let mut value = s.value.clone();
                value.reveal();
                let mut archives: Vec<&str> = (s.occurrences.iter())
                    .filter(|o| o.member.is_some())
                    .filter_map(|o| o.path.as_deref())
                    .collect();
                archives.sort_unstable();
                archives.dedup();
                Entry {
                    id: &s.id,
                    rule_id: &s.rule_id,
                    hash: &s.hash,
                    archives,
                    value,
                }
            })
            .collect();
        let files: Vec<FileEntry<'_>> = self.files.iter().map(FileEntry::of).collect();
        let mut file = serde_json::json!({"version": SECRETS_FILE_VERSION, "hash_key_id": self.hash_key_id, "secrets": secrets});
        // Beside the secrets, which readers of versions 1 and 2 take alone: a clean that
        // removes whole files by path or blob id finds them here.
        if !files.is_empty() {
            file["files"] = serde_json::json!(files);
        }
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// The largest blobs as a short table for people: size, id, path, commit.
    fn largest_blobs_text(&self, paint: &dyn Fn(&str, &str) -> String) -> String {
        let mut out = String::new();
        if self.largest_blobs.is_empty() {
            return out;
        }
        let _ = writeln!(out, "{}", paint("1", "largest blobs in history"));
        for large in &self.largest_blobs {
            let mut line = format!(
                "    {:>10}  {}  {}",
                human_bytes(large.size),
                large.blob,
                large.path.as_deref().unwrap_or("?")
            );
            who_and_when(&mut line, &large.commit, &None, paint);
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
        out
    }

    /// SARIF 2.1.0: one result per occurrence, previews only.
    pub fn to_sarif(&self, rules: &[Rule]) -> String {
        let used: HashSet<&str> = self.secrets.iter().map(|s| s.rule_id.as_str()).collect();
        let driver_rules: Vec<&Rule> = rules
            .iter()
            .filter(|r| used.contains(r.id.as_str()))
            .collect();
        let rule_index = |id: &str| driver_rules.iter().position(|r| r.id == id);
        let sarif_rules: Vec<serde_json::Value> = driver_rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "name": sarif_rule_name(&r.id),
                    "shortDescription": {"text": r.name},
                    "fullDescription": {"text": format!("{} ({} rule)", r.name, r.category)},
                    "defaultConfiguration": {"level": "error"},
                    "properties": {"category": r.category, "confidence": r.confidence.as_str(), "tags": ["security", "secret"]},
                })
            })
            .collect();
        let mut results = Vec::new();
        for secret in &self.secrets {
            for occurrence in &secret.occurrences {
                let mut result = serde_json::json!({
                    "ruleId": secret.rule_id,
                    "level": "error",
                    "message": {"text": format!("{} found: {}", secret.secret_type, secret.preview)},
                    "partialFingerprints": {"deployguardSecret/v1": secret.id},
                    "properties": {"confidence": secret.confidence.as_str(), "commit": occurrence.commit, "kind": occurrence.kind, "author": occurrence.author, "encoding": occurrence.encoding, "member": occurrence.member, "parts": secret.parts},
                });
                if let Some(index) = rule_index(&secret.rule_id) {
                    result["ruleIndex"] = index.into();
                }
                let region = serde_json::json!({"startLine": occurrence.line.max(1), "startColumn": occurrence.column.max(1)});
                let location = match (&occurrence.kind, &occurrence.path) {
                    (OccurrenceKind::File, Some(path)) => serde_json::json!({
                        "physicalLocation": {"artifactLocation": {"uri": sarif_uri(path)}, "region": region}
                    }),
                    (_, path) => serde_json::json!({
                        "logicalLocations": [{
                            "name": path.clone().or_else(|| occurrence.commit.clone()).unwrap_or_default(),
                            "kind": "object",
                        }]
                    }),
                };
                result["locations"] = serde_json::json!([location]);
                results.push(result);
            }
        }
        for file in &self.files {
            results.push(serde_json::json!({
                "ruleId": file.kind.rule_id(),
                "partialFingerprints": {"deployguardSecret/v1": file.id},
                "level": "error",
                "message": {"text": format!("{} committed: its presence is the leak", file.kind.describe())},
                "properties": {"commit": file.commit, "member": file.member, "blob": file.blob, "size": file.size, "author": file.author},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": sarif_uri(file.path.as_deref().unwrap_or_default())}}}],
            }));
        }
        let sarif = serde_json::json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "DeployGuard",
                    "version": self.tool.version,
                    "semanticVersion": self.tool.version,
                    "rules": sarif_rules,
                }},
                "results": results,
                "properties": {"stats": self.stats},
            }],
        });
        serde_json::to_string_pretty(&sarif).unwrap_or_default()
    }

    /// The human-readable summary; `color` adds ANSI colours.
    pub fn to_text(&self, color: bool) -> String {
        let paint = |code: &str, text: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_owned()
            }
        };
        let mut out = String::new();
        let occurrences: usize = self.secrets.iter().map(|s| s.occurrences.len()).sum();
        for secret in &self.secrets {
            let shown;
            let value = if secret.value.is_revealed() {
                shown = secret.value.to_text();
                shown.as_str()
            } else {
                secret.preview.as_str()
            };
            let _ = writeln!(
                out,
                "{} {}  {}  [{}]  id {}",
                paint("1;31", "●"),
                paint("1", &secret.secret_type),
                value,
                secret.confidence.as_str(),
                paint("2", &secret.id),
            );
            let _ = writeln!(out, "    rule {}", secret.rule_id);
            for (i, part) in secret.parts.iter().enumerate() {
                let shown = match secret.value.is_revealed() {
                    true => secret
                        .value
                        .parts()
                        .get(i)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
                    false => None,
                };
                let _ = writeln!(
                    out,
                    "    with {} {}",
                    part.name,
                    shown.as_deref().unwrap_or(&part.preview)
                );
            }
            for occurrence in &secret.occurrences {
                let place = match occurrence.kind {
                    OccurrenceKind::File => format!(
                        "{}{}:{}:{}",
                        occurrence.path.as_deref().unwrap_or("?"),
                        occurrence
                            .member
                            .as_deref()
                            .map(|m| format!("!/{m}"))
                            .unwrap_or_default(),
                        occurrence.line,
                        occurrence.column
                    ),
                    OccurrenceKind::CommitMessage => {
                        format!("commit message, line {}", occurrence.line)
                    }
                    OccurrenceKind::TagMessage => {
                        format!(
                            "tag message {}, line {}",
                            occurrence.path.as_deref().unwrap_or("?"),
                            occurrence.line
                        )
                    }
                };
                let mut line = format!("    {place}");
                if let Some(encoding) = occurrence.encoding {
                    let _ = write!(line, " ({})", encoding.as_str());
                }
                who_and_when(&mut line, &occurrence.commit, &occurrence.author, &paint);
                let _ = writeln!(out, "{line}");
            }
            out.push('\n');
        }
        for file in &self.files {
            let _ = writeln!(
                out,
                "{} {}  (its presence is the leak)  id {}",
                paint("1;31", "●"),
                paint("1", file.kind.describe()),
                paint("2", &file.id),
            );
            let mut line = format!(
                "    {}{}  {}",
                file.path.as_deref().unwrap_or("?"),
                file.member
                    .as_deref()
                    .map(|m| format!("!/{m}"))
                    .unwrap_or_default(),
                human_bytes(file.size)
            );
            if let Some(blob) = &file.blob {
                let _ = write!(line, "  blob {blob}");
            }
            who_and_when(&mut line, &file.commit, &file.author, &paint);
            let _ = writeln!(out, "{line}\n");
        }
        out.push_str(&self.largest_blobs_text(&paint));
        let s = &self.stats;
        let skipped = match (s.blobs_skipped, s.blobs_unread) {
            (0, 0) => String::new(),
            (skipped, 0) => format!(", {skipped} skipped (binary)"),
            (skipped, unread) => format!(
                ", {skipped} skipped, {unread} not read (too large, unreadable, missing, or \
                 parts of archives)"
            ),
        };
        let history = if self.source.kind == "git" {
            format!(", {} commits, {} refs", s.commits, s.refs)
        } else {
            String::new()
        };
        let suppressed = if s.secrets_suppressed > 0 {
            format!(", {} suppressed", s.secrets_suppressed)
        } else {
            String::new()
        };
        let files = match self.files.len() {
            0 => String::new(),
            n => format!(", {n} files whose presence is the leak"),
        };
        let headline = if self.secrets.is_empty() && self.files.is_empty() {
            paint("1;32", "no secrets found")
        } else {
            paint(
                "1;31",
                &format!("{} secrets ({occurrences} occurrences)", self.secrets.len()),
            )
        };
        let archived = (self.secrets.iter())
            .filter(|s| s.occurrences.iter().any(|o| o.member.is_some()))
            .count();
        if archived > 0 {
            let _ = writeln!(
                out,
                "{archived} of these secrets are inside archives (path!/member): a clean \
                 replaces text, which does not reach into compressed archives; remove those \
                 files from history\n"
            );
        }
        let _ = writeln!(
            out,
            "{headline}{files}{suppressed} in {} blobs ({}){skipped}{history}, {:.2} s",
            s.blobs_scanned,
            human_bytes(s.bytes_scanned),
            s.duration_ms as f64 / 1000.0,
        );
        out
    }
}

/// A file finding as the secrets file lists it: enough to remove the whole file by
/// path or by blob id, and to say which finding it was.
#[derive(Serialize)]
struct FileEntry<'a> {
    id: &'a str,
    kind: FileKind,
    path: Option<&'a str>,
    /// The file inside the archive at `path`: the archive is what has to go.
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blob: Option<&'a str>,
}

impl<'a> FileEntry<'a> {
    fn of(file: &'a FileFinding) -> Self {
        Self {
            id: &file.id,
            kind: file.kind,
            path: file.path.as_deref(),
            member: file.member.as_deref(),
            blob: file.blob.as_deref(),
        }
    }
}

/// Appends a finding's commit and its author to a text report's line.
fn who_and_when(
    line: &mut String,
    commit: &Option<String>,
    author: &Option<Author>,
    paint: &dyn Fn(&str, &str) -> String,
) {
    if let Some(commit) = commit {
        let _ = write!(
            line,
            "  {}",
            paint("33", &format!("commit {}", short(commit)))
        );
    }
    if let Some(author) = author {
        // The day is enough to place a commit; the full date is in JSON.
        let day = author.date.get(..10).unwrap_or(&author.date);
        let _ = write!(line, "  {} <{}> {day}", author.name, author.email);
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// SARIF rule names are PascalCase identifiers.
fn sarif_rule_name(id: &str) -> String {
    id.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A relative URI reference for a repository path (spaces and the like percent-encoded).
fn sarif_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_never_shows_more_than_a_third() {
        assert_eq!(
            preview(b"ghp_R8d2kQx7TnV4bLm9ZpW3cY6sJf1HgA5eUo0i"),
            "ghp…o0i"
        );
        assert_eq!(preview(b"Vq8rT2mLx9Kd"), "Vq…Kd");
        assert_eq!(preview(b"short"), "…");
    }

    fn secret_with(value: &[u8]) -> Secret {
        Secret {
            id: "f1".into(),
            rule_id: "custom".into(),
            secret_type: "Custom".into(),
            category: "generic".into(),
            preview: preview(value),
            hash: hex::encode(HashKey::builtin().value_hash(value)),
            confidence: Confidence::High,
            occurrences: Vec::new(),
            parts: Vec::new(),
            value: SecretValue::new(value),
        }
    }

    #[test]
    fn part_values_are_written_only_once_revealed_and_read_back() {
        let mut secret = secret_with(b"k3Fq9Vd+2mXw7LpRz8TnB4yHc1GsJe6UaQo0WbYi");
        secret.parts = vec![PartPreview {
            name: "access key id".into(),
            preview: preview(b"AKIAQ3EGRB5LVDWXHK7N"),
        }];
        secret.value = (secret.value.clone()).with_parts(vec![(
            "access key id".into(),
            b"AKIAQ3EGRB5LVDWXHK7N".to_vec(),
        )]);
        // Bytes that are not UTF-8 (the UTF-16 form of a non-ASCII password) survive too.
        let utf16: Vec<u8> = "Pässwort-7Qz!"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        secret.value = (secret.value.clone()).with_encoded(vec![utf16.clone(), b"%2B".to_vec()]);
        let hidden = serde_json::to_string(&secret).unwrap();
        assert!(!hidden.contains("AKIAQ3EGRB5LVDWXHK7N"), "{hidden}");
        assert!(hidden.contains("AKI…K7N"), "{hidden}");
        secret.value.reveal();
        let shown = serde_json::to_string(&secret).unwrap();
        let back: Secret = serde_json::from_str(&shown).unwrap();
        assert_eq!(back.value.parts(), secret.value.parts());
        assert_eq!(back.value.encoded(), [utf16, b"%2B".to_vec()]);
        assert_eq!(back.parts, secret.parts);
        let broken = shown.replace(
            "\"name\":\"access key id\",\"value\"",
            "\"name\":7,\"value\"",
        );
        assert_ne!(broken, shown);
        let err = serde_json::from_str::<Secret>(&broken)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("AKIA"), "{err}");
    }

    #[test]
    fn values_are_written_only_once_revealed_and_bytes_survive_a_round_trip() {
        let latin1 = b"Gr\xfc\xdfe-geheim-2026".to_vec();
        for value in [b"plain-utf8-value".to_vec(), latin1] {
            let mut secret = secret_with(&value);
            let hidden = serde_json::to_value(&secret).unwrap();
            assert!(hidden.get("value").is_none() && hidden.get("value_base64").is_none());
            assert!(!format!("{secret:?}").contains("geheim"));
            secret.value.reveal();
            let shown = serde_json::to_string(&secret).unwrap();
            let field = if std::str::from_utf8(&value).is_ok() {
                "\"value\""
            } else {
                "\"value_base64\""
            };
            assert!(shown.contains(field), "{shown}");
            let back: Secret = serde_json::from_str(&shown).unwrap();
            assert_eq!(back.value.as_bytes(), value.as_slice());
            assert!(back.value.is_revealed());
        }
        let err = serde_json::from_str::<Secret>(
            &serde_json::to_string(&secret_with(b"x"))
                .unwrap()
                .replace('}', ",\"value_base64\":\"hunter2!!\"}"),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn fingerprints_depend_on_rule_and_value_and_key() {
        let key = HashKey::builtin();
        let a = key.fingerprint("aws-access-key-id", b"AKIA2E3RXNQ5HWKZ4TLB");
        assert_eq!(
            a,
            key.fingerprint("aws-access-key-id", b"AKIA2E3RXNQ5HWKZ4TLB")
        );
        assert_ne!(
            a,
            key.fingerprint("generic-secret-assignment", b"AKIA2E3RXNQ5HWKZ4TLB")
        );
        assert_ne!(
            a,
            HashKey::new("other", b"k".to_vec())
                .fingerprint("aws-access-key-id", b"AKIA2E3RXNQ5HWKZ4TLB")
        );
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn sarif_uris_are_percent_encoded() {
        assert_eq!(sarif_uri("dir/a file#1.txt"), "dir/a%20file%231.txt");
    }
}
