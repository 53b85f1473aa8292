//! What a scan produces: findings grouped into secrets (one per rule and value, with
//! every occurrence), keyed fingerprints, and the JSON, SARIF and text renderings. The
//! JSON layout is versioned ([`REPORT_VERSION`]); full values never appear in it unless
//! the caller asks for them explicitly.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::rules::{Confidence, Rule};

/// Version of the JSON report layout; bumped on any incompatible change.
pub const REPORT_VERSION: u32 = 1;

/// Version of the secrets file layout (`--secrets-out`).
pub const SECRETS_FILE_VERSION: u32 = 1;

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
    /// The full value: only present when the caller asked (`--show-secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip)]
    pub(crate) secret_value: String,
}

impl Secret {
    /// The full value, for the clean step and the secrets file.
    pub fn secret_value(&self) -> &str {
        &self.secret_value
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
    pub messages_scanned: u64,
    /// Secrets left out by `.deployguardignore` or the baseline.
    pub secrets_suppressed: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Binary,
    TooLarge,
    Unreadable,
}

/// A blob or file not scanned, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub path: Option<String>,
    pub commit: Option<String>,
    pub size: u64,
    pub reason: SkipReason,
}

/// At most this many skipped entries are listed (all are counted in the stats).
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
pub fn preview(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
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
    by_secret: BTreeMap<(usize, String), Vec<Occurrence>>,
}

impl Findings {
    pub(crate) fn add(&mut self, rule: usize, value: String, occurrence: Occurrence) {
        self.by_secret
            .entry((rule, value))
            .or_default()
            .push(occurrence);
    }

    pub(crate) fn merge(&mut self, other: Findings) {
        for (key, occurrences) in other.by_secret {
            self.by_secret.entry(key).or_default().extend(occurrences);
        }
    }

    /// Secrets, minus the suppressed fingerprints, in a stable order: by first occurrence.
    pub(crate) fn into_secrets(
        self,
        rules: &[Rule],
        key: &HashKey,
        suppressed: &HashSet<String>,
    ) -> (Vec<Secret>, u64) {
        let mut dropped = 0;
        let mut secrets: Vec<Secret> = Vec::new();
        for ((rule_index, value), mut occurrences) in self.by_secret {
            let rule = &rules[rule_index];
            let id = key.fingerprint(&rule.id, value.as_bytes());
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
                hash: hex::encode(key.value_hash(value.as_bytes())),
                confidence: rule.confidence,
                occurrences,
                value: None,
                secret_value: value,
            });
        }
        secrets.sort_by(|a, b| {
            a.occurrences
                .first()
                .cmp(&b.occurrences.first())
                .then_with(|| a.id.cmp(&b.id))
        });
        (secrets, dropped)
    }
}

impl Report {
    /// Puts the full values into the rendered report (`--show-secrets`).
    pub fn reveal_values(&mut self) {
        for secret in &mut self.secrets {
            secret.value = Some(secret.secret_value.clone());
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The file the clean step reads: fingerprint, rule and full value of every secret.
    pub fn secrets_file(&self) -> String {
        let secrets: Vec<serde_json::Value> = self
            .secrets
            .iter()
            .map(|s| serde_json::json!({"id": s.id, "rule_id": s.rule_id, "value": s.secret_value}))
            .collect();
        let file = serde_json::json!({"version": SECRETS_FILE_VERSION, "hash_key_id": self.hash_key_id, "secrets": secrets});
        serde_json::to_string_pretty(&file).unwrap_or_default()
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
                    "properties": {"confidence": secret.confidence.as_str(), "commit": occurrence.commit, "kind": occurrence.kind},
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
            let value = secret.value.as_deref().unwrap_or(&secret.preview);
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
            for occurrence in &secret.occurrences {
                let place = match occurrence.kind {
                    OccurrenceKind::File => format!(
                        "{}:{}:{}",
                        occurrence.path.as_deref().unwrap_or("?"),
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
                match &occurrence.commit {
                    Some(commit) => {
                        let _ = writeln!(
                            out,
                            "    {place}  {}",
                            paint("33", &format!("commit {}", short(commit)))
                        );
                    }
                    None => {
                        let _ = writeln!(out, "    {place}");
                    }
                }
            }
            out.push('\n');
        }
        let s = &self.stats;
        let skipped = if s.blobs_skipped > 0 {
            format!(", {} skipped (binary or too large)", s.blobs_skipped)
        } else {
            String::new()
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
        let headline = if self.secrets.is_empty() {
            paint("1;32", "no secrets found")
        } else {
            paint(
                "1;31",
                &format!("{} secrets ({occurrences} occurrences)", self.secrets.len()),
            )
        };
        let _ = writeln!(
            out,
            "{headline}{suppressed} in {} blobs ({}){skipped}{history}, {:.2} s",
            s.blobs_scanned,
            human_bytes(s.bytes_scanned),
            s.duration_ms as f64 / 1000.0,
        );
        out
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
            preview("ghp_R8d2kQx7TnV4bLm9ZpW3cY6sJf1HgA5eUo0i"),
            "ghp…o0i"
        );
        assert_eq!(preview("Vq8rT2mLx9Kd"), "Vq…Kd");
        assert_eq!(preview("short"), "…");
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
