//! The matcher: finds rule matches in a byte buffer. A keyword prefilter (one
//! Aho-Corasick pass) picks the rules worth running; each candidate value then passes
//! the placeholder, entropy, allowlist and inline-suppression checks. Knows nothing of
//! where the bytes come from.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use regex::bytes::Regex;

use super::memo::{Candidate, Memo};
use super::rules::{Kind, Rule, RuleError, RuleSet, is_space};

/// Marker that suppresses every finding on its line.
pub const INLINE_ALLOW: &str = "deployguard:allow";

/// Values, value patterns and path patterns never reported.
#[derive(Debug, Default)]
pub struct Allowlist {
    pub values: HashSet<Vec<u8>>,
    pub value_patterns: Vec<Regex>,
    pub path_patterns: Vec<Regex>,
}

/// One accepted match: the rule (index into the detector's rules) and the secret's byte span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub rule: usize,
}

#[derive(Debug)]
pub struct Detector {
    rules: RuleSet,
    keywords: AhoCorasick,
    /// For each keyword, the rules that list it.
    keyword_rules: Vec<Vec<usize>>,
    allow: Allowlist,
    /// Search only around keywords (see [`Detector::search_windows`]); tests compare
    /// with whole-buffer searches.
    windowed: bool,
    /// No keyword holds a line break, so the keyword search can be remembered piece by
    /// piece (see [`Memo`]).
    memoizable: bool,
}

