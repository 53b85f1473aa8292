//! Detection rules as data: the rule-file format, the embedded rule set, and compilation
//! into matchers. A rule carries its own positive and negative examples, checked by
//! [`RuleSet::test_examples`] (unit tests run it over every embedded rule; the CLI's
//! `rules test` runs it over a user's file).

use std::collections::HashSet;

use regex::bytes::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::checksum;

include!(concat!(env!("OUT_DIR"), "/embedded_rules.rs"));

/// How sure a rule is that a match is a real credential.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    #[default]
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// Extra checks some formats need beyond a regular expression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A provider format: the pattern says it all.
    #[default]
    Specific,
    /// A value found by its context (a secret-like name): also refused when it looks like
    /// an identifier, a reference, a UUID or a hash, and never reported in lock files.
    Generic,
    /// A JSON Web Token: the header must decode to a JSON object naming an algorithm.
    Jwt,
    /// `scheme://user:password@host`: the password must not be the user name, a
    /// well-known default or a template reference.
    UrlCredentials,
    /// Base64 text that may hold a secret (a Kubernetes Secret's data, a kubeconfig's
    /// key, a `.dockerconfigjson`): it is decoded, and the rules run over its line with
    /// the decoded text in its place. What they find there is reported under their own
    /// rule, at the encoded text, which is what the clean removes. Besides the rule's
    /// own keywords, the base64 forms of providers' token prefixes find it.
    Base64,
    /// Hex text (`6768705f…`): decoded and scanned as base64 text is; found by the hex
    /// forms of providers' token prefixes and of the text secrets are often inside of.
    Hex,
    /// Percent-encoded text (`wJalr%2FK7MD%2BbPx`, a connection string in a query): what
    /// the rules find in it decoded is reported at the encoded text that spells it.
    Percent,
    /// Backslash-escaped text (JSON's `\u002b` and `\/`, `\x41`): as percent-encoded
    /// text is.
    Escaped,
    /// Base64 of `user:password` (HTTP basic authentication, a Docker config's `auth`):
    /// it must decode to a user and a plausible password.
    BasicAuth,
}

impl Kind {
    /// The encoding a rule of this kind decodes, when it is one that does.
    pub fn encoding(self) -> Option<super::report::Encoding> {
        use super::report::Encoding;
        match self {
            Kind::Base64 => Some(Encoding::Base64),
            Kind::Hex => Some(Encoding::Hex),
            Kind::Percent => Some(Encoding::Percent),
            Kind::Escaped => Some(Encoding::Escaped),
            Kind::Specific | Kind::Generic | Kind::Jwt | Kind::UrlCredentials | Kind::BasicAuth => {
                None
            }
        }
    }
}

/// A check digit scheme a provider builds into its tokens: a value that fails it is a
/// made-up string, not a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checksum {
    /// GitHub's (and npm's) tokens: `prefix_` then 30 base62 characters, then the
    /// CRC-32 of those 30 in 6 base62 digits (`0-9A-Za-z`).
    GithubCrc32,
    /// A Bitcoin WIF private key: Base58Check, version 0x80 or 0xEF, a secp256k1 key,
    /// then the 0x01 compression flag or nothing.
    Base58checkWif,
    /// A BIP-32 extended private key (`xprv`, `tprv`, `zprv`…): Base58Check of 78 bytes
    /// with a private key's version, 0x00 and a secp256k1 key.
    Base58checkXprv,
    /// A PyPI token: `pypi-` then URL-safe base64 of a v2 binary macaroon, located at
    /// `pypi.org` or `test.pypi.org`, that parses to the end of its 32-byte signature.
    PypiMacaroon,
    /// An age secret key: bech32 of 32 bytes with the `age-secret-key-` prefix.
    Bech32Age,
}

impl Checksum {
    pub fn holds(self, value: &[u8]) -> bool {
        match self {
            Checksum::GithubCrc32 => {
                let Some(underscore) = value.iter().position(|&b| b == b'_') else {
                    return false;
                };
                let body = &value[underscore + 1..];
                if body.len() != 36 {
                    return false;
                }
                let (random, check) = body.split_at(30);
                base62(check) == Some(u64::from(crc32fast::hash(random)))
            }
            Checksum::Base58checkWif => checksum::bitcoin_wif(value),
            Checksum::Base58checkXprv => checksum::bip32_private_key(value),
            Checksum::PypiMacaroon => checksum::pypi_token(value),
            Checksum::Bech32Age => checksum::age_secret_key(value),
        }
    }
}

/// A base62 number (`0-9A-Za-z`).
fn base62(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        let digit = match d {
            b'0'..=b'9' => d - b'0',
            b'A'..=b'Z' => d - b'A' + 10,
            b'a'..=b'z' => d - b'a' + 36,
            _ => return None,
        };
        n.checked_mul(62)?.checked_add(u64::from(digit))
    })
}

/// One rule as written in a rule file or in `.deployguard.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub name: String,
    /// Text one of which every match holds: lowercase, found in any case.
    pub keywords: Vec<String>,
    /// Every match holds one of the keywords as written, capitals and all (`SK`,
    /// `TEST-`): it is found in no other case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keywords_match_case: bool,
    /// Every match holds one of the keywords where a word begins: not right after an
    /// ASCII letter or digit (`dd` in `DD_API_KEY`, never in `address`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keywords_begin_words: bool,
    /// What follows a keyword on its line in every match, at most
    /// [`MAX_FOLLOWED_BY`] bytes: a pattern matched at the keyword's end (`://` is
    /// followed by `user:password@` in a URL that holds a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed_by: Option<String>,
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    #[serde(default)]
    pub confidence: Confidence,
    #[serde(default)]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// Other values that belong with the secret (an AWS secret key's key id, an OAuth
    /// client secret's client id), found near it: reported with it, and removed with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartSpec>,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub negatives: Vec<String>,
}

/// One part of a multi-part secret, as written in a rule.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartSpec {
    /// What it is: `access key id`, `client id`.
    pub name: String,
    /// Its pattern; the value is the `part` group when there is one, else the match.
    pub pattern: String,
    /// How many lines above or below the secret's it may be on (0: the same line).
    #[serde(default = "PartSpec::default_lines")]
    pub lines: u32,
    /// Whether the secret is reported only with this part near it.
    #[serde(default)]
    pub required: bool,
    /// Context, not a credential: the provider's name or section (`datadog:` above a
    /// nested `apiKey:`). Required, but neither reported nor removed.
    #[serde(default)]
    pub context: bool,
}

