//! What to remove: the selected secret values (from a scan's secrets file) or a list of
//! expressions in git-filter-repo's `--replace-text` format, and how each is replaced.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;
use serde::Deserialize;

use super::paths::FileSelection;
use crate::scan::SecretValue;

/// What a removed value becomes unless an expression names its own replacement.
pub const DEFAULT_REPLACEMENT: &str = "***REMOVED***";

/// Git's own heuristic: a NUL byte in the first 8000 bytes means binary.
const BINARY_PROBE: usize = 8000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("nothing is selected: no value to remove")]
    Empty,
    #[error("line {line}: {problem}")]
    Expression { line: usize, problem: String },
    #[error("the secrets file is not valid: {0}")]
    SecretsFile(String),
    #[error("the secrets file has version {0}; this version of DeployGuard reads versions 1 and 2")]
    SecretsFileVersion(u64),
    #[error("no secret with id {0} in the secrets file")]
    UnknownId(String),
    #[error("{wanted} secrets are selected, {found} of them are in the secrets file or report")]
    Missing { wanted: usize, found: usize },
    #[error("selected secret {0} has an empty value")]
    EmptyValue(String),
    #[error("the replacement for {what} contains a selected value, so it could never be removed")]
    ReplacementContainsValue { what: String },
    #[error("{0}")]
    Files(String),
}

#[derive(Clone, Debug)]
enum Pattern {
    Literal(Vec<u8>),
    Regex(Regex),
}

#[derive(Clone, Debug)]
struct Expression {
    pattern: Pattern,
    replacement: Vec<u8>,
}

/// The values to remove, compiled for fast search and replacement.
///
/// Literal values are replaced all at once, the longest match winning where two
/// overlap (so a value that contains another is removed whole); regular expressions are
/// then applied one after another in the order given.
#[derive(Clone, Debug)]
pub struct Selection {
    literals: Vec<Vec<u8>>,
    literal_replacements: Vec<Vec<u8>>,
    matcher: Option<AhoCorasick>,
    /// A SIMD search for up to 64 literals, for the question "is any value here?".
    fast: Option<aho_corasick::packed::Searcher>,
    regexes: Vec<(Regex, Vec<u8>)>,
    /// Selected secrets found inside compressed archives, by id, with the archives'
    /// paths: replacing text does not reach into them.
    archived: Vec<(String, Vec<String>)>,
    /// Whole files to remove.
    files: FileSelection,
}

/// Which secrets of a secrets file (or a report with its values) to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    All,
    /// By fingerprint; a unique prefix of one is enough (what people type).
    Ids(Vec<String>),
    /// By `(rule_id, hash)`, the hash hex as the report and the service's database keep
    /// it; every one must be there.
    Hashes(Vec<(String, String)>),
}

/// What a secrets file (`scan --secrets-out`) and a report with revealed values (the
/// service's encrypted report) have in common: version 1, and each secret's id, rule,
/// value hash and value. A new version of either layout must stay readable here, or
/// jobs scanned before it cannot be cleaned.
#[derive(Deserialize)]
struct SecretsFile {
    version: u64,
    #[serde(default)]
    secrets: Vec<SecretEntry>,
}

#[derive(Deserialize)]
struct SecretEntry {
    id: String,
    rule_id: String,
    #[serde(default)]
    hash: Option<String>,
    /// The archives it was found inside (a secrets file lists them).
    #[serde(default)]
    archives: Vec<String>,
    /// Where it was found (a report has them): those inside archives count too.
    #[serde(default)]
    occurrences: Vec<ArchivedAt>,
    #[serde(flatten)]
    value: SecretValue,
}

/// What the selection needs of an occurrence in a report.
#[derive(Deserialize)]
struct ArchivedAt {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    member: Option<String>,
}

impl SecretEntry {
    fn archives(&self) -> Vec<String> {
        let mut paths = self.archives.clone();
        let inside = self.occurrences.iter().filter(|o| o.member.is_some());
        paths.extend(inside.filter_map(|o| o.path.clone()));
        paths.sort();
        paths.dedup();
        paths
    }
}