impl Detector {
    pub fn new(rules: RuleSet, allow: Allowlist) -> Result<Self, RuleError> {
        let mut words: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (index, rule) in rules.rules().iter().enumerate() {
            for keyword in &rule.keywords {
                match words.iter().position(|w| w == keyword) {
                    Some(at) => keyword_rules[at].push(index),
                    None => {
                        words.push(keyword.clone());
                        keyword_rules.push(vec![index]);
                    }
                }
            }
        }
        let keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&words)
            .map_err(|e| RuleError::new("keywords", e.to_string()))?;
        let memoizable = !words.iter().any(|w| w.contains('\n'));
        Ok(Self {
            rules,
            keywords,
            keyword_rules,
            allow,
            windowed: true,
            memoizable,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        self.rules.rules()
    }

    /// True when findings in this path are never reported.
    pub fn path_allowed(&self, path: &str) -> bool {
        self.allow
            .path_patterns
            .iter()
            .any(|p| p.is_match(path.as_bytes()))
    }

    /// Appends every accepted match in `data` to `hits`, ordered by position. `path`
    /// (when known) lets generic rules stay quiet in lock files.
    pub fn scan(&self, data: &[u8], path: Option<&str>, hits: &mut Vec<Hit>) {
        self.scan_remembering(data, path, hits, None);
    }

    /// [`Detector::scan`], with what the keyword search and the rules found remembered
    /// in `memo` (one per scan): the same hits, faster over many versions of the same
    /// files.
    pub fn scan_remembering(
        &self,
        data: &[u8],
        path: Option<&str>,
        hits: &mut Vec<Hit>,
        memo: Option<&Memo>,
    ) {
        let first = hits.len();
        // For each rule, where its keywords occur: (start, end).
        let mut places: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        let mut found = |start: usize, end: usize, keyword: usize| {
            for &rule in &self.keyword_rules[keyword] {
                places[rule].push((start, end));
            }
        };
        match memo.filter(|_| self.memoizable) {
            Some(memo) => memo.places(&self.keywords, data, &mut found),
            None => {
                for m in self.keywords.find_overlapping_iter(data) {
                    found(m.start(), m.end(), m.pattern().as_usize());
                }
            }
        }
        let lock_file = path.is_some_and(is_lock_file);
        let mut windows = Vec::new();
        let mut lines = None;
        for (index, rule) in self.rules.rules().iter().enumerate() {
            if places[index].is_empty() || (lock_file && rule.kind == Kind::Generic) {
                continue;
            }
            self.search_windows(rule, data, &places[index], &mut lines, &mut windows);
            for &(from, to) in &windows {
                self.search(rule, index, data, (from, to), memo, hits);
            }
        }
        hits[first..].sort_unstable();
        self.drop_shadowed(hits, first);
    }

    /// Every match of a rule holds one of its keywords, so a pattern whose matches have a
    /// bounded reach (see [`Reach`]) only needs searching around the keywords' places:
    /// each window reaches that far on both sides of a keyword, and ends at a line end
    /// so that `\b` and `$` see the real text. Unbounded patterns search the whole
    /// buffer.
    fn search_windows(
        &self,
        rule: &Rule,
        data: &[u8],
        places: &[(usize, usize)],
        lines: &mut Option<ContentLines>,
        windows: &mut Vec<(usize, usize)>,
    ) {
        windows.clear();
        let reach = rule.reach.filter(|reach| {
            // A buffer worth cutting: well over what one window takes.
            let size = reach.bytes.or(reach.besides_space).unwrap_or(1024);
            self.windowed && data.len() > 4 * size + 1024
        });
        let Some(reach) = reach else {
            windows.push((0, data.len()));
            return;
        };
        let mut line_end = 0;
        for &(start, end) in places {
            // Each measure bounds where a match around this keyword can start and end;
            // the window is what all of them allow.
            let (mut from, mut to) = (0, data.len());
            if let Some(n) = reach.bytes {
                from = from.max(end.saturating_sub(n));
                to = to.min(start + n);
            }
            if let Some(n) = reach.lines {
                let lines = lines.get_or_insert_with(|| ContentLines::of(data));
                let (first, last) = lines.around(start, end, n, data.len());
                from = from.max(first);
                to = to.min(last);
            }
            // Counting white space is a walk byte by byte: only when no length bounds
            // the window, and within what the lines allow.
            if let (None, Some(n)) = (reach.bytes, reach.besides_space) {
                let (low, high) = (from.min(start), to.max(end));
                from = from.max(end - within(data[low..end].iter().rev(), n));
                to = to.min(start + within(data[start..high].iter(), n));
            }
            if to > line_end {
                line_end = memchr::memchr(b'\n', &data[to..]).map_or(data.len(), |i| to + i);
            }
            windows.push((from, line_end));
        }
        windows.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(windows.len());
        for &(from, to) in windows.iter() {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        *windows = merged;
    }

    /// Runs one rule over `data[from..to]`, with the text before `from` as context.
    fn search(
        &self,
        rule: &Rule,
        index: usize,
        data: &[u8],
        (from, to): (usize, usize),
        memo: Option<&Memo>,
        hits: &mut Vec<Hit>,
    ) {
        let mut found = Vec::new();
        match memo {
            Some(memo) => memo.candidates(index, data, from, to, &mut found, |out| {
                candidates(rule, data, from, to, out)
            }),
            None => candidates(rule, data, from, to, &mut found),
        }
        for candidate in found {
            let (start, end) = candidate.secret;
            if rule.kind == Kind::UrlCredentials
                && !plausible_url_password(
                    candidate.user.map(|(a, b)| &data[a..b]),
                    &data[start..end],
                )
            {
                continue;
            }
            if self.accept(rule, data, start, end) {
                hits.push(Hit {
                    start,
                    end,
                    rule: index,
                });
            }
        }
    }

    /// A generic match that overlaps a provider-specific one says less about the same
    /// value; two rules matching the exact same span keep the more confident one.
    fn drop_shadowed(&self, hits: &mut Vec<Hit>, first: usize) {
        // Hits are sorted by start; an overlapping hit is among the near neighbours.
        const NEIGHBOURS: usize = 64;
        let rules = self.rules.rules();
        let found: Vec<Hit> = hits.drain(first..).collect();
        for (i, hit) in found.iter().enumerate() {
            let rule = &rules[hit.rule];
            let near = i.saturating_sub(NEIGHBOURS)..(i + NEIGHBOURS + 1).min(found.len());
            let shadowed = found[near.clone()].iter().zip(near).any(|(other, j)| {
                if i == j || other.start >= hit.end || hit.start >= other.end {
                    return false;
                }
                let other_rule = &rules[other.rule];
                // Generic, JWT and URL detectors all defer to a provider's own format.
                let generic = |r: &Rule| r.kind != Kind::Specific;
                if generic(rule) && !generic(other_rule) {
                    return true;
                }
                if generic(rule) == generic(other_rule)
                    && (other.start, other.end) == (hit.start, hit.end)
                {
                    return (other_rule.confidence, std::cmp::Reverse(j))
                        > (rule.confidence, std::cmp::Reverse(i));
                }
                false
            });
            if !shadowed {
                hits.push(*hit);
            }
        }
    }

    fn accept(&self, rule: &Rule, data: &[u8], start: usize, end: usize) -> bool {
        let value = &data[start..end];
        // A value need not be UTF-8 (a rule may match any bytes); the text checks read it
        // with invalid sequences replaced.
        let text = String::from_utf8_lossy(value);
        let text = text.as_ref();
        if text.trim().is_empty() || is_placeholder(text) {
            return false;
        }
        if let Some(floor) = rule.entropy
            && shannon_entropy(value) < floor
        {
            return false;
        }
        match rule.kind {
            Kind::Specific | Kind::UrlCredentials => {}
            Kind::Generic => {
                if !plausible_generic_value(text) {
                    return false;
                }
            }
            Kind::Jwt => {
                if !plausible_jwt(text) {
                    return false;
                }
            }
        }
        if self.allow.values.contains(value)
            || self.allow.value_patterns.iter().any(|p| p.is_match(value))
        {
            return false;
        }
        !line_of(data, start, end)
            .windows(INLINE_ALLOW.len())
            .any(|w| w == INLINE_ALLOW.as_bytes())
    }
}

/// What a rule's pattern matches in `data[from..to]` (with the text before `from` as
/// context), before any check: each secret's span and, for URL credentials, the user's.
/// Depends on the window's bytes and the few before it only (see [`Memo::candidates`]).
fn candidates(rule: &Rule, data: &[u8], from: usize, to: usize, out: &mut Vec<Candidate>) {
    let haystack = &data[..to];
    let mut at = from;
    while at <= to {
        let Some(captures) = rule.regex.captures_at(haystack, at) else {
            break;
        };
        let Some(whole) = captures.get(0) else { break };
        // Resume after the secret, not the whole match: trailing context (a line end)
        // may be the next match's leading context.
        at = whole.start() + 1;
        let Some(secret) = captures.get(rule.secret_group) else {
            continue;
        };
        at = at.max(secret.end());
        out.push(Candidate {
            secret: (secret.start(), secret.end()),
            user: captures.name("user").map(|m| (m.start(), m.end())),
        });
    }
}

/// How many of `bytes` (taken in the order given) hold at most `n` that are not white
/// space, white space past the last of them included.
fn within<'a>(bytes: impl Iterator<Item = &'a u8>, n: usize) -> usize {
    let mut taken = 0;
    let mut solid = 0;
    for &byte in bytes {
        if !is_space(byte) {
            if solid == n {
                break;
            }
            solid += 1;
        }
        taken += 1;
    }
    taken
}

/// Where each line that holds more than white space has its first such byte and ends
/// its last, in order: how far a window reaches in lines is then a lookup.
struct ContentLines {
    spans: Vec<(usize, usize)>,
    /// The last line found: keywords come in order, so the next is usually near.
    hint: std::cell::Cell<usize>,
}

impl ContentLines {
    fn of(data: &[u8]) -> Self {
        let mut spans = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
            let line = &data[start..end];
            if let Some(first) = line.iter().position(|&b| !is_space(b)) {
                let last = line.iter().rposition(|&b| !is_space(b)).unwrap_or(first);
                spans.push((start + first, start + last + 1));
            }
            start = end + 1;
        }
        Self {
            spans,
            hint: std::cell::Cell::new(0),
        }
    }