impl PartSpec {
    fn default_lines() -> u32 {
        3
    }
}

/// A compiled [`PartSpec`].
#[derive(Debug)]
pub struct Part {
    pub name: String,
    pub(crate) regex: Regex,
    pub(crate) group: usize,
    pub lines: u32,
    pub required: bool,
    pub context: bool,
}

/// Parts further than this from their secret are not looked for.
const MAX_PART_LINES: u32 = 20;

/// A rule file: a category and its rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub category: String,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

impl RuleFile {
    pub fn parse(origin: &str, text: &str) -> Result<Self, RuleError> {
        toml::from_str(text)
            .map_err(|e| RuleError::new(origin, format!("not a valid rule file: {e}")))
    }
}

/// A rule that cannot be used, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct RuleError {
    pub origin: String,
    pub problem: String,
}

impl RuleError {
    pub fn new(origin: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            problem: problem.into(),
        }
    }
}

/// The most bytes a rule's `followed_by` may match.
pub const MAX_FOLLOWED_BY: usize = 256;

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub category: String,
    pub keywords: Vec<String>,
    /// See [`RuleSpec::keywords_match_case`].
    pub keywords_match_case: bool,
    /// See [`RuleSpec::keywords_begin_words`].
    pub keywords_begin_words: bool,
    /// [`RuleSpec::followed_by`], anchored at its start.
    pub(crate) followed_by: Option<Regex>,
    pub entropy: Option<f64>,
    pub confidence: Confidence,
    pub kind: Kind,
    /// Built when first used: most rules meet none of their keywords in most scans.
    regex: std::sync::OnceLock<Option<Regex>>,
    pub(crate) secret_group: usize,
    /// How far from a keyword a match can reach, when that is bounded.
    pub(crate) reach: Option<Reach>,
    pub parts: Vec<Part>,
    pub(crate) spec: RuleSpec,
}

fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(32 << 20)
        .dfa_size_limit(32 << 20)
        .build()
}

/// The index of the capture group called `name`.
fn capture_index(hir: &regex_syntax::hir::Hir, name: &str) -> Option<usize> {
    use regex_syntax::hir::HirKind;
    match hir.kind() {
        HirKind::Capture(capture) if capture.name.as_deref() == Some(name) => {
            usize::try_from(capture.index).ok()
        }
        HirKind::Capture(capture) => capture_index(&capture.sub, name),
        HirKind::Repetition(repetition) => capture_index(&repetition.sub, name),
        HirKind::Concat(parts) | HirKind::Alternation(parts) => {
            parts.iter().find_map(|part| capture_index(part, name))
        }
        _ => None,
    }
}

impl Rule {
    /// Checks a rule and builds its matcher.
    pub fn compile(category: &str, spec: RuleSpec) -> Result<Self, RuleError> {
        Self::compile_as(category, spec, true)
    }

    /// [`Rule::compile`]; unless `eager`, only the pattern's syntax is checked now and
    /// the matcher is built when first used (the shipped rules, whose patterns tests
    /// build).
    fn compile_as(category: &str, spec: RuleSpec, eager: bool) -> Result<Self, RuleError> {
        let origin = format!("rule {:?}", spec.id);
        let valid_id = !spec.id.is_empty()
            && spec
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !spec.id.starts_with('-')
            && !spec.id.ends_with('-');
        if !valid_id {
            return Err(RuleError::new(
                origin,
                "id must be kebab-case (a-z, 0-9, -)",
            ));
        }
        if spec.name.trim().is_empty() {
            return Err(RuleError::new(origin, "name is empty"));
        }
        if spec.keywords.is_empty() {
            return Err(RuleError::new(origin, "needs at least one keyword"));
        }
        for keyword in &spec.keywords {
            let lowercase =
                spec.keywords_match_case || !keyword.bytes().any(|b| b.is_ascii_uppercase());
            if keyword.len() < 2 || !keyword.is_ascii() || !lowercase {
                return Err(RuleError::new(
                    origin,
                    format!(
                        "keyword {keyword:?} must be ASCII, at least 2 characters, and \
                         lowercase unless keywords_match_case is set"
                    ),
                ));
            }
        }
        if let Some(entropy) = spec.entropy
            && !(0.0..=8.0).contains(&entropy)
        {
            return Err(RuleError::new(
                origin,
                "entropy must be between 0 and 8 bits per byte",
            ));
        }
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&spec.pattern)
            .map_err(|e| RuleError::new(&origin, format!("pattern does not compile: {e}")))?;
        let secret_group = capture_index(&hir, "secret")
            .ok_or_else(|| RuleError::new(&origin, "pattern has no (?P<secret>...) group"))?;
        let reach = Reach {
            bytes: hir.properties().maximum_len(),
            besides_space: reach_besides_space(&hir),
            lines: line_breaks(&hir),
        };
        let reach =
            (reach.bytes.is_some() || reach.besides_space.is_some() || reach.lines.is_some())
                .then_some(reach);
        let mut parts = Vec::new();
        for part in &spec.parts {
            let problem = |p: String| RuleError::new(&origin, format!("part {:?}: {p}", part.name));
            if part.name.trim().is_empty() {
                return Err(problem("name is empty".into()));
            }
            if part.lines > MAX_PART_LINES {
                return Err(problem(format!("lines must be at most {MAX_PART_LINES}")));
            }
            let regex = build_regex(&part.pattern)
                .map_err(|e| problem(format!("pattern does not compile: {e}")))?;
            let group = regex
                .capture_names()
                .position(|name| name == Some("part"))
                .unwrap_or(0);
            parts.push(Part {
                name: part.name.clone(),
                regex,
                group,
                lines: part.lines,
                required: part.required || part.context,
                context: part.context,
            });
        }
        let followed_by = match &spec.followed_by {
            None => None,
            Some(pattern) => {
                let problem = |p: String| RuleError::new(&origin, format!("followed_by {p}"));
                let hir = regex_syntax::ParserBuilder::new()
                    .unicode(false)
                    .utf8(false)
                    .build()
                    .parse(pattern)
                    .map_err(|e| problem(format!("does not compile: {e}")))?;
                if spec
                    .keywords
                    .iter()
                    .any(|k| k.len() > super::detect::MAX_KEYWORD)
                {
                    return Err(problem(format!(
                        "needs keywords of at most {} bytes",
                        super::detect::MAX_KEYWORD
                    )));
                }
                if hir
                    .properties()
                    .maximum_len()
                    .is_none_or(|n| n > MAX_FOLLOWED_BY)
                {
                    return Err(problem(format!(
                        "must match at most {MAX_FOLLOWED_BY} bytes"
                    )));
                }
                let anchored = build_regex(&format!("^(?:{pattern})"))
                    .map_err(|e| problem(format!("does not compile: {e}")))?;
                Some(anchored)
            }
        };
        let regex = std::sync::OnceLock::new();
        if eager {
            let built = build_regex(&spec.pattern)
                .map_err(|e| RuleError::new(&origin, format!("pattern does not compile: {e}")))?;
            let _ = regex.set(Some(built));
        }
        Ok(Self {
            reach,
            id: spec.id.clone(),
            name: spec.name.clone(),
            category: category.to_owned(),
            keywords: spec.keywords.clone(),
            keywords_match_case: spec.keywords_match_case,
            keywords_begin_words: spec.keywords_begin_words,
            followed_by,
            entropy: spec.entropy,
            confidence: spec.confidence,
            kind: spec.kind,
            regex,
            secret_group,
            parts,
            spec,
        })
    }

    /// Whether what follows a keyword ending at `end` is what
    /// [`RuleSpec::followed_by`] says (always, without it). Reads `data` from `end` to
    /// the end of its line at most.
    pub(crate) fn followed_at(&self, data: &[u8], end: usize) -> bool {
        let Some(followed_by) = &self.followed_by else {
            return true;
        };
        let stop = (end + MAX_FOLLOWED_BY).min(data.len());
        let line = memchr::memchr(b'\n', &data[end..stop]).map_or(stop, |i| end + i);
        followed_by.is_match(&data[end..line])
    }

    /// The rule as written, examples included.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// The pattern's matcher; `None` only for a shipped pattern too large to build,
    /// which the tests that build every shipped rule rule out.
    pub(crate) fn regex(&self) -> Option<&Regex> {
        self.regex
            .get_or_init(|| build_regex(&self.spec.pattern).ok())
            .as_ref()
    }
}