impl Selection {
    /// Selected secrets found inside compressed archives (a jar, a `.tar.gz`), by id,
    /// with the archives' paths: replacing their text does not reach into compressed
    /// data, so they stay there until the archives themselves are removed.
    pub fn inside_archives(&self) -> &[(String, Vec<String>)] {
        &self.archived
    }

    /// Literal values, each replaced by `replacement`.
    pub fn from_values<I, V>(values: I, replacement: &[u8]) -> Result<Self, SelectionError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let expressions = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let v = v.as_ref();
                if v.is_empty() {
                    return Err(SelectionError::EmptyValue(format!("#{}", i + 1)));
                }
                Ok(Expression {
                    pattern: Pattern::Literal(v.to_vec()),
                    replacement: replacement.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::build(expressions)
    }

    /// The secrets chosen from a secrets file (`scan --secrets-out`) or a report with its
    /// values revealed (what the service stores, encrypted): the one way both are read.
    /// Values are bytes, UTF-8 or not.
    pub fn from_secrets(
        json: &[u8],
        select: &Select,
        replacement: &[u8],
    ) -> Result<Self, SelectionError> {
        // serde_json's messages can quote the offending value; say only where it is.
        let file: SecretsFile = serde_json::from_slice(json).map_err(|e| {
            SelectionError::SecretsFile(format!(
                "{} error at line {} column {}",
                match e.classify() {
                    serde_json::error::Category::Io => "read",
                    serde_json::error::Category::Syntax => "JSON syntax",
                    serde_json::error::Category::Data => "unexpected data",
                    serde_json::error::Category::Eof => "unexpected end of file",
                },
                e.line(),
                e.column()
            ))
        })?;
        // A secrets file (version 1), or a report with its values: version 1, or 2,
        // whose changes (archive members, parts, more encodings) add fields only.
        if !(1..=u64::from(crate::scan::report::REPORT_VERSION)).contains(&file.version) {
            return Err(SelectionError::SecretsFileVersion(file.version));
        }
        let chosen: Vec<&SecretEntry> = match select {
            Select::All => file.secrets.iter().collect(),
            Select::Ids(ids) => {
                let mut chosen = Vec::new();
                for id in ids {
                    let id = id.trim();
                    let matches: Vec<&SecretEntry> = file
                        .secrets
                        .iter()
                        .filter(|s| !id.is_empty() && s.id.starts_with(id))
                        .collect();
                    match matches.as_slice() {
                        [one] => chosen.push(*one),
                        [] => return Err(SelectionError::UnknownId(id.to_owned())),
                        _ => {
                            return Err(SelectionError::SecretsFile(format!(
                                "id prefix {id} matches {} secrets; give more of it",
                                matches.len()
                            )));
                        }
                    }
                }
                chosen
            }
            Select::Hashes(wanted) => {
                let chosen: Vec<&SecretEntry> = file
                    .secrets
                    .iter()
                    .filter(|s| {
                        s.hash.as_ref().is_some_and(|hash| {
                            wanted
                                .iter()
                                .any(|(rule, h)| *rule == s.rule_id && h == hash)
                        })
                    })
                    .collect();
                if chosen.len() != wanted.len() {
                    return Err(SelectionError::Missing {
                        wanted: wanted.len(),
                        found: chosen.len(),
                    });
                }
                chosen
            }
        };
        if let Some(empty) = chosen.iter().find(|s| s.value.is_empty()) {
            return Err(SelectionError::EmptyValue(empty.id.clone()));
        }
        // A value found inside encoded text (base64 in a Kubernetes Secret) is gone only
        // once that text is.
        // And a multi-part secret is gone once each of its parts is.
        let values = chosen.iter().flat_map(|s| {
            std::iter::once(s.value.as_bytes())
                .chain(s.value.encoded().iter().map(Vec::as_slice))
                .chain(s.value.parts().iter().map(|(_, part)| part.as_slice()))
        });
        let mut selection = Self::from_values(values, replacement)?;
        selection.archived = (chosen.iter())
            .map(|s| (s.id.clone(), s.archives()))
            .filter(|(_, paths)| !paths.is_empty())
            .collect();
        Ok(selection)
    }

    /// git-filter-repo's `--replace-text` format: one expression per line, `literal:`
    /// (the default), `regex:` or `glob:`, optionally followed by `==>` and the
    /// replacement. Regex replacements may use `\1` or `\g<name>` for groups.
    pub fn parse_expressions(text: &[u8], default: &[u8]) -> Result<Self, SelectionError> {
        let mut expressions = Vec::new();
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let mut line = raw;
            while let Some(rest) = line.strip_suffix(b"\r") {
                line = rest;
            }
            if line.is_empty() {
                continue;
            }
            let problem = |p: String| SelectionError::Expression {
                line: line_no,
                problem: p,
            };
            let (body, replacement) = match memchr::memmem::rfind(line, b"==>") {
                Some(at) => (&line[..at], Some(&line[at + 3..])),
                None => (line, None),
            };
            let (pattern, is_regex) = if let Some(re) = body.strip_prefix(b"regex:") {
                let re = std::str::from_utf8(re)
                    .map_err(|_| problem("the regular expression is not UTF-8".into()))?;
                let regex = Regex::new(re).map_err(|e| problem(regex_problem(&e)))?;
                (Pattern::Regex(regex), true)
            } else if let Some(glob) = body.strip_prefix(b"glob:") {
                let regex =
                    Regex::new(&glob_to_regex(glob)).map_err(|e| problem(regex_problem(&e)))?;
                (Pattern::Regex(regex), false)
            } else {
                let literal = body.strip_prefix(b"literal:").unwrap_or(body);
                (Pattern::Literal(literal.to_vec()), false)
            };
            // As in git-filter-repo, an empty literal (`literal:`, `==>X`) is skipped.
            if matches!(&pattern, Pattern::Literal(l) if l.is_empty()) {
                continue;
            }
            let replacement = match replacement {
                Some(r) if is_regex => python_groups_to_rust(r),
                Some(r) => r.to_vec(),
                None => default.to_vec(),
            };
            expressions.push(Expression {
                pattern,
                replacement,
            });
        }
        Self::build(expressions)
    }