    /// The content line holding `at`, a byte that is not white space: searched from
    /// the last one found, in steps that double.
    fn index(&self, at: usize) -> usize {
        let spans = &self.spans;
        let starts_by = |k: usize| spans[k].0 <= at;
        if spans.is_empty() {
            return 0;
        }
        let hint = self.hint.get().min(spans.len() - 1);
        let mut step = 1;
        // The answer is in low..high: the line at low starts by `at` (or low is 0), the
        // one at high does not (or high is the end).
        let (low, high) = if starts_by(hint) {
            let mut low = hint;
            while low + step < spans.len() && starts_by(low + step) {
                low += step;
                step *= 2;
            }
            (low, (low + step).min(spans.len()))
        } else {
            let mut high = hint;
            while high >= step && !starts_by(high - step) {
                high -= step;
                step *= 2;
            }
            (high.saturating_sub(step), high)
        };
        let found =
            (low + spans[low..high].partition_point(|&(first, _)| first <= at)).saturating_sub(1);
        self.hint.set(found);
        found
    }

    /// Where a match holding the keyword `start..end` and touching at most `n` content
    /// lines besides the keyword's can start and end: after the last byte of the
    /// content line `n + 1` above, and before the first byte of the one `n + 1` below
    /// (white space and blank lines between included).
    fn around(&self, start: usize, end: usize, n: usize, len: usize) -> (usize, usize) {
        let above = self.index(start).checked_sub(n + 1);
        let below = self.index(end.saturating_sub(1)).saturating_add(n + 1);
        (
            above.map_or(0, |k| self.spans[k].1),
            self.spans.get(below).map_or(len, |&(first, _)| first),
        )
    }
}

