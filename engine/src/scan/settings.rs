//! User settings for a scan: `.deployguard.toml` (extra rules, disabled rules,
//! allowlists, size limit), `.deployguardignore` (fingerprints) and baselines (earlier
//! JSON reports).

use std::collections::HashSet;

use regex::bytes::RegexBuilder;
use serde::Deserialize;

use super::ScanError;
use super::detect::{Allowlist, Detector};
use super::rules::{RuleSet, RuleSpec};

/// Name of the settings file looked up at a repository's root.
pub const SETTINGS_FILE: &str = ".deployguard.toml";
/// Name of the fingerprint ignore file looked up at a repository's root.
pub const IGNORE_FILE: &str = ".deployguardignore";

/// `.deployguard.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    scan: ScanSection,
    /// Extra rules, in the rule-file format (category `custom`).
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    allowlist: AllowSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanSection {
    /// Bytes; larger blobs and files are skipped (and reported as skipped).
    max_file_size: Option<u64>,
    #[serde(default)]
    disable_rules: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowSection {
    /// Exact values never reported.
    #[serde(default)]
    values: Vec<String>,
    /// Regular expressions; a value matching one is never reported.
    #[serde(default)]
    regexes: Vec<String>,
    /// Regular expressions over repository paths; files matching one are not scanned.
    #[serde(default)]
    paths: Vec<String>,
}

impl Settings {
    pub fn parse(origin: &str, text: &str) -> Result<Self, ScanError> {
        toml::from_str(text).map_err(|e| ScanError::Settings {
            origin: origin.into(),
            problem: e.to_string(),
        })
    }

    pub fn max_file_size(&self) -> Option<u64> {
        self.scan.max_file_size
    }

    /// The embedded rules plus this file's rules, minus the disabled ones, with the allowlists.
    pub fn detector(&self) -> Result<Detector, ScanError> {
        let mut rules = RuleSet::embedded()?;
        for spec in &self.rules {
            rules.add_custom(spec.clone())?;
        }
        rules.disable(&self.scan.disable_rules)?;
        let compile = |what: &str, pattern: &str| {
            compile_pattern(pattern).map_err(|e| ScanError::Settings {
                origin: format!("allowlist.{what}"),
                problem: format!("{pattern:?}: {e}"),
            })
        };
        let allow = Allowlist {
            values: self
                .allowlist
                .values
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect(),
            value_patterns: self
                .allowlist
                .regexes
                .iter()
                .map(|p| compile("regexes", p))
                .collect::<Result<_, _>>()?,
            path_patterns: self
                .allowlist
                .paths
                .iter()
                .map(|p| compile("paths", p))
                .collect::<Result<_, _>>()?,
        };
        Ok(Detector::new(rules, allow)?)
    }
}

fn compile_pattern(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(8 << 20)
        .build()
}

/// A file at the root of a repository: from the work tree when there is one, else from
/// HEAD (a bare clone), else `None`.
pub fn read_repository_file(root: &std::path::Path, name: &str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join(name)) {
        return Some(text);
    }
    let blob = crate::git::output(root, &["cat-file", "blob", &format!("HEAD:{name}")]).ok()?;
    String::from_utf8(blob).ok()
}

/// Fingerprints from a `.deployguardignore`: one per line, `#` starts a comment.
pub fn parse_ignore_file(origin: &str, text: &str) -> Result<HashSet<String>, ScanError> {
    let mut ids = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        if entry.len() != 32 || !entry.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ScanError::Settings {
                origin: format!("{origin}:{}", number + 1),
                problem: format!(
                    "{entry:?} is not a secret fingerprint (32 hexadecimal characters)"
                ),
            });
        }
        ids.insert(entry.to_ascii_lowercase());
    }
    Ok(ids)
}

/// Fingerprints of every secret in an earlier JSON report (`--baseline`).
pub fn parse_baseline(origin: &str, text: &str) -> Result<HashSet<String>, ScanError> {
    let problem = |p: &str| ScanError::Settings {
        origin: origin.into(),
        problem: p.into(),
    };
    let report: serde_json::Value =
        serde_json::from_str(text).map_err(|e| problem(&format!("not JSON: {e}")))?;
    let secrets = report
        .get("secrets")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| problem("not a DeployGuard JSON report (no \"secrets\" list)"))?;
    // Its file findings (key stores) too, from version 2 on.
    let files = (report.get("files").and_then(serde_json::Value::as_array))
        .map(Vec::as_slice)
        .unwrap_or_default();
    secrets
        .iter()
        .chain(files)
        .map(|s| {
            s.get("id")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| problem("a secret in the baseline has no \"id\""))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_file_accepts_fingerprints_and_comments() {
        let ids = parse_ignore_file(
            "x",
            "# reviewed\n0123456789abcdef0123456789ABCDEF  # test fixture\n\n",
        )
        .unwrap();
        assert!(ids.contains("0123456789abcdef0123456789abcdef"));
        let err = parse_ignore_file(".deployguardignore", "\nnot-a-fingerprint\n").unwrap_err();
        assert!(err.to_string().contains(".deployguardignore:2"), "{err}");
    }

    #[test]
    fn unknown_settings_are_refused() {
        let err = Settings::parse(".deployguard.toml", "[scan]\nmax_size = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_size"), "{err}");
    }

    #[test]
    fn disabling_an_unknown_rule_is_an_error() {
        let settings =
            Settings::parse("s", "[scan]\ndisable_rules = [\"no-such-rule\"]\n").unwrap();
        assert!(settings.detector().is_err());
    }

    #[test]
    fn baseline_needs_a_report() {
        assert!(
            parse_baseline("b.json", "{\"secrets\": [{\"id\": \"ab\"}]}")
                .unwrap()
                .contains("ab")
        );
        assert!(parse_baseline("b.json", "[]").is_err());
    }
}