/// How far from one of its keywords a rule's match can reach, by three measures (each
/// known when it is bounded). Every match holds a keyword, so a rule bounded by any of
/// them is searched only around its keywords' places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reach {
    /// No match is longer than this many bytes.
    pub bytes: Option<usize>,
    /// No match holds more than this many bytes besides those its unbounded runs of
    /// white space match (`\s*` between a name and its value, say).
    pub besides_space: Option<usize>,
    /// Unbounded only in runs that stay on one line (a token's body,
    /// `[A-Za-z0-9]{90,}`) or hold white space only: a match touches at most this many
    /// lines besides its keyword's that hold anything but white space.
    pub lines: Option<usize>,
}

/// The white space of a pattern's `\s` (ASCII: patterns are compiled without Unicode).
pub(crate) fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// The longest match of `hir`, counting what unbounded repetitions of white space
/// match as nothing; `None` when anything else repeats without bound.
fn reach_besides_space(hir: &regex_syntax::hir::Hir) -> Option<usize> {
    use regex_syntax::hir::HirKind;
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(0),
        HirKind::Literal(_) | HirKind::Class(_) => hir.properties().maximum_len(),
        HirKind::Repetition(repetition) => match repetition.max {
            Some(max) => reach_besides_space(&repetition.sub)?.checked_mul(max as usize),
            None if only_space(&repetition.sub) => Some(0),
            None => None,
        },
        HirKind::Capture(capture) => reach_besides_space(&capture.sub),
        HirKind::Concat(parts) => parts.iter().try_fold(0usize, |sum, part| {
            sum.checked_add(reach_besides_space(part)?)
        }),
        HirKind::Alternation(parts) => parts.iter().try_fold(0usize, |longest, part| {
            Some(longest.max(reach_besides_space(part)?))
        }),
    }
}

/// How many lines that hold more than white space a match of `hir` can move on to:
/// one per line break it can match, and one per unbounded run of white space (however
/// many lines that run crosses, they are blank). `None` when an unbounded run can match
/// both line breaks and other bytes.
fn line_breaks(hir: &regex_syntax::hir::Hir) -> Option<usize> {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(0),
        HirKind::Literal(literal) => Some(literal.0.iter().filter(|&&b| b == b'\n').count()),
        HirKind::Class(Class::Bytes(class)) => Some(usize::from(
            class
                .ranges()
                .iter()
                .any(|r| (r.start()..=r.end()).contains(&b'\n')),
        )),
        HirKind::Class(Class::Unicode(class)) => Some(usize::from(
            class
                .ranges()
                .iter()
                .any(|r| (r.start()..=r.end()).contains(&'\n')),
        )),
        HirKind::Repetition(repetition) => match repetition.max {
            Some(max) => line_breaks(&repetition.sub)?.checked_mul(max as usize),
            None if only_space(&repetition.sub) => Some(1),
            None => (line_breaks(&repetition.sub)? == 0).then_some(0),
        },
        HirKind::Capture(capture) => line_breaks(&capture.sub),
        HirKind::Concat(parts) => parts
            .iter()
            .try_fold(0usize, |sum, part| sum.checked_add(line_breaks(part)?)),
        HirKind::Alternation(parts) => parts
            .iter()
            .try_fold(0usize, |most, part| Some(most.max(line_breaks(part)?))),
    }
}

/// True when `hir` matches white space only.
fn only_space(hir: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Class(Class::Bytes(class)) => class
            .ranges()
            .iter()
            .all(|range| (range.start()..=range.end()).all(is_space)),
        HirKind::Class(Class::Unicode(class)) => class.ranges().iter().all(|range| {
            (range.start()..=range.end()).all(|c| u8::try_from(c).is_ok_and(is_space))
        }),
        HirKind::Literal(literal) => literal.0.iter().all(|&b| is_space(b)),
        HirKind::Capture(capture) => only_space(&capture.sub),
        _ => false,
    }
}

/// Compiled rules, in a stable order, with unique ids.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    ids: HashSet<String>,
}

impl RuleSet {
    /// The rules shipped in the binary.
    pub fn embedded() -> Result<Self, RuleError> {
        let mut set = Self::default();
        for (file, text) in EMBEDDED_RULES {
            let rules = RuleFile::parse(file, text)?;
            for spec in rules.rules {
                set.push(&rules.category, spec, false)
                    .map_err(|e| RuleError::new(*file, e.to_string()))?;
            }
        }
        Ok(set)
    }

    /// Adds every rule of a rule file (`origin` names it in errors).
    pub fn add_file(&mut self, origin: &str, text: &str) -> Result<(), RuleError> {
        let file = RuleFile::parse(origin, text)?;
        for spec in file.rules {
            self.add(&file.category, spec)
                .map_err(|e| RuleError::new(origin, e.to_string()))?;
        }
        Ok(())
    }