/// The whole line (or lines) around a span.
fn line_of(data: &[u8], start: usize, end: usize) -> &[u8] {
    let from = memchr::memrchr(b'\n', &data[..start]).map_or(0, |i| i + 1);
    let to = memchr::memchr(b'\n', &data[end..]).map_or(data.len(), |i| end + i);
    &data[from..to]
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let len = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

const PLACEHOLDER_WORDS: &[&str] = &[
    "example",
    "xxxx",
    "placeholder",
    "changeme",
    "change_me",
    "dummy",
    "sample",
    "your_",
    "your-",
    "redacted",
    "<",
    ">",
    "${",
    "{{",
    "****",
    "123456",
    "abcdef",
    "qwerty",
];

/// Documentation values, template references and keyboard runs: never real secrets.
pub fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w)) {
        return true;
    }
    // A run of one character is filler in a short value or when it is a large part of a
    // long one; long base64 tokens of binary data legitimately hold `AAAAAA`.
    let bytes = value.as_bytes();
    let (mut run, mut longest) = (1, 1);
    for pair in bytes.windows(2) {
        run = if pair[0] == pair[1] { run + 1 } else { 1 };
        longest = longest.max(run);
    }
    longest >= 6 && (bytes.len() < 32 || longest * 4 >= bytes.len())
}

const LOCK_FILES: &[&str] = &[
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lock",
    "Cargo.lock",
    "go.sum",
    "poetry.lock",
    "Pipfile.lock",
    "uv.lock",
    "Gemfile.lock",
    "composer.lock",
    "packages.lock.json",
    "flake.lock",
    "mix.lock",
    "pubspec.lock",
    "Podfile.lock",
    "gradle.lockfile",
    "Package.resolved",
];

pub fn is_lock_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    LOCK_FILES.contains(&name)
}

/// A value assigned to a secret-like name that is really a reference, an identifier, a
/// path, a UUID or a word — not a credential.
fn plausible_generic_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() < 8 {
        return false;
    }
    if bytes.iter().any(|b| b"()[]{}$%\\".contains(b)) {
        return false;
    }
    if value.starts_with('/')
        || value.starts_with("./")
        || value.starts_with("../")
        || value.starts_with("~/")
    {
        return false;
    }
    if value.contains("://") || is_uuid(value) {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    if [
        "password",
        "passwd",
        "secret",
        "token",
        "null",
        "none",
        "undefined",
        "true",
        "false",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        return false;
    }
    // Code rather than a value: `Token::StructEnd`, `&PrivateKey`, `==TK_SEMI`, `*/`.
    if value.contains("::") || value.starts_with([':', '=', '&', '*', '!', '|', '?', '#', '@']) {
        return false;
    }
    // CONSTANT_NAMES (`EC_P256R1_FIELD_ELEM_BYTES`) and paths (`a/b/c/d`).
    let constant = bytes
        .iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_');
    if (constant && value.split('_').filter(|s| !s.is_empty()).count() >= 3)
        || value.matches('/').count() >= 3
    {
        return false;
    }
    // Words and numbers joined by separators (`my-app-db-2`, `PROD_CACHE_3`,
    // `SHA256_DIGEST_LENGTH`, `auth_v2.access_key`): names, not secrets.
    let segments: Vec<&str> = value
        .split(['-', '_', '.', ':', '/'])
        .filter(|s| !s.is_empty())
        .collect();
    if segments.len() >= 2 && segments.iter().all(|s| is_word_then_digits(s)) {
        return false;
    }
    // CamelCase names (`EcPrivateKeyRfc5915Der`): nearly all letters in words, which
    // random strings of this length rarely are (about 3% at 16 characters).
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    if letters > 0 && 4 * worded_letters(bytes) >= 3 * letters {
        return false;
    }
    // Identifiers and member access (`config.db_password`, `DB_PASSWORD`, `getApiKey`).
    let identifier_like = bytes
        .iter()
        .all(|b| b.is_ascii_alphabetic() || b"_.-".contains(b));
    if identifier_like {
        return false;
    }
    let has_letter = bytes.iter().any(u8::is_ascii_alphabetic);
    let has_other = bytes.iter().any(|b| !b.is_ascii_alphabetic());
    has_letter && has_other
}