    fn build(expressions: Vec<Expression>) -> Result<Self, SelectionError> {
        if expressions.is_empty() {
            return Err(SelectionError::Empty);
        }
        let mut literals = Vec::new();
        let mut literal_replacements = Vec::new();
        let mut regexes = Vec::new();
        for e in expressions {
            match e.pattern {
                Pattern::Literal(l) => {
                    // The same value twice: the first replacement wins.
                    if !literals.contains(&l) {
                        literals.push(l);
                        literal_replacements.push(e.replacement);
                    }
                }
                Pattern::Regex(r) => regexes.push((r, e.replacement)),
            }
        }
        let matcher = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&literals)
                    .map_err(|e| SelectionError::SecretsFile(e.to_string()))?,
            )
        };
        let fast = (!literals.is_empty() && literals.len() <= 64)
            .then(|| {
                aho_corasick::packed::Config::new()
                    .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
                    .builder()
                    .extend(&literals)
                    .build()
            })
            .flatten();
        let selection = Self {
            fast,
            literals,
            literal_replacements,
            matcher,
            regexes,
            archived: Vec::new(),
            files: FileSelection::default(),
        };
        for (i, replacement) in selection.literal_replacements.iter().enumerate() {
            if selection.is_match(replacement) {
                return Err(SelectionError::ReplacementContainsValue {
                    what: format!("value #{}", i + 1),
                });
            }
        }
        Ok(selection)
    }

    /// Whole files only, no value.
    pub fn files_only(files: FileSelection) -> Result<Self, SelectionError> {
        if files.is_empty() {
            return Err(SelectionError::Empty);
        }
        Ok(Self {
            literals: Vec::new(),
            literal_replacements: Vec::new(),
            matcher: None,
            fast: None,
            regexes: Vec::new(),
            archived: Vec::new(),
            files,
        })
    }

    /// These values, and also these whole files.
    pub fn with_files(mut self, files: FileSelection) -> Self {
        self.files = files;
        self
    }

    /// The whole files selected.
    pub fn files(&self) -> &FileSelection {
        &self.files
    }

    /// How many values and expressions are selected.
    pub fn len(&self) -> usize {
        self.literals.len() + self.regexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `data` holds any selected value.
    pub fn is_match(&self, data: &[u8]) -> bool {
        let literal = match (&self.fast, &self.matcher) {
            (Some(fast), _) => fast.find(data).is_some(),
            (None, Some(matcher)) => matcher.is_match(data),
            (None, None) => false,
        };
        literal || self.regexes.iter().any(|(r, _)| r.is_match(data))
    }

    /// `data` with every selected value replaced; `None` when nothing matched. In binary
    /// content each match is overwritten with as many `*` as it has bytes, so offsets
    /// inside the file stay valid.
    pub fn replace(&self, data: &[u8]) -> Option<Vec<u8>> {
        let binary = memchr::memchr(0, &data[..data.len().min(BINARY_PROBE)]).is_some();
        let mut current: Option<Vec<u8>> = None;
        if let Some(matcher) = &self.matcher
            && let mut found = matcher.find_iter(data).peekable()
            && found.peek().is_some()
        {
            let mut out = Vec::with_capacity(data.len());
            let mut last = 0;
            for m in found {
                out.extend_from_slice(&data[last..m.start()]);
                if binary {
                    out.resize(out.len() + m.len(), b'*');
                } else {
                    out.extend_from_slice(&self.literal_replacements[m.pattern().as_usize()]);
                }
                last = m.end();
            }
            out.extend_from_slice(&data[last..]);
            current = Some(out);
        }
        for (regex, replacement) in &self.regexes {
            let input = current.as_deref().unwrap_or(data);
            if !regex.is_match(input) {
                continue;
            }
            let replaced = if binary {
                let mut out = input.to_vec();
                for m in regex.find_iter(input) {
                    out[m.range()].fill(b'*');
                }
                out
            } else {
                regex
                    .replace_all(input, replacement.as_slice())
                    .into_owned()
            };
            current = Some(replaced);
        }
        current.filter(|out| out != data)
    }
}