    /// Adds a user's rule. Its keywords are not known to appear in every match (shipped
    /// rules are checked by tests), so it always searches whole buffers.
    pub fn add_custom(&mut self, spec: RuleSpec) -> Result<(), RuleError> {
        self.add("custom", spec)?;
        if let Some(rule) = self.rules.last_mut() {
            rule.reach = None;
            // Found wherever they are, in any case.
            rule.keywords_begin_words = false;
            rule.keywords_match_case = false;
            rule.followed_by = None;
            rule.keywords
                .iter_mut()
                .for_each(|k| k.make_ascii_lowercase());
        }
        Ok(())
    }

    pub fn add(&mut self, category: &str, spec: RuleSpec) -> Result<(), RuleError> {
        self.push(category, spec, true)
    }

    fn push(&mut self, category: &str, spec: RuleSpec, eager: bool) -> Result<(), RuleError> {
        if !self.ids.insert(spec.id.clone()) {
            return Err(RuleError::new(
                format!("rule {:?}", spec.id),
                "id is defined twice",
            ));
        }
        self.rules.push(Rule::compile_as(category, spec, eager)?);
        Ok(())
    }

    /// Removes the named rules; an id that names no rule is an error (a typo would
    /// otherwise silently keep the rule on).
    pub fn disable(&mut self, ids: &[String]) -> Result<(), RuleError> {
        let known: HashSet<&str> = self.rules.iter().map(|r| r.id.as_str()).collect();
        if let Some(unknown) = ids.iter().find(|id| !known.contains(id.as_str())) {
            return Err(RuleError::new(
                format!("rule {unknown:?}"),
                "cannot be disabled: no rule has this id",
            ));
        }
        self.rules.retain(|r| !ids.contains(&r.id));
        self.ids.retain(|id| !ids.contains(id));
        Ok(())
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// What running rules over their own examples found wrong, one line per problem.
pub fn check_examples(set: &RuleSet, require_examples: bool) -> Vec<String> {
    use super::detect::{Allowlist, Detector};

    let mut problems = Vec::new();
    for rule in set.rules() {
        let spec = rule.spec();
        if require_examples && (spec.examples.len() < 2 || spec.negatives.len() < 2) {
            problems.push(format!(
                "{}: needs at least 2 examples and 2 negatives",
                rule.id
            ));
        }
        // A base64 rule reports what the other rules find in what it decodes, and a
        // generic one stays quiet on values in another rule's format: they are checked
        // among them all.
        let mut alone = RuleSet::default();
        let others = rule.kind == Kind::Generic || rule.kind.encoding().is_some();
        let added = match others {
            true => set
                .rules()
                .iter()
                .try_for_each(|r| alone.add(&r.category, r.spec().clone())),
            false => alone.add(&rule.category, spec.clone()),
        };
        if let Err(e) = added {
            problems.push(e.to_string());
            continue;
        }
        let Some(own) = alone.rules().iter().position(|r| r.id == rule.id) else {
            continue;
        };
        let detector = match Detector::new(alone, Allowlist::default()) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let mut hits = Vec::new();
        for example in &spec.examples {
            // The prefilter (and the matcher's search windows) rely on this. Base64
            // rules are found by their keywords' encoded forms too, and check it.
            let Some(regex) = rule.regex() else {
                problems.push(format!("{}: pattern does not compile", rule.id));
                continue;
            };
            // With every keyword blotted out, nothing may match (a branch of the
            // pattern that holds no keyword would be missed by the prefilter).
            if rule.kind.encoding().is_none() {
                let mut blotted = example.as_bytes().to_vec();
                let searched = match rule.keywords_match_case {
                    true => blotted.clone(),
                    false => blotted.to_ascii_lowercase(),
                };
                for keyword in &rule.keywords {
                    let k = keyword.as_bytes();
                    for at in 0..searched.len().saturating_sub(k.len() - 1) {
                        if searched[at..].starts_with(k) {
                            blotted[at..at + k.len()].fill(b'#');
                        }
                    }
                }
                if regex.is_match(&blotted) {
                    problems.push(format!(
                        "{}: matches with its keywords blotted out: {example:?}",
                        rule.id
                    ));
                }
                let conditional = rule.keywords_begin_words || rule.keywords_match_case;
                if conditional && regex.is_match(&unfound(rule, example.as_bytes())) {
                    problems.push(format!(
                        "{}: matches where the keyword search finds none of its keywords \
                         (a keyword in another case, or inside a word): {example:?}",
                        rule.id
                    ));
                }
            }
            let matches = regex.find_iter(example.as_bytes());
            for found in matches.filter(|_| rule.kind.encoding().is_none()) {
                let has_keyword = keyword_occurrences(rule, example.as_bytes()).any(|(at, len)| {
                    found.start() <= at
                        && at + len <= found.end()
                        && rule.followed_at(example.as_bytes(), at + len)
                });
                if !has_keyword {
                    problems.push(format!(
                        "{}: a match holds none of the keywords: {example:?}",
                        rule.id
                    ));
                }
            }
            hits.clear();
            detector.scan(example.as_bytes(), None, &mut hits);
            if !hits.iter().any(|h| h.rule == own) {
                problems.push(format!("{}: example not reported: {example:?}", rule.id));
            }
        }
        for negative in &spec.negatives {
            hits.clear();
            detector.scan(negative.as_bytes(), None, &mut hits);
            if let Some(hit) = hits.iter().find(|h| h.rule == own) {
                let value = String::from_utf8_lossy(&negative.as_bytes()[hit.start..hit.end]);
                problems.push(format!(
                    "{}: negative reported ({value:?}): {negative:?}",
                    rule.id
                ));
            }
        }
    }
    problems
}

/// Where the keyword search finds `rule`'s keywords in `text`: `(start, length)`.
fn keyword_occurrences<'a>(
    rule: &'a Rule,
    text: &'a [u8],
) -> impl Iterator<Item = (usize, usize)> + 'a {
    (0..text.len()).flat_map(move |at| {
        rule.keywords.iter().filter_map(move |keyword| {
            let k = keyword.as_bytes();
            let there = text.get(at..at + k.len())?;
            let same = match rule.keywords_match_case {
                true => there == k,
                false => there.eq_ignore_ascii_case(k),
            };
            let begins = at == 0 || !text[at - 1].is_ascii_alphanumeric();
            (same && (begins || !rule.keywords_begin_words)).then_some((at, k.len()))
        })
    })
}