/// `word`, `WORD`, `Word`, optionally followed by digits (`x25519`, `TLS13`, `v2`), or digits.
fn is_word_then_digits(segment: &str) -> bool {
    let letters = segment.trim_end_matches(|c: char| c.is_ascii_digit());
    let mut chars = letters.chars();
    match chars.next() {
        None => !segment.is_empty(),
        Some(first) if first.is_ascii_alphabetic() => {
            let rest = chars.as_str();
            rest.chars().all(|c| c.is_ascii_lowercase())
                || (first.is_ascii_uppercase() && rest.chars().all(|c| c.is_ascii_uppercase()))
        }
        Some(_) => false,
    }
}

/// Letters in words: a capital followed by two or more lowercase letters, or three or
/// more lowercase letters.
fn worded_letters(bytes: &[u8]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < bytes.len() {
        let capital = bytes[i].is_ascii_uppercase();
        let start = if capital { i + 1 } else { i };
        let mut end = start;
        while end < bytes.len() && bytes[end].is_ascii_lowercase() {
            end += 1;
        }
        if end - start >= if capital { 2 } else { 3 } {
            total += end - i;
            i = end;
        } else {
            i = end.max(i + 1);
        }
    }
    total
}

pub fn is_uuid(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

const DEFAULT_PASSWORDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "guest",
    "admin",
    "root",
    "test",
    "user",
    "postgres",
    "mysql",
    "redis",
    "rabbitmq",
    "minioadmin",
    "default",
    "pwd",
    "pw",
];

/// The password part of `scheme://user:password@host`.
fn plausible_url_password(user: Option<&[u8]>, password: &[u8]) -> bool {
    if user == Some(password) || password.first().is_some_and(|b| b"$%{[(:".contains(b)) {
        return false;
    }
    // Short words and demo passwords (`secret123`, `mypass`) are documentation.
    let lower = password.to_ascii_lowercase();
    let contains = |word: &str| lower.windows(word.len()).any(|w| w == word.as_bytes());
    let text = String::from_utf8_lossy(password);
    password.len() >= 6
        && !is_word_then_digits(&text)
        && !password.iter().any(|b| b"()[]{}".contains(b))
        && !contains("%20")
        && !DEFAULT_PASSWORDS
            .iter()
            .any(|d| d.as_bytes() == lower.as_slice())
        && !["pass", "secret", "pwd"].into_iter().any(contains)
}