/// What is wrong with a pattern, without quoting it (it may hold the secret itself).
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or("the pattern is too large or not valid");
    format!("invalid regular expression: {reason}")
}

/// Python's `\1` and `\g<name>` group references as the regex crate's `${1}`/`${name}`;
/// a literal `$` is escaped.
fn python_groups_to_rust(replacement: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(replacement.len());
    let mut i = 0;
    while i < replacement.len() {
        let b = replacement[i];
        if b == b'$' {
            out.extend_from_slice(b"$$");
            i += 1;
            continue;
        }
        if b == b'\\' && i + 1 < replacement.len() {
            let next = replacement[i + 1];
            if next.is_ascii_digit() {
                let digits: Vec<u8> = replacement[i + 1..]
                    .iter()
                    .take_while(|d| d.is_ascii_digit())
                    .take(2)
                    .copied()
                    .collect();
                out.extend_from_slice(b"${");
                out.extend_from_slice(&digits);
                out.push(b'}');
                i += 1 + digits.len();
                continue;
            }
            if next == b'g'
                && replacement.get(i + 2) == Some(&b'<')
                && let Some(end) = replacement[i + 3..].iter().position(|&c| c == b'>')
            {
                out.extend_from_slice(b"${");
                out.extend_from_slice(&replacement[i + 3..i + 3 + end]);
                out.push(b'}');
                i += 3 + end + 1;
                continue;
            }
            if next == b'\\' {
                out.push(b'\\');
                i += 2;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// A shell glob (`*`, `?`) as a regular expression matching the same text anywhere in
/// a line (as git-filter-repo reads globs: neither crosses a line break).
fn glob_to_regex(glob: &[u8]) -> String {
    let mut re = String::from("(?-u)");
    for &b in glob {
        match b {
            b'*' => re.push_str(".*"),
            b'?' => re.push('.'),
            _ => re.push_str(&format!("\\x{b:02x}")),
        }
    }
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(selection: &Selection, text: &str) -> String {
        String::from_utf8(
            selection
                .replace(text.as_bytes())
                .unwrap_or_else(|| text.as_bytes().to_vec()),
        )
        .expect("utf-8")
    }

    #[test]
    fn a_value_containing_another_is_removed_whole() {
        let s = Selection::from_values(["abc123", "abc123def456"], b"X").expect("valid");
        assert_eq!(replace(&s, "k=abc123def456; j=abc123"), "k=X; j=X");
        assert!(s.replace(b"nothing here").is_none());
    }

    #[test]
    fn binary_content_is_masked_byte_for_byte() {
        let s = Selection::from_values(["s3cret-value"], b"***REMOVED***").expect("valid");
        let data = b"\0\x01s3cret-value\x02".to_vec();
        let out = s.replace(&data).expect("changed");
        assert_eq!(out.len(), data.len());
        assert_eq!(&out[2..14], b"************");
    }

    #[test]
    fn filter_repo_expressions_parse() {
        let text = b"plain-value\nliteral:lit==>LIT\r\n\nregex:key=(\\w+)==>key=<\\1>\nglob:tok_??x==>T\nregex:p(?P<n>\\d)==>\\g<n>$\n";
        let s = Selection::parse_expressions(text, b"***REMOVED***").expect("valid");
        assert_eq!(s.len(), 5);
        assert_eq!(
            replace(&s, "plain-value lit key=abc tok_12x p7"),
            "***REMOVED*** LIT key=<abc> T 7$"
        );
    }

    #[test]
    fn bad_expressions_name_their_line() {
        let err = Selection::parse_expressions(b"ok\nregex:(unclosed\n", b"X")
            .expect_err("invalid regex");
        assert!(
            matches!(err, SelectionError::Expression { line: 2, .. }),
            "{err}"
        );
        assert_eq!(
            Selection::parse_expressions(b"\n\n", b"X").err(),
            Some(SelectionError::Empty)
        );
        assert!(matches!(
            Selection::from_values(["abc"], b"xabcx"),
            Err(SelectionError::ReplacementContainsValue { .. })
        ));
    }

    #[test]
    fn secrets_files_select_by_id_prefix_or_all() {
        let json = br#"{"version":1,"hash_key_id":"builtin-v1","secrets":[
            {"id":"aa11","rule_id":"r","value":"first-secret"},
            {"id":"bb22","rule_id":"r","value":"second-secret"}]}"#;
        let one =
            Selection::from_secrets(json, &Select::Ids(vec!["bb".into()]), b"X").expect("valid");
        assert_eq!(
            replace(&one, "first-secret second-secret"),
            "first-secret X"
        );
        let all = Selection::from_secrets(json, &Select::All, b"X").expect("valid");
        assert_eq!(replace(&all, "first-secret second-secret"), "X X");
        assert_eq!(
            Selection::from_secrets(json, &Select::Ids(vec!["cc".into()]), b"X").err(),
            Some(SelectionError::UnknownId("cc".into()))
        );
        assert!(matches!(
            Selection::from_secrets(br#"{"version":3,"secrets":[]}"#, &Select::All, b"X"),
            Err(SelectionError::SecretsFileVersion(3))
        ));
        assert!(matches!(
            Selection::from_secrets(b"not json", &Select::All, b"X"),
            Err(SelectionError::SecretsFile(_))
        ));
    }

    #[test]
    fn a_report_with_values_is_read_by_rule_and_hash_bytes_and_all() {
        // As the service stores it: the whole report, a value that is not UTF-8 in base64.
        let json = br#"{"version":1,"tool":{"name":"deployguard","version":"0.1.0"},
            "hash_key_id":"k1","secrets":[
            {"id":"aa11","rule_id":"r1","hash":"ab01","preview":"f...t","occurrences":[],
             "value":"first-secret"},
            {"id":"bb22","rule_id":"r2","hash":"cd02","preview":"G...e","occurrences":[],
             "value_base64":"R3L831Rl"}]}"#;
        let latin1 = b"Gr\xfc\xdfTe".as_slice();
        let both = Selection::from_secrets(
            json,
            &Select::Hashes(vec![
                ("r1".into(), "ab01".into()),
                ("r2".into(), "cd02".into()),
            ]),
            b"X",
        )
        .expect("valid");
        let mut data = b"a first-secret b ".to_vec();
        data.extend_from_slice(latin1);
        assert_eq!(both.replace(&data).expect("changed"), b"a X b X");
        // The same hash under another rule is another secret.
        assert_eq!(
            Selection::from_secrets(
                json,
                &Select::Hashes(vec![("r2".into(), "ab01".into())]),
                b"X"
            )
            .err(),
            Some(SelectionError::Missing {
                wanted: 1,
                found: 0
            })
        );
    }
}