/// `text` with each of `rule`'s keywords that the keyword search finds in it changed as
/// little as makes the search pass it by: a letter put before it when keywords begin
/// words, else its case swapped when keywords match case, else blotted out.
fn unfound(rule: &Rule, text: &[u8]) -> Vec<u8> {
    let mut changed = text.to_vec();
    let mut letter_before = Vec::new();
    for (at, len) in keyword_occurrences(rule, text) {
        if rule.keywords_begin_words {
            letter_before.push(at);
        } else if rule.keywords_match_case {
            for b in &mut changed[at..at + len] {
                *b = match b.is_ascii_uppercase() {
                    true => b.to_ascii_lowercase(),
                    false => b.to_ascii_uppercase(),
                };
            }
        } else {
            changed[at..at + len].fill(b'#');
        }
    }
    let mut out = Vec::with_capacity(changed.len() + letter_before.len());
    for (at, &b) in changed.iter().enumerate() {
        if letter_before.contains(&at) {
            out.push(b'q');
        }
        out.push(b);
    }
    out
}

/// Examples that the whole rule set reports under a different rule than their own
/// (two rules claiming the same token). One line per conflict.
pub fn check_conflicts(set: &RuleSet) -> Vec<String> {
    use super::detect::{Allowlist, Detector};

    let specs: Vec<(String, RuleSpec)> = set
        .rules()
        .iter()
        .map(|r| (r.category.clone(), r.spec().clone()))
        .collect();
    let mut all = RuleSet::default();
    for (category, spec) in specs {
        if let Err(e) = all.add(&category, spec) {
            return vec![e.to_string()];
        }
    }
    let detector = match Detector::new(all, Allowlist::default()) {
        Ok(d) => d,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    let mut hits = Vec::new();
    for (index, rule) in detector.rules().iter().enumerate() {
        for example in &rule.spec().examples {
            hits.clear();
            detector.scan(example.as_bytes(), None, &mut hits);
            if !hits.iter().any(|h| h.rule == index) {
                let others: Vec<&str> = hits
                    .iter()
                    .map(|h| detector.rules()[h.rule].id.as_str())
                    .collect();
                problems.push(format!(
                    "{}: example reported as {others:?} instead: {example:?}",
                    rule.id
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_rules_compile_with_unique_ids_and_cover_at_least_800_formats() {
        let set = RuleSet::embedded().unwrap_or_else(|e| panic!("{e}"));
        assert!(set.len() >= 800, "only {} rules", set.len());
        let categories: HashSet<&str> = set.rules().iter().map(|r| r.category.as_str()).collect();
        for expected in [
            "cloud",
            "vcs",
            "cicd",
            "registry",
            "payment",
            "communication",
            "observability",
            "ai",
            "saas",
            "database",
            "generic",
        ] {
            assert!(categories.contains(expected), "no {expected} rules");
        }
    }

    #[test]
    fn every_shipped_rule_reports_its_examples_and_none_of_its_negatives() {
        let set = RuleSet::embedded().unwrap_or_else(|e| panic!("{e}"));
        let problems = check_examples(&set, true);
        assert!(
            problems.is_empty(),
            "{} problems:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    #[test]
    fn no_two_shipped_rules_claim_the_same_example() {
        let set = RuleSet::embedded().unwrap_or_else(|e| panic!("{e}"));
        let problems = check_conflicts(&set);
        assert!(
            problems.is_empty(),
            "{} conflicts:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    #[test]
    fn github_style_checksums_hold_only_for_the_right_check_digits() {
        let check = Checksum::GithubCrc32;
        assert!(check.holds(b"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"));
        assert!(check.holds(b"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"));
        for broken in [
            &b"ghp_L2m69I7wDdQGnMo6sFSYnvCeqmkfCX40ge4E"[..],
            b"ghp_M2m69I7wDdQGnMo6sFSYnvCeqmkfCX40ge4D",
            b"ghp_L2m69I7wDdQGnMo6sFSYnvCeqmkfCX40ge4",
            b"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0",
            b"ghpL2m69I7wDdQGnMo6sFSYnvCeqmkfCX40ge4D",
            b"ghp_L2m69I7wDdQGnMo6sFSYnvCeqmkfCX40g-4D",
            b"ghp_L2m69I7wDdQGnMo6sFSYnvCeqmkfCXzzzzzz",
        ] {
            assert!(!check.holds(broken), "{}", String::from_utf8_lossy(broken));
        }
    }

    /// Whether `check` holds for each of `valid` and for none of `broken`.
    fn assert_checks(check: Checksum, valid: &[&str], broken: &[(&str, &str)]) {
        for value in valid {
            assert!(check.holds(value.as_bytes()), "{check:?} refused {value}");
        }
        for (why, value) in broken {
            assert!(
                !check.holds(value.as_bytes()),
                "{check:?} held ({why}): {value}"
            );
        }
    }

    #[test]
    fn bitcoin_wif_checks_hold_only_for_base58check_private_keys() {
        assert_checks(
            Checksum::Base58checkWif,
            &[
                "L3Gxhr1vKjCYwJXajdHCzWcQMpMQoDS5FRUtPUuyseKWGnPtZcYF",
                "cVF4EpFzNsWsWkzWQZ9LrL39NkfXqjzebicEYMRbaZFai65qZXG7",
                "5JJcCuQ7BG2MRasFoPXJBAdraTxQ8cMgW2f5kzCL1vL1d4oJZUP",
                "93UjkZjb4F8L8Hywi7d2maHaUD1U8os7Qh89wToyhjoy57hr7aR",
            ],
            &[
                (
                    "one character changed",
                    "L3Gxhr1vKjCYwJXajdHCzWcQMpMQoDS5FRUtPUuyseKWGnPtZcYG",
                ),
                (
                    "one character changed",
                    "L1CGBmfVLxmNxXrL8rS5AQYyQPSRGWtnoGm63qhG6B4xksan1BCw",
                ),
                (
                    "one character less",
                    "L3Gxhr1vKjCYwJXajdHCzWcQMpMQoDS5FRUtPUuyseKWGnPtZcY",
                ),
                (
                    "version 0x81",
                    "LDkzZMyn2MY5F14kdPRaBfNghU5ZvXYwRDVAo5sLNhLCRLaPu6hX",
                ),
                (
                    "version 0x00",
                    "12u92NbDBLMruv8rnLKLxNh2ioeDSckc3b59w17pqNoPBfrnt85",
                ),
                (
                    "flag 0x02",
                    "L3BYKVyCoAzb7DkCSB6n7Ra6RRb2VmxkS8cc11G2Mp7GqpHX2Laf",
                ),
                (
                    "35 bytes",
                    "2SndfY3vyFVLs9hnrJ86FKs8i8CdT3gpDpHCtvoSzeQELfrnfz7qTz",
                ),
                (
                    "32 bytes",
                    "2pRv9Zn6tLT2jbn2Mic6TQyYsryDMKHuq3zsPQXTV5DJWbQ1fi",
                ),
                (
                    "key 0",
                    "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73Nd2Mcv1",
                ),
                (
                    "key n",
                    "L5oLkpV3aqBjhki6LmvChTCV6odsp4SXM6FfU2Gppt5kFqRzExJJ",
                ),
                (
                    "not base58",
                    "L3Gxhr1vKjCYwJXajdHCzWcQMpMQoDS5FRUtPUuyseKWGnPtZc0F",
                ),
                ("empty", ""),
            ],
        );
    }

    #[test]
    fn bip32_checks_hold_only_for_base58check_extended_private_keys() {
        assert_checks(
            Checksum::Base58checkXprv,
            &[
                "xprv9s21ZrQH143K3pd2ypKfK65eV5a9u4MbysvGTGHceeiYMRWjXERn8LTSsjTZcziFCzfabP2HTukYpMbykQHR1QfrgcX8HQFvnXvCtzZW7dQ",
                "tprv8gF5F67YGRY7G1reirA1QE6HxmdTyyidNkcVwC9ZKGM3LcrTmB865JaWEV86VygajDjd8P5NPKaQXe2nNJMRfkSsWTqdowYAS4JRoEXUSsj",
                "zprvAfwKD4bwxcSorWRxoPRrDK3cZX6MPTMYn6brABWq8kFP7uTuj5vX1bNoX2J1jvN5EzdWbZQCh4e92KDDkmDkb5jQ79PqzuPtEW1LezGV4s3",
                "vprv9Fu29Dc5SvSxYbqkFUcWPWLpvVogA2wBEiwJMmsmsq2PB8c641ZbLEJtzfw24vjKqy6tp9ermtEuuYZNBy9A4k56vNqqAjMBJvn1ADTP54s",
            ],
            &[
                (
                    "one character changed",
                    "xprv9s21ZrQH143K3pd2ypKfK65eV5a9u4MbysvGTGHceeiYMRWjXERn8LTSsjTZcziFCzfabP2HTukYpMbykQHR1QfrgcX8HQFvnXvCtzZW7dR",
                ),
                (
                    "one character changed",
                    "xprv9twEjBq9RCBVfb4oYSU36C6CHuYo3KKAqQYmSjXw6Negt98SDLbazJS2FWwRwjjmwRw2qYvPZaej8UCRDBJ6AL3MUd7t6z7g27eaCEUN5zn",
                ),
                (
                    "one character less",
                    "xprv9s21ZrQH143K3pd2ypKfK65eV5a9u4MbysvGTGHceeiYMRWjXERn8LTSsjTZcziFCzfabP2HTukYpMbykQHR1QfrgcX8HQFvnXvCtzZW7d",
                ),
                (
                    "79 bytes",
                    "5FQFKcNsG2g3KKynrH639NzVcsS8S2EDREByii6YUggv1aa1u6eEkbhXh1QvHhw9v1sWRXPiXry2Cqj5yLBcmbCgJiDoCX248N6hCRRq1wZTQHjfb",
                ),
                (
                    "an xpub's version",
                    "xpub661MyMwAqRbcFzY6dF6gr6AbGQPmpyotUX5quCSFa4Jr5YzeG2zo2Xa3i5rh75hapYMv7TmwU99VjKp3cETZePeuFyDYdjwRMqVnSHajcRv",
                ),
                (
                    "version 0488ade5",
                    "xprvJAihJkudK4AgiZiRHr519W4qao4RzTCLcc3Dkhjv1G1jNBXZXVDADL5RQFPKRHv9vioHhxM8pYowL5zQuTzkuGtFsZM8bbtBcQjqKkxkUq9",
                ),
                (
                    "a public key",
                    "xprv9uMPuFTV6GnHDBjCtiaXgQ1QJ2Xhejhjn6Sg4F5GXWs79XC4ACPZX7Piyu3we7VFzKxdS8Z2XFDWBCsN1cw2r5zFuZHbHvQszK2W5zdzKn5",
                ),
                (
                    "depth 0 with a parent",
                    "xprv9sU7dB7GchKsgr2pcvckEkvyoGEwEBuR5BL91WjAmW6WbUxid4TxMk3N5Uha9AwLUuAsZ5Sk7FpVFMGPnris961imzZ3t8PMJUeQwBZ8Tza",
                ),
                (
                    "depth 0 with a child number",
                    "xprv9s21ZrQRLiaHFSCwE7phGUqUbcJvk5AKAiAr5TF9j7c7GozWhhTrBGnNRVbUsb71Rz9azAYWaS4tR9V6QBemS58MT6GgoMaWyCDiMSFrzPJ",
                ),
                (
                    "key 0",
                    "tprv8bhDNxBMqkGXUrFq8prBrYWHxMSLAu5uB8ARoJPuvBpiCdH96k8D22Vk6TA3gEEpJrTFiHwBjwcnQ8rkscYqK5eUMPMdJM14ibD68Mp6iMt",
                ),
            ],
        );
    }

    #[test]
    fn pypi_macaroon_checks_hold_only_for_whole_v2_macaroons_of_pypi() {
        assert_checks(
            Checksum::PypiMacaroon,
            &[
                "pypi-AgEIcHlwaS5vcmcCJGEzZjU4NWMxLTIyYTMtNGFlMS1hZjFmLTFhNWU2M2E0YmNjOQACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYgIoW_KeWPHgelMjRi2TCn2ae3dbHAQZhDzK0-MNKcRhk",
                "pypi-AgENdGVzdC5weXBpLm9yZwIkOGQ4NTViOWYtMmVhOC00Yjg2LTgzNWMtOGVjZmExZjIwZDljAAIleyJwZXJtaXNzaW9ucyI6ICJ1c2VyIiwgInZlcnNpb24iOiAxfQAABiAD7gAw9wX0OApOanoMprwbvIsJy1ilryMvqo_5dkd4sA",
                // Two caveats; none; padded.
                "pypi-AgEIcHlwaS5vcmcCJDY5MTMzN2U5LTU0NDAtNDQ3Yi1iNDcxLTg4ODM4YWU1YWE1NwACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAhlbMCwxNzY3MjI1NjAwLDE3OTg3NjE2MDBdAAAGIGIwZXwq7mLyUQmVrEDHn-87aJW99l12k05irl2LMj4R",
                "pypi-AgEIcHlwaS5vcmcCJGI5NzFiMmU4LWZjYmYtNDAwOS1iNTRhLWFlMzJjZWNmZDU5MgAABiAghOQH6gklANyoIioBzrG1EjziUhAE8MXuPDUTybmo7Q",
                "pypi-AgEIcHlwaS5vcmcCJGI5NzFiMmU4LWZjYmYtNDAwOS1iNTRhLWFlMzJjZWNmZDU5MgAABiAghOQH6gklANyoIioBzrG1EjziUhAE8MXuPDUTybmo7Q==",
            ],
            &[
                (
                    "a length changed",
                    "pypi-AgEIcHlwaS5vcmcCJWEzZjU4NWMxLTIyYTMtNGFlMS1hZjFmLTFhNWU2M2E0YmNjOQACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYgIoW_KeWPHgelMjRi2TCn2ae3dbHAQZhDzK0-MNKcRhk",
                ),
                (
                    "cut short",
                    "pypi-AgEIcHlwaS5vcmcCJGEzZjU4NWMxLTIyYTMtNGFlMS1hZjFmLTFhNWU2M2E0YmNjOQACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYgIoW_KeWPHgelMjRi2TCn2ae3dbHAQZhDzK0-MNKc",
                ),
                (
                    "a 31-byte signature",
                    "pypi-AgEIcHlwaS5vcmcCJDY2MzYwZTY4LTUxOGQtNGE5Yi05MTI2LWYwYzI1MThmZDIxMwACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYfwlLYi68H0iCbAtOhmFjkaQ8ehG0glDLbpL3Wwe1i8A",
                ),
                (
                    "a byte after the signature",
                    "pypi-AgEIcHlwaS5vcmcCJDE0YzE1ZDg0LTdhODMtNDI1Ni1iZDgxLTNkOTM0OWIwYTM2MwACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYg4ZT0V9zeq2144SnhHsEFYrfYAtc6dubFseqBmhdhxA8A",
                ),
                (
                    "version 1",
                    "pypi-AQEIcHlwaS5vcmcCJDJiMjE1YzA0LTQyZGYtNGQ0MS04ZTdkLTc3ODJmMjdjZWU2NgACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYgzj-4oq67KRdv6Q8iR6IG8-rXVxfrjaXi_MIY07W5B4g",
                ),
                (
                    "located at pypi.com",
                    "pypi-AgEIcHlwaS5jb20CJGJiNGUwYzA2LWY0YzktNDBhZi1hNTQ5LWI4M2I5YWM0ZGQzZgACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYgVAUOws_e86sUgoPtqDP1mx7nqXZwRj4_t4xJBrPrnjA",
                ),
                (
                    "no identifier",
                    "pypi-AgEIcHlwaS5vcmcAAAYgtopcOZBRwQeMFrn6DlWGzWK4viqWtY8r6d2nzy3Dsys",
                ),
                (
                    "random text after the prefix",
                    "pypi-AgEIcHlwaS5vcmcnQluzC-Fcopz1Y1Xa5libV7utolEIYrYU_hzGozsOqg2_GimrVyJMLdnsE5i5nm3utigRwOH7uCQZdZgpWmw43Z6gqJc2wxvQxzoG8jIKcCukuB6_Nh4A4HTpVn5O-xl3wsxF2fGamnSjRAaCfifkTHX",
                ),
                (
                    "no prefix",
                    "AgEIcHlwaS5vcmcCJGI5NzFiMmU4LWZjYmYtNDAwOS1iNTRhLWFlMzJjZWNmZDU5MgAABiAghOQH6gklANyoIioBzrG1EjziUhAE8MXuPDUTybmo7Q",
                ),
                (
                    "standard base64",
                    "pypi-AgEIcHlwaS5vcmcCJGEzZjU4NWMxLTIyYTMtNGFlMS1hZjFmLTFhNWU2M2E0YmNjOQACJXsicGVybWlzc2lvbnMiOiAidXNlciIsICJ2ZXJzaW9uIjogMX0AAAYgIoW/KeWPHgelMjRi2TCn2ae3dbHAQZhDzK0+MNKcRhk",
                ),
            ],
        );
    }

    #[test]
    fn age_checks_hold_only_for_bech32_secret_keys() {
        assert_checks(
            Checksum::Bech32Age,
            &[
                "AGE-SECRET-KEY-1QN595Y7LEVNCZ5QHPGLXWQSGKVCDX56J0Q4GPM2Q79KQ4AWDMA6Q85NVH7",
                "AGE-SECRET-KEY-1H5PTGYEQJ4ZPS8DN0E7Z07VUPHWZ9NHH3XG4FMPMVE4ZA4ZMREWSPV6MAW",
                "age-secret-key-1vyq8xt082wgp004cm5h5z2g700gvgwvr4fg25dd9j9qrkyyz7kds23xlac",
            ],
            &[
                (
                    "one character changed",
                    "AGE-SECRET-KEY-1QN595Y7LEVNCZ5QHPGLXWQSGKVCDX56J0Q4GPM2Q79KQ4AWDMA6Q85NVH8",
                ),
                (
                    "one character changed",
                    "AGE-SECRET-KEY-1M7W7D6D5CWR66E96QGTDYV9KQD9RSPHNK6R7RDSZLCYY276WQ0VS540CHU",
                ),
                (
                    "one character less",
                    "AGE-SECRET-KEY-1QN595Y7LEVNCZ5QHPGLXWQSGKVCDX56J0Q4GPM2Q79KQ4AWDMA6Q85NVH",
                ),
                (
                    "mixed case",
                    "AGE-SECRET-KEY-1RJMJ4hx24wwefwwywnygvgzms4f536jhlxeuwlj9ak5g2cuxq63smcwxcp",
                ),
                (
                    "31 bytes",
                    "AGE-SECRET-KEY-14XSFSK389LKUHE2L83KF6VVDKR5MQN2HQNN7PFDSNV4NZLWC5QSAZJMQ",
                ),
                (
                    "33 bytes",
                    "AGE-SECRET-KEY-1XF9P7NE0DXF7F489GK28ZTSPPT8ERHDVY9SECPHV4LUNXV3XF6ASW73P9PF",
                ),
                (
                    "another prefix",
                    "AGE-PUBLIC-KEY-1ZWUYZRU0Y3850TXV2Y93TRWARE49NTL0ZUQ5MA2PQFXE4KW8QNNS0T8H9J",
                ),
                (
                    "bech32m",
                    "AGE-SECRET-KEY-160G2H8Y0W05VWXLN9WAGM0MP8YYFA57RVUKST4YGNF3090L3VPHQF5DNVY",
                ),
                (
                    "padding bits set",
                    "AGE-SECRET-KEY-1HU5M0VSGTRD883EX9QVVEFHTFVUDQSJQTQ93QST4V5JJ4Q9DY9ZPNAWF8S",
                ),
                ("no separator", "AGESECRETKEY"),
            ],
        );
    }

    #[test]
    fn bad_rules_are_refused_with_their_id() {
        let spec = |id: &str, keywords: &[&str], pattern: &str| RuleSpec {
            id: id.into(),
            name: "n".into(),
            keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
            keywords_match_case: false,
            keywords_begin_words: false,
            followed_by: None,
            pattern: pattern.into(),
            entropy: None,
            confidence: Confidence::High,
            kind: Kind::Specific,
            checksum: None,
            parts: vec![],
            examples: vec![],
            negatives: vec![],
        };
        let with_part = |id: &str, pattern: &str, lines: u32| RuleSpec {
            parts: vec![PartSpec {
                name: "key id".into(),
                pattern: pattern.into(),
                lines,
                required: false,
                context: false,
            }],
            ..spec(id, &["ab"], "(?P<secret>ab)")
        };
        let cases = [
            (
                with_part("part-broken", "(x", 3),
                "part \"key id\": pattern",
            ),
            (with_part("part-far", "x", 21), "at most 20"),
            (spec("Bad_Id", &["ab"], "(?P<secret>ab)"), "kebab-case"),
            (spec("no-keywords", &[], "(?P<secret>ab)"), "keyword"),
            (
                spec("upper-keyword", &["AB"], "(?P<secret>ab)"),
                "lowercase",
            ),
            (spec("no-group", &["ab"], "ab"), "(?P<secret>"),
            (spec("broken", &["ab"], "(?P<secret>ab"), "does not compile"),
        ];
        for (spec, expected) in cases {
            let id = spec.id.clone();
            let err = Rule::compile("custom", spec).unwrap_err().to_string();
            assert!(err.contains(&id) && err.contains(expected), "{err}");
        }
        let mut set = RuleSet::default();
        set.add("custom", spec("dup", &["ab"], "(?P<secret>ab)"))
            .unwrap();
        assert!(
            set.add("custom", spec("dup", &["ab"], "(?P<secret>ab)"))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn a_rule_whose_pattern_finds_its_keywords_where_the_search_does_not_is_reported() {
        let rule = |id: &str, extra: &str, pattern: &str, example: &str| {
            format!(
                "category = \"t\"\n[[rules]]\nid = \"{id}\"\nname = \"n\"\n{extra}\n\
                 pattern = '''{pattern}'''\nexamples = ['''{example}''']\n"
            )
        };
        let problems = |text: String| {
            let mut set = RuleSet::default();
            set.add_file("t", &text).unwrap_or_else(|e| panic!("{e}"));
            check_examples(&set, false)
        };
        // Found inside a word by the pattern, but said to begin words; found in any case
        // by the pattern, but said to match case.
        for (id, extra, pattern, example) in [
            (
                "inside-word",
                "keywords = [\"dd\"]\nkeywords_begin_words = true",
                r"(?P<secret>dd[0-9]{6})",
                "dd730194",
            ),
            (
                "any-case",
                "keywords = [\"SK\"]\nkeywords_match_case = true",
                r"(?i)\b(?P<secret>sk[0-9]{6})\b",
                "SK730194",
            ),
        ] {
            let found = problems(rule(id, extra, pattern, example));
            assert!(
                found
                    .iter()
                    .any(|p| p.contains("keyword search finds none")),
                "{found:?}"
            );
        }
        // Capitals in keywords only with keywords_match_case.
        let caps = rule("caps", "keywords = [\"SK\"]", r"\bSK[0-9]{6}", "SK730194");
        assert!(RuleSet::default().add_file("t", &caps).is_err());
        // Patterns that keep to what they say pass.
        for (extra, pattern, example) in [
            (
                "keywords = [\"dd\"]\nkeywords_begin_words = true",
                r"(?:\b|_)(?P<secret>dd[0-9]{6})",
                "x_dd730194",
            ),
            (
                "keywords = [\"SK\"]\nkeywords_match_case = true",
                r"\b(?P<secret>SK[0-9]{6})\b",
                "SK730194",
            ),
        ] {
            let found = problems(rule("fine", extra, pattern, example));
            assert_eq!(found, Vec::<String>::new());
        }
    }

    #[test]
    fn followed_by_is_bounded_and_held_to_the_examples() {
        let rule = |keywords: &str, followed_by: &str, example: &str| {
            format!(
                "category = \"t\"\n[[rules]]\nid = \"fb\"\nname = \"n\"\nkeywords = [{keywords}]\n\
                 followed_by = '''{followed_by}'''\n\
                 pattern = '''\\b(?P<secret>tk_[a-z0-9]{{12}})\\b'''\nexamples = ['''{example}''']\n"
            )
        };
        let add = |text: String| RuleSet::default().add_file("t", &text);
        // Unbounded, or longer than it may be.
        for followed_by in ["[a-z0-9]+", "[a-z0-9]{300}"] {
            let refused = add(rule("\"tk_\"", followed_by, "tk_a1b2c3d4e5f6"));
            assert!(refused.is_err_and(|e| e.to_string().contains("at most")));
        }
        // A keyword the search cuts short cannot say what follows it.
        let long = add(rule(
            "\"tk_averylongkeyword\"",
            "[a-z0-9]{12}",
            "tk_a1b2c3d4e5f6",
        ));
        assert!(long.is_err_and(|e| e.to_string().contains("keywords of at most")));
        // An example whose keyword is followed otherwise is a problem of the rule.
        let mut set = RuleSet::default();
        set.add_file("t", &rule("\"tk_\"", "[0-9]{12}", "tk_a1b2c3d4e5f6"))
            .unwrap_or_else(|e| panic!("{e}"));
        let problems = check_examples(&set, false);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("holds none of the keywords")),
            "{problems:?}"
        );
        let mut set = RuleSet::default();
        set.add_file("t", &rule("\"tk_\"", "[a-z0-9]{12}", "tk_a1b2c3d4e5f6"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_examples(&set, false), Vec::<String>::new());
    }
}