/// A JWT's header must decode to a JSON object with an `alg`.
fn plausible_jwt(token: &str) -> bool {
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(decoded) = engine.decode(header.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&decoded)
        .ok()
        .and_then(|v| v.get("alg").map(serde_json::Value::is_string))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_bytes() {
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn placeholders_are_recognised() {
        for value in [
            "AKIAIOSFODNN7EXAMPLE",
            "<your-token>",
            "${API_KEY}",
            "{{ secret }}",
            "sk_live_000000000",
            "xxxxxxxx",
        ] {
            assert!(is_placeholder(value), "{value}");
        }
        assert!(!is_placeholder("ghp_R8d2kQx7TnV4bLm9ZpW3cY6sJf1HgA5eUo0i"));
        assert!(is_placeholder("ghp_0000000000000000000000000000000000000"));
        assert!(!is_placeholder(
            "FlyV1 fm2_lJPECAAAAAAAAMqLxRBd9kT3vQ2mW7nZ8cLx4pYh5sG6jU1eR0oA3bN9fK2tV7wE"
        ));
    }

    #[test]
    fn generic_values_that_are_references_are_refused() {
        for value in [
            "os.environ.get",
            "DB_PASSWORD",
            "config.api_key",
            "get_token()",
            "/etc/ssl/key.pem",
            "550e8400-e29b-41d4-a716-446655440000",
            "onlyletters",
        ] {
            assert!(!plausible_generic_value(value), "{value}");
        }
        for value in [
            "Tr0ub4dor&3xQ",
            "Vq8rT2mLx9Kd4P",
            "k2Lm_9Qx7Rv4",
            "c3sGs0w_awVw69!GfDOu",
            "a8f3k29dk20s9d8f7g6h",
        ] {
            assert!(plausible_generic_value(value), "{value}");
        }
    }

    #[test]
    fn lock_files_are_recognised_by_name() {
        assert!(is_lock_file("web/package-lock.json"));
        assert!(is_lock_file("Cargo.lock"));
        assert!(!is_lock_file("src/lock.rs"));
    }
}

/// The matcher must survive any input: random bytes, invalid UTF-8, NULs, huge lines and
/// inputs built to make patterns work hard.
#[cfg(test)]
mod robustness {
    use super::*;

    /// xorshift64*: deterministic, dependency-free pseudo-random bytes.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn detector() -> Detector {
        Detector::new(
            RuleSet::embedded().unwrap_or_else(|e| panic!("{e}")),
            Allowlist::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn check(detector: &Detector, data: &[u8]) {
        let mut hits = Vec::new();
        detector.scan(data, Some("fuzz/input.txt"), &mut hits);
        for hit in &hits {
            // Values are bytes: a hit need not be UTF-8, only inside the buffer.
            assert!(
                hit.start < hit.end && hit.end <= data.len(),
                "{hit:?} out of bounds"
            );
        }
    }

    #[test]
    fn random_bytes_and_fragments_of_secrets_never_break_the_matcher() {
        let detector = detector();
        let fragments: Vec<Vec<u8>> = detector
            .rules()
            .iter()
            .flat_map(|r| {
                r.spec()
                    .examples
                    .iter()
                    .chain(&r.keywords)
                    .map(|e| e.as_bytes().to_vec())
            })
            .chain([
                b"\0".to_vec(),
                b"\xff\xfe".to_vec(),
                b"\xc3".to_vec(),
                b"\n".to_vec(),
                b"=\"".to_vec(),
                b"://:@".to_vec(),
            ])
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..300 {
            let mut data = Vec::new();
            for _ in 0..rng.below(40) {
                if rng.below(3) == 0 {
                    let fragment = &fragments[rng.below(fragments.len())];
                    // Cut fragments at random byte offsets, splitting UTF-8 and tokens.
                    let from = rng.below(fragment.len().max(1));
                    data.extend_from_slice(&fragment[from..]);
                } else {
                    for _ in 0..rng.below(64) {
                        data.push(rng.next() as u8);
                    }
                }
            }
            check(&detector, &data);
        }
    }

    #[test]
    fn searching_around_keywords_finds_exactly_what_a_whole_buffer_search_finds() {
        let windowed = detector();
        let mut whole = detector();
        whole.windowed = false;
        let examples: Vec<&String> = windowed
            .rules()
            .iter()
            .flat_map(|r| r.spec().examples.iter().chain(&r.spec().negatives))
            .collect();
        let mut rng = Rng(0x0DDC_0FFE_E15E_A5E5);
        let filler = [
            "let x = compute(a, b);",
            "password_policy: strict",
            "# token handling below",
            "key=",
            "\t",
            "}",
        ];
        for round in 0..24 {
            let mut data = Vec::new();
            while data.len() < 48 << 10 {
                if rng.below(8) == 0 {
                    let example = examples[rng.below(examples.len())].as_bytes();
                    // Half the rounds stretch the white space inside values' lines to
                    // long runs (across lines too), which `\s*` in a pattern matches.
                    for &byte in example {
                        if round % 2 == 1 && is_space(byte) {
                            for _ in 0..rng.below(300) {
                                data.push(b" \t\n\r"[rng.below(4)]);
                            }
                        } else {
                            data.push(byte);
                        }
                    }
                } else {
                    data.extend_from_slice(filler[rng.below(filler.len())].as_bytes());
                }
                data.push(if rng.below(4) == 0 { b' ' } else { b'\n' });
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            windowed.scan(&data, None, &mut a);
            whole.scan(&data, None, &mut b);
            assert!(!b.is_empty());
            assert_eq!(a, b);
        }
    }

    #[test]
    fn adversarial_inputs_are_handled() {
        let detector = detector();
        let huge_line = "a".repeat(4 << 20);
        let many_keywords = "password=token=secret=api_key=".repeat(50_000);
        let unterminated_key = format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}",
            "QUJD".repeat(500_000)
        );
        let url_soup = "https://a:b@c:d@e:f@".repeat(50_000);
        let jwt_soup = "eyJhbGciOiJIUzI1NiJ9.eyJ".repeat(40_000);
        let nul_padded: Vec<u8> = std::iter::repeat_n(0u8, 1 << 20)
            .chain(b"ghp_GPFbD22W7cEq1vCZbSpadtSYtPSdN5T5IA4B".iter().copied())
            .collect();
        for input in [
            huge_line.as_bytes(),
            many_keywords.as_bytes(),
            unterminated_key.as_bytes(),
            url_soup.as_bytes(),
            jwt_soup.as_bytes(),
            &nul_padded,
            b"",
            b"\xff",
        ] {
            check(&detector, input);
        }
    }

    #[test]
    fn remembered_keyword_searches_find_exactly_what_fresh_ones_find() {
        let detector = detector();
        assert!(detector.memoizable);
        let memo = Memo::default();
        let examples: Vec<&String> = detector
            .rules()
            .iter()
            .flat_map(|r| r.spec().examples.iter().chain(&r.spec().negatives))
            .collect();
        let filler = [
            "fn main() {",
            "password = load()",
            "  // api key rotation",
            "}",
            "token",
        ];
        let mut rng = Rng(0x5151_2026_0000_0001);
        // Versions of one file, each a few edits away from the last, as a history holds.
        let mut file: Vec<Vec<u8>> = Vec::new();
        for _ in 0..2000 {
            let line = if rng.below(6) == 0 {
                examples[rng.below(examples.len())].as_bytes().to_vec()
            } else {
                filler[rng.below(filler.len())].as_bytes().to_vec()
            };
            file.push(line);
        }
        let mut found_any = false;
        for _ in 0..30 {
            for _ in 0..3 {
                let at = rng.below(file.len());
                let line = examples[rng.below(examples.len())].as_bytes().to_vec();
                if rng.below(2) == 0 {
                    file.insert(at, line);
                } else {
                    file[at] = line;
                }
            }
            let data = file.join(&b"\n"[..]);
            let (mut fresh, mut remembered) = (Vec::new(), Vec::new());
            detector.scan(&data, None, &mut fresh);
            detector.scan_remembering(&data, None, &mut remembered, Some(&memo));
            found_any |= !fresh.is_empty();
            assert_eq!(fresh, remembered);
        }
        assert!(found_any);
    }

    #[test]
    fn content_lines_are_found_from_any_previous_answer() {
        let mut rng = Rng(0xC0FF_EE00_1234_5678);
        let mut data = Vec::new();
        for _ in 0..3000 {
            match rng.below(4) {
                0 => data.extend_from_slice(b"   \t"),
                1 => data.extend_from_slice(b"let x = 1;"),
                _ => data.extend_from_slice(b"  word"),
            }
            data.push(b'\n');
        }
        let lines = ContentLines::of(&data);
        let naive = |at: usize| {
            lines
                .spans
                .partition_point(|&(first, _)| first <= at)
                .saturating_sub(1)
        };
        for _ in 0..20_000 {
            let at = rng.below(data.len());
            assert_eq!(lines.index(at), naive(at), "at {at}");
        }
        assert_eq!(ContentLines::of(b"   \n\n").index(2), 0);
    }
}
