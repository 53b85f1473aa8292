//! The matcher: finds rule matches in a byte buffer. A keyword prefilter (one
//! Aho-Corasick pass) picks the rules worth running; each candidate value then passes
//! the placeholder, entropy, allowlist and inline-suppression checks. Knows nothing of
//! where the bytes come from.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use regex::bytes::Regex;

use super::decode;
use super::memo::{CONTEXT, Candidate, Memo, Place};
use super::rules::Reach;
use super::rules::{Confidence, Kind, Rule, RuleError, RuleSet, is_space};
use crate::git::delta::Copied;

/// Keywords are searched for by their first this many bytes at most.
pub(crate) const MAX_KEYWORD: usize = 12;

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
    /// The secret holds a `%` or a backslash: percent-encoded or escaped text that
    /// overlaps it defers to it.
    pub escaped: bool,
}

/// A secret found inside decoded text: its rule and its decoded value (`Debug` never
/// shows it).
#[derive(Clone, PartialEq, Eq)]
pub struct Decoded {
    pub rule: usize,
    pub value: Vec<u8>,
    /// The encoded text that holds it, in the scanned data: what the clean removes.
    /// All of a base64 or hex text (its bytes do not split at a character), just the
    /// characters that spell it in percent-encoded or escaped text.
    pub span: (usize, usize),
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decoded(rule {}, {} bytes)", self.rule, self.value.len())
    }
}

/// The line of the last match a search checked, and whether it holds
/// [`INLINE_ALLOW`].
#[derive(Default)]
struct Line {
    bounds: Option<(usize, usize)>,
    allowed: Option<bool>,
}

/// How much of a line before a value a generic detector reads for its name.
const MAX_NAME: usize = 64;

/// How much of a line around base64 text is scanned with its decoding: the name before
/// it (`password: `), the quote after it.
const DECODE_BEFORE: usize = 128;
const DECODE_AFTER: usize = 16;

/// Where the text scanned with base64 `data[start..end]`'s decoding begins and ends.
fn decode_context(data: &[u8], start: usize, end: usize) -> (usize, usize) {
    near_bounds(data, start, end, DECODE_BEFORE, DECODE_AFTER)
}

/// Keywords of provider rules that are words any code uses, not providers' names.
const NOT_PROVIDER_NAMES: &[&str] = &[
    "access",
    "accountkey",
    "apikey",
    "argo",
    "assembly",
    "atlas",
    "authtoken",
    "central",
    "checkout",
    "circle",
    "comet",
    "copper",
    "cosmos",
    "dose",
    "drip",
    "elastic",
    "encryptionkey",
    "gemini",
    "ghost",
    "groove",
    "identified",
    "influx",
    "keen",
    "keeper",
    "keypair",
    "keypassword",
    "keysecret",
    "lever",
    "licensekey",
    "line",
    "loginmodule",
    "machinetoken",
    "mainnet",
    "masterauth",
    "meta",
    "mnemonic",
    "modal",
    "monday",
    "mongo",
    "mysql",
    "nomad",
    "oracle",
    "password",
    "polygon",
    "preprod",
    "preview",
    "privatekey",
    "privkey",
    "pubcredentials",
    "recoveryphrase",
    "requirepass",
    "routing",
    "secretkey",
    "secretphrase",
    "seedphrase",
    "seedwords",
    "segment",
    "specificpassword",
    "storage",
    "storepassword",
    "testnet",
    "together",
    "vault",
    "wallet",
    "walletphrase",
    "weights",
    "wise",
];

/// How far before base64 text a keyword that found it may be (`password: `).
const MAX_KEYWORD_GAP: usize = 64;

thread_local! {
    /// How deep in decoded text this thread's detection is.
    static DECODE_DEPTH: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Keywords by their first two bytes, lowercase: each one's number and text.
type WordStarts = std::collections::HashMap<[u8; 2], Vec<(u32, Box<[u8]>)>>;

/// The keyword search: one pass of an automaton that ignores case, and what some
/// keywords ask besides their letters (see [`RuleSpec::keywords_match_case`] and
/// [`RuleSpec::keywords_begin_words`]). A keyword found in a common word (`sk` in
/// `task`, `dd` in `address`) would otherwise send every version of every file that
/// holds one through its rules.
///
/// [`RuleSpec::keywords_match_case`]: super::rules::RuleSpec::keywords_match_case
/// [`RuleSpec::keywords_begin_words`]: super::rules::RuleSpec::keywords_begin_words
#[derive(Debug)]
pub(crate) struct Keywords {
    automaton: AhoCorasick,
    /// Per keyword: found only as written.
    exact: Vec<Option<Box<[u8]>>>,
    /// Per keyword: found only where a word begins, which reads the byte before it.
    begins_word: Vec<bool>,
    /// The keywords that begin words.
    word_starts: WordStarts,
}

impl Keywords {
    /// Calls `found(start, end, keyword)` for every keyword in `data[from..to]`, ordered
    /// by end; a keyword that begins words reads the byte before its start in `data`
    /// (none at 0).
    pub(crate) fn find(
        &self,
        data: &[u8],
        from: usize,
        to: usize,
        found: &mut impl FnMut(usize, usize, usize),
    ) {
        for m in self.automaton.find_overlapping_iter(&data[from..to]) {
            let (start, end, keyword) = (from + m.start(), from + m.end(), m.pattern().as_usize());
            if self.holds(data, start, end, keyword) {
                found(start, end, keyword);
            }
        }
    }

    fn holds(&self, data: &[u8], start: usize, end: usize, keyword: usize) -> bool {
        if let Some(exact) = &self.exact[keyword]
            && data[start..end] != **exact
        {
            return false;
        }
        !self.begins_word[keyword] || start == 0 || !data[start - 1].is_ascii_alphanumeric()
    }

    /// Calls `found(end, keyword)` for every keyword that begins words and begins at
    /// `data[at]`.
    fn words_at(&self, data: &[u8], at: usize, found: &mut impl FnMut(usize, u32)) {
        let Some(two) = data.get(at..at + 2) else {
            return;
        };
        let key = [two[0].to_ascii_lowercase(), two[1].to_ascii_lowercase()];
        for (keyword, text) in self.word_starts.get(&key).into_iter().flatten() {
            let end = at + text.len();
            let same = data
                .get(at..end)
                .is_some_and(|there| match self.exact[*keyword as usize] {
                    Some(_) => there == &**text,
                    None => there.eq_ignore_ascii_case(text),
                });
            if same && self.holds(data, at, end, *keyword as usize) {
                found(end, *keyword);
            }
        }
    }
}

#[derive(Debug)]
pub struct Detector {
    rules: RuleSet,
    keywords: Keywords,
    /// For each keyword, the rules that list it.
    keyword_rules: Vec<Vec<usize>>,
    allow: Allowlist,
    /// Search only around keywords (see [`Detector::search_windows`]); tests compare
    /// with whole-buffer searches.
    windowed: bool,
    /// No keyword holds a line break, so the keyword search can be remembered piece by
    /// piece (see [`Memo`]).
    memoizable: bool,
    /// The longest and the shortest keyword's length in bytes.
    longest_keyword: usize,
    shortest_keyword: usize,
    /// Every two bytes that some keyword holds in a row (in either case): bit
    /// `a * 256 + b`.
    pairs: Box<[u64]>,
    /// The prefixes that begin a provider's tokens (`ghp_`, `pypi-ageich…`, `xoxb-`):
    /// keywords of provider rules that hold a separator, lowercase.
    provider_prefixes: HashSet<Vec<u8>>,
    /// The longest of them, in bytes.
    longest_prefix: usize,
    /// Providers' names (`algolia`, `twilio`): the keywords of provider rules that are
    /// words. A value assigned to a name made of one is the provider's to judge.
    provider_names: HashSet<Vec<u8>>,
    /// The variables providers' rules read their tokens from (`ASSEMBLYAI_API_KEY`,
    /// `openai_api_key`), as [`variable_key`] writes them.
    provider_variables: HashSet<Vec<u8>>,
    /// The rules whose format carries a checksum.
    checksum_rules: Vec<usize>,
}

/// A window a rule is searched in, `from..to`, and the bytes `read.0..read.1` that
/// decided it and what was found in it: where its bounds were read from, the window with
/// the few bytes before it, and the lines of its matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    from: usize,
    to: usize,
    read: (usize, usize),
}

impl Span {
    fn whole(len: usize) -> Self {
        Self {
            from: 0,
            to: len,
            read: (0, len),
        }
    }

    /// Whether this window and `other` are merged into one (see [`merge`]).
    fn meets(&self, other: &Span) -> bool {
        let (first, second) = if self.from <= other.from {
            (self, other)
        } else {
            (other, self)
        };
        second.from <= first.to
    }
}

/// `items.partition_point(before)`, searched from `*hint` outwards in steps that double
/// (what is looked for next is usually near what was found last), which then becomes
/// the hint.
fn seek<T>(items: &[T], hint: &mut usize, before: impl Fn(&T) -> bool) -> usize {
    let at = (*hint).min(items.len());
    let (mut low, mut high) = (at, at);
    let mut step = 1;
    if at < items.len() && before(&items[at]) {
        // The answer is past `at`.
        low = at + 1;
        high = low;
        while high < items.len() && before(&items[high]) {
            low = high + 1;
            high = (high + step).min(items.len());
            step *= 2;
        }
    } else {
        // The answer is at or before `at`.
        while low > 0 && !before(&items[low - 1]) {
            high = low - 1;
            low = low.saturating_sub(step);
            step *= 2;
        }
    }
    let found = low + items[low..high].partition_point(before);
    *hint = found;
    found
}

/// Items ordered by a position, indexed by the position's bucket of `1 << BUCKET` bytes:
/// the first item at or after a position is found in a step, wherever the last one was.
#[derive(Debug)]
struct Buckets(Vec<u32>);

const BUCKET: usize = 6;

impl Buckets {
    /// Indexes the items whose positions (in order, all below `len`) are `positions`.
    fn of(len: usize, positions: impl Iterator<Item = usize>) -> Self {
        // first[b]: how many items lie before bucket b.
        let mut first = vec![0u32; (len >> BUCKET) + 2];
        for at in positions {
            first[(at >> BUCKET) + 1] += 1;
        }
        for b in 1..first.len() {
            first[b] += first[b - 1];
        }
        Self(first)
    }

    /// How many of `items` lie before `at` (by `position`).
    fn before<T>(&self, items: &[T], at: usize, position: impl Fn(&T) -> usize) -> usize {
        let bucket = (at >> BUCKET).min(self.0.len() - 1);
        let mut i = self.0[bucket] as usize;
        while i < items.len() && position(&items[i]) < at {
            i += 1;
        }
        i
    }
}

/// Merges windows sorted by start that overlap or touch.
fn merge(windows: &mut Vec<Span>) {
    let mut merged: Vec<Span> = Vec::with_capacity(windows.len());
    for window in windows.drain(..) {
        match merged.last_mut() {
            Some(last) if window.from <= last.to => {
                last.to = last.to.max(window.to);
                last.read = (
                    last.read.0.min(window.read.0),
                    last.read.1.max(window.read.1),
                );
            }
            _ => merged.push(window),
        }
    }
    *windows = merged;
}

/// What detection found in one blob, kept while the deltas built on it are scanned
/// (see [`Detector::see`]).
#[derive(Clone, Debug)]
pub struct Seen(Arc<SeenIn>);

impl SeenIn {
    fn place_index(&self) -> &Buckets {
        self.place_index
            .get_or_init(|| Buckets::of(self.len, self.places.0.iter().map(|p| p.start as usize)))
    }

    fn window_index(&self) -> &Buckets {
        self.window_index
            .get_or_init(|| Buckets::of(self.len, self.windows.iter().map(|w| w.span.read.0)))
    }
}

#[derive(Debug)]
struct SeenIn {
    len: usize,
    places: Places,
    /// Indexes of the places and the windows, made when a delta first needs them (most
    /// blobs have none built on them).
    place_index: OnceLock<Buckets>,
    /// Every rule's windows, ordered by the start of what they read.
    windows: Vec<Searched>,
    window_index: OnceLock<Buckets>,
    /// What passed the checks, window by window, before generic matches defer to
    /// specific ones.
    hits: Vec<Hit>,
    /// The fewest bytes a window searched around keywords read.
    shortest_read: usize,
    /// Windows whose results were the base's (tests count them).
    #[cfg_attr(not(test), allow(dead_code))]
    carried: usize,
}

/// One rule's window and what passed in it: `hits[hits.0..hits.1]`.
#[derive(Clone, Copy, Debug)]
struct Searched {
    rule: usize,
    span: Span,
    /// Searched around keywords (not over the whole buffer).
    windowed: bool,
    hits: (usize, usize),
}

/// A base's window that a delta copies whole, moved to where the delta puts it.
#[derive(Clone, Copy, Debug)]
struct Carried {
    span: Span,
    /// The copy it lies in, in the delta's result.
    copy: (usize, usize),
    /// Its hits in the base, and how far they move.
    hits: (usize, usize),
    shift: isize,
    kept: bool,
}

/// Lists kept by rule, for the few rules a buffer's keywords name: reused from buffer to
/// buffer (a list per rule made for each buffer would cost each as much as there are
/// rules), and emptied after each.
#[derive(Debug)]
struct ByRule<T> {
    lists: Vec<Vec<T>>,
    /// The rules with a list that is not empty.
    touched: Vec<usize>,
}

impl<T> Default for ByRule<T> {
    fn default() -> Self {
        Self {
            lists: Vec::new(),
            touched: Vec::new(),
        }
    }
}

impl<T> ByRule<T> {
    fn push(&mut self, rule: usize, item: T) {
        if self.lists.len() <= rule {
            self.lists.resize_with(rule + 1, Vec::new);
        }
        let list = &mut self.lists[rule];
        if list.is_empty() {
            self.touched.push(rule);
        }
        list.push(item);
    }

    fn list_mut(&mut self, rule: usize) -> &mut [T] {
        match self.lists.get_mut(rule) {
            Some(list) => list,
            None => &mut [],
        }
    }

    fn clear(&mut self) {
        for rule in self.touched.drain(..) {
            self.lists[rule].clear();
        }
    }
}

/// What detection on one thread reuses from buffer to buffer (see [`ByRule`]).
#[derive(Debug, Default)]
struct Scratch {
    places: ByRule<(usize, usize)>,
    carried: ByRule<Carried>,
    rules: Vec<usize>,
}

thread_local! {
    /// Taken while a buffer is scanned: a scan inside it (of decoded text) makes its own.
    static SCRATCH: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
}

fn take_scratch() -> Box<Scratch> {
    SCRATCH.with(std::cell::Cell::take).unwrap_or_default()
}

fn return_scratch(mut scratch: Box<Scratch>) {
    scratch.places.clear();
    scratch.carried.clear();
    scratch.rules.clear();
    SCRATCH.with(|s| s.set(Some(scratch)));
}

/// Where the keywords occur in one buffer: every occurrence, overlapping ones included,
/// ordered by start, end and keyword. A scan keeps a blob's while it scans the deltas
/// built on that blob: a delta's are its base's where it copies the base, and what a
/// search around what it inserts finds (see [`Detector::places_after`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Places(Arc<[Place]>);

impl Detector {
    pub fn new(rules: RuleSet, allow: Allowlist) -> Result<Self, RuleError> {
        // Each keyword with whether it matches case and whether it begins words.
        let mut words: Vec<(String, bool, bool)> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut word_index: std::collections::HashMap<(String, bool, bool), usize> =
            Default::default();
        let mut add_word = |word: &str, exact: bool, begins_word: bool, index: usize| {
            let key = (word.to_owned(), exact, begins_word);
            match word_index.get(&key) {
                Some(&at) if keyword_rules[at].contains(&index) => {}
                Some(&at) => keyword_rules[at].push(index),
                None => {
                    word_index.insert(key.clone(), words.len());
                    words.push(key);
                    keyword_rules.push(vec![index]);
                }
            }
        };
        // Every match holding a keyword holds its start too, which finds the same places
        // and more: a short longest keyword keeps the search around what a delta changes
        // short (see `Detector::places_after`).
        let cut = |keyword: &str| -> usize {
            (keyword.char_indices())
                .map(|(at, c)| at + c.len_utf8())
                .take_while(|&end| end <= MAX_KEYWORD)
                .last()
                .unwrap_or(keyword.len())
        };
        for (index, rule) in rules.rules().iter().enumerate() {
            for keyword in &rule.keywords {
                let (exact, begins) = (rule.keywords_match_case, rule.keywords_begin_words);
                add_word(&keyword[..cut(keyword)], exact, begins, index);
            }
        }
        let mut add = |word: &str, index: usize| add_word(&word[..cut(word)], false, false, index);
        // Base64 rules are also found by the base64 forms of the prefixes that begin
        // providers' tokens, as the tokens write them (`AKIA`, `AIza`, `ghp_`), and of
        // text that secrets are often inside of.
        let rules_of = |kind: Kind| -> Vec<usize> {
            (rules.rules().iter().enumerate())
                .filter(|(_, r)| r.kind == kind)
                .map(|(i, _)| i)
                .collect()
        };
        let base64_rules = rules_of(Kind::Base64);
        let hex_rules = rules_of(Kind::Hex);
        if !base64_rules.is_empty() || !hex_rules.is_empty() {
            // Hints anywhere in the encoded text; a token's prefix where a token would
            // be encoded alone, at its start (each alignment costs the prefilter as
            // much again).
            let mut sources: Vec<(Vec<u8>, usize)> = (decode::ENCODED_HINTS.iter())
                .map(|hint| (hint.as_bytes().to_vec(), 3))
                .collect();
            for rule in rules.rules() {
                if rule.kind != Kind::Specific || rule.confidence != Confidence::High {
                    continue;
                }
                for keyword in &rule.keywords {
                    for form in written_forms(keyword, &rule.spec().examples) {
                        if !sources.iter().any(|(s, _)| *s == form) {
                            sources.push((form, 1));
                        }
                    }
                }
            }
            for (source, alignments) in &sources {
                for fragment in decode::keyword_fragments(source, *alignments) {
                    for &index in &base64_rules {
                        add(&fragment, index);
                    }
                }
            }
            // Hex keeps byte boundaries: one form of each, wherever it starts. Hex text
            // is rarer than base64, and every form costs the prefilter on all text: the
            // hints, and the prefixes of the tokens most often leaked.
            let hex_sources = (decode::ENCODED_HINTS.iter()).chain(decode::HEX_PREFIXES);
            for source in hex_sources {
                for &index in &hex_rules {
                    add(&hex::encode(source), index);
                }
            }
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(words.iter().map(|(w, _, _)| w))
            .map_err(|e| RuleError::new("keywords", e.to_string()))?;
        let mut word_starts = WordStarts::default();
        for (i, (word, _, begins)) in words.iter().enumerate() {
            if let [a, b, ..] = word.as_bytes()
                && *begins
            {
                let key = [a.to_ascii_lowercase(), b.to_ascii_lowercase()];
                let entry = word_starts.entry(key).or_default();
                entry.push((i as u32, word.as_bytes().into()));
            }
        }
        let keywords = Keywords {
            automaton,
            exact: (words.iter())
                .map(|(w, exact, _)| exact.then(|| w.as_bytes().into()))
                .collect(),
            begins_word: words.iter().map(|(_, _, begins)| *begins).collect(),
            word_starts,
        };
        let memoizable = !words.iter().any(|(w, _, _)| w.contains('\n'));
        let longest_keyword = words.iter().map(|(w, _, _)| w.len()).max().unwrap_or(0);
        let shortest_keyword = words.iter().map(|(w, _, _)| w.len()).min().unwrap_or(0);
        let mut pairs = vec![0u64; 1 << 10].into_boxed_slice();
        for (word, _, _) in &words {
            for two in word.as_bytes().windows(2) {
                for a in [two[0].to_ascii_lowercase(), two[0].to_ascii_uppercase()] {
                    for b in [two[1].to_ascii_lowercase(), two[1].to_ascii_uppercase()] {
                        let bit = usize::from(a) << 8 | usize::from(b);
                        pairs[bit >> 6] |= 1 << (bit & 63);
                    }
                }
            }
        }
        let mut provider_prefixes: HashSet<Vec<u8>> = HashSet::new();
        for rule in rules.rules() {
            if rule.kind != Kind::Specific || rule.confidence == Confidence::Low {
                continue;
            }
            for keyword in &rule.keywords {
                let lower = keyword.to_ascii_lowercase();
                let bytes = lower.as_bytes();
                let separator = |b: &u8| matches!(b, b'_' | b'-' | b'.' | b'~');
                // A prefix (`fw_`, `hawk.`, `sha256~`): letters and digits, then a
                // separator, and nothing a generic name would start with.
                if bytes.len() >= 3
                    && bytes[0].is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || separator(b))
                    && bytes[1..].iter().any(separator)
                {
                    provider_prefixes.insert(bytes.to_vec());
                }
            }
        }
        let longest_prefix = provider_prefixes.iter().map(Vec::len).max().unwrap_or(0);
        let specific = || rules.rules().iter().filter(|r| r.kind == Kind::Specific);
        // A provider's name is a keyword of its rules (any word of a name may begin with
        // one: `twilioAuthToken`).
        let provider_names: HashSet<Vec<u8>> = (specific().flat_map(|r| r.keywords.iter()))
            .map(|k| k.to_ascii_lowercase())
            .filter(|k| is_name(k))
            .filter(|k| !NOT_PROVIDER_NAMES.contains(&k.as_str()))
            .map(String::into_bytes)
            .collect();
        let provider_variables = provider_variables(specific());
        let checksum_rules = (rules.rules().iter().enumerate())
            .filter(|(_, r)| r.spec.checksum.is_some())
            .map(|(i, _)| i)
            .collect();
        Ok(Self {
            checksum_rules,
            provider_names,
            provider_variables,
            provider_prefixes,
            longest_prefix,
            rules,
            keywords,
            keyword_rules,
            allow,
            windowed: true,
            memoizable,
            longest_keyword,
            shortest_keyword,
            pairs,
        })
    }

    /// Whether a keyword found at `start` in a base (inside `copy`'s run) is found where
    /// the copy puts it, because the copy holds all that decided it: always, but for a
    /// keyword that begins words at the copy's first byte (the byte before it is
    /// another), unless both are at the start of their buffers.
    fn copied_whole(&self, start: usize, keyword: u32, copy: &Copied) -> bool {
        !self.keywords.begins_word[keyword as usize]
            || start > copy.from
            || (copy.from == 0 && copy.at == 0)
    }

    /// Whether some keyword holds `a` then `b`.
    fn pair(&self, a: u8, b: u8) -> bool {
        let bit = usize::from(a) << 8 | usize::from(b);
        self.pairs[bit >> 6] & (1 << (bit & 63)) != 0
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
        // For each rule, where its keywords occur: (start, end).
        let mut scratch = take_scratch();
        let rules = self.rules.rules();
        self.find_keywords(data, memo, &mut |start, end, keyword| {
            for &rule in &self.keyword_rules[keyword] {
                if rules[rule].followed_at(data, end) {
                    scratch.places.push(rule, (start, end));
                }
            }
        });
        self.scan_around(data, path, &mut scratch, hits, memo);
        return_scratch(scratch);
    }

    /// Calls `found(start, end, keyword)` for every keyword occurrence in `data`.
    fn find_keywords(
        &self,
        data: &[u8],
        memo: Option<&Memo>,
        found: &mut impl FnMut(usize, usize, usize),
    ) {
        match memo.filter(|_| self.memoizable) {
            Some(memo) => memo.places(&self.keywords, data, found),
            None => self.keywords.find(data, 0, data.len(), found),
        }
    }

    /// Every keyword occurrence in `data`; `None` for a buffer of 4 GiB or more.
    pub fn places(&self, data: &[u8], memo: Option<&Memo>) -> Option<Places> {
        u32::try_from(data.len()).ok()?;
        let mut all = Vec::new();
        // Spans fit in u32: the buffer does.
        self.find_keywords(data, memo, &mut |start, end, keyword| {
            all.push(Place {
                start: start as u32,
                end: end as u32,
                keyword: keyword as u32,
            });
        });
        all.sort_unstable();
        Some(Places(all.into()))
    }

    /// The places of `data`, the result of applying `delta` to a base of `base_len`
    /// bytes whose places are `base`: the base's that lie inside one run the delta
    /// copies, moved to where it copies them, and what a search finds around the bytes
    /// it inserts and the seams between copies from different places (as far as the
    /// longest keyword reaches). Exactly what [`Detector::places`] finds in `data`;
    /// `None` when the delta does not fit (or with a line break in a keyword).
    pub fn places_after(
        &self,
        base: &Places,
        base_len: usize,
        delta: &[u8],
        data: &[u8],
    ) -> Option<Places> {
        if !self.memoizable {
            return None;
        }
        let copies = crate::git::delta::copies(base_len, delta)?;
        self.places_copied(base, None, &copies, data)
    }

    fn places_copied(
        &self,
        base: &Places,
        index: Option<&Buckets>,
        copies: &[Copied],
        data: &[u8],
    ) -> Option<Places> {
        u32::try_from(data.len()).ok()?;
        let base = &base.0;
        let made;
        let index = match index {
            Some(index) => index,
            None => {
                let len = base.last().map_or(0, |p| p.start as usize + 1);
                made = Buckets::of(len, base.iter().map(|p| p.start as usize));
                &made
            }
        };
        let mut all: Vec<Place> = Vec::new();
        // A copy shorter than any keyword holds none.
        for copy in copies.iter().filter(|c| c.len >= self.shortest_keyword) {
            let (from, to) = (copy.from as u32, (copy.from + copy.len) as u32);
            let first = index.before(base, copy.from, |p| p.start as usize);
            for place in base[first..].iter().take_while(|p| p.start < to) {
                if place.end <= to && self.copied_whole(place.start as usize, place.keyword, copy) {
                    let moved = |at: u32| at - from + copy.at as u32;
                    all.push(Place {
                        start: moved(place.start),
                        end: moved(place.end),
                        keyword: place.keyword,
                    });
                }
            }
        }
        // What the delta changes: the bytes between copies (inserted) and the seams
        // where one copy meets another; a keyword touching them is searched afresh.
        let reach = self.longest_keyword.saturating_sub(1);
        let mut changed: Vec<(usize, usize)> = Vec::new();
        let mut at = 0;
        for copy in copies.iter().chain(std::iter::once(&Copied {
            at: data.len(),
            from: 0,
            len: 0,
        })) {
            // Inserted bytes before this copy, or the seam with the previous one. A
            // keyword not inside one copy holds an inserted byte or crosses from one
            // copy into what follows: it holds the two bytes on either side of the
            // edge it crosses, which must then be two bytes some keyword holds in a row.
            let crosses = |edge: usize| {
                edge > 0 && edge < data.len() && self.pair(data[edge - 1], data[edge])
            };
            let inserted = copy.at > at;
            let (left, right) = (crosses(at), inserted && crosses(copy.at));
            if inserted || left {
                let low = if left { at.saturating_sub(reach) } else { at };
                let high = if left || right {
                    (copy.at + reach).min(data.len())
                } else {
                    copy.at
                };
                match changed.last_mut() {
                    Some(last) if low <= last.1 => last.1 = last.1.max(high),
                    _ => changed.push((low, high)),
                }
            }
            at = copy.at + copy.len;
        }
        let mut fresh: Vec<Place> = Vec::new();
        // A keyword that begins words at the start of a copy was decided by a byte the
        // copy does not hold: it is looked for there afresh.
        let restarts = |copy: &Copied| !(copy.at == 0 && copy.from == 0);
        for copy in copies.iter().filter(|c| restarts(c)) {
            self.keywords.words_at(data, copy.at, &mut |end, keyword| {
                fresh.push(Place {
                    start: copy.at as u32,
                    end: end as u32,
                    keyword,
                });
            });
        }
        let mut hint = 0;
        for &(low, high) in &changed {
            self.keywords
                .find(data, low, high, &mut |start, end, keyword| {
                    let i = seek(copies, &mut hint, |c| c.at <= start);
                    let carried = i > 0 && {
                        let copy = &copies[i - 1];
                        end <= copy.at + copy.len
                            && self.copied_whole(start - copy.at + copy.from, keyword as u32, copy)
                    };
                    if !carried {
                        fresh.push(Place {
                            start: start as u32,
                            end: end as u32,
                            keyword: keyword as u32,
                        });
                    }
                });
        }
        // The copied places are in order already (copies are, and each copy's places).
        // A keyword that begins words at a copy's start may have been found twice.
        fresh.sort_unstable();
        fresh.dedup();
        let mut merged = Vec::with_capacity(all.len() + fresh.len());
        let (mut a, mut b) = (all.into_iter().peekable(), fresh.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some(place) => merged.push(place),
                None => break,
            }
        }
        debug_assert!(merged.is_sorted());
        Some(Places(merged.into()))
    }

    /// Detection over `data` kept for the deltas built on it; `base` is the base's and
    /// the delta that makes `data` of it, when `data` is one. Then a base's window that
    /// the delta copies whole, with everything its bounds and its checks read, and that
    /// no window around a keyword elsewhere meets, has the base's results; the rest is
    /// searched (as [`Detector::scan_remembering`] does). `None` for a buffer of 4 GiB
    /// or more (or keywords holding line breaks).
    pub fn see(
        &self,
        data: &[u8],
        base: Option<(&Seen, &[u8])>,
        memo: Option<&Memo>,
    ) -> Option<Seen> {
        if !self.memoizable {
            return None;
        }
        let copied = base.and_then(|(seen, delta)| {
            let copies = crate::git::delta::copies(seen.0.len, delta)?;
            let places =
                self.places_copied(&seen.0.places, Some(seen.0.place_index()), &copies, data)?;
            Some((&*seen.0, copies, places))
        });
        let (base, copies, places) = match copied {
            Some((base, copies, places)) => (Some(base), copies, places),
            None => (None, Vec::new(), self.places(data, memo)?),
        };
        let rules = self.rules.rules();
        let mut scratch = take_scratch();
        let Scratch {
            places: by_rule,
            carried,
            rules: touched,
        } = &mut *scratch;
        // A rule's keyword not followed as the rule says is no place of it: that reads
        // the keyword's line, which a base's window held whole holds too.
        for place in places.0.iter() {
            let (start, end) = (place.start as usize, place.end as usize);
            for &rule in &self.keyword_rules[place.keyword as usize] {
                if rules[rule].followed_at(data, end) {
                    by_rule.push(rule, (start, end));
                }
            }
        }
        // The base's windows that lie whole in one copy, rule by rule.
        if let Some(base) = base {
            // A window that read up to either end of the base is carried only to the same
            // end of the result.
            let at_edges = |read: (usize, usize), to: (usize, usize)| {
                (read.0 != 0 || to.0 == 0) && (read.1 != base.len || to.1 == data.len())
            };
            // A copy shorter than every window's reading holds none.
            for copy in copies.iter().filter(|c| c.len >= base.shortest_read) {
                let end = copy.from + copy.len;
                let shift = copy.at as isize - copy.from as isize;
                let moved = |at: usize| (at as isize + shift) as usize;
                let first = base
                    .window_index()
                    .before(&base.windows, copy.from, |w| w.span.read.0);
                for window in base.windows[first..]
                    .iter()
                    .take_while(|w| w.span.read.0 < end)
                {
                    let read = (moved(window.span.read.0), moved(window.span.read.1));
                    if window.windowed
                        && window.span.read.1 <= end
                        && at_edges(window.span.read, read)
                    {
                        carried.push(
                            window.rule,
                            Carried {
                                span: Span {
                                    from: moved(window.span.from),
                                    to: moved(window.span.to),
                                    read,
                                },
                                copy: (copy.at, copy.at + copy.len),
                                hits: window.hits,
                                shift,
                                kept: true,
                            },
                        );
                    }
                }
            }
        }
        let mut windows: Vec<Searched> = Vec::new();
        let mut hits: Vec<Hit> = Vec::new();
        let mut lines = Lines::default();
        let mut spans: Vec<Span> = Vec::new();
        let mut count = 0;
        touched.extend_from_slice(&by_rule.touched);
        touched.sort_unstable();
        for &index in touched.iter() {
            let places = &by_rule.lists[index];
            let rule = &rules[index];
            let Some(reach) = self.reach(rule, data.len()) else {
                let mut span = Span::whole(data.len());
                let first = hits.len();
                self.search(rule, index, data, &mut span, memo, &mut hits);
                windows.push(Searched {
                    rule: index,
                    span,
                    windowed: false,
                    hits: (first, hits.len()),
                });
                continue;
            };
            let carried = carried.list_mut(index);
            // Nearly in order already: copies are in order.
            carried.sort_by_key(|c| c.span.from);
            // Two of the base's windows that meet here (copied from different places)
            // are searched again.
            let mut furthest: Option<(usize, usize)> = None;
            for i in 0..carried.len() {
                if let Some((to, j)) = furthest
                    && carried[i].span.from <= to
                {
                    carried[i].kept = false;
                    carried[j].kept = false;
                }
                if furthest.is_none_or(|(to, _)| carried[i].span.to > to) {
                    furthest = Some((carried[i].span.to, i));
                }
            }
            // The places no kept window holds get windows of their own; a kept window
            // that one of those meets is searched again, with its places (after a few
            // rounds of that, every window is).
            for round in 0.. {
                spans.clear();
                // Places and windows are both in order: the window that may hold a
                // place is the last that starts by it.
                let mut k = 0;
                for &(start, end) in places {
                    while k < carried.len() && carried[k].span.from <= start {
                        k += 1;
                    }
                    let held = k > 0 && {
                        let c = &carried[k - 1];
                        c.kept && start < c.span.to && c.copy.0 <= start && end <= c.copy.1
                    };
                    if !held {
                        spans.push(self.window(reach, data, start, end, &mut lines));
                    }
                }
                spans.sort_unstable_by_key(|w| w.from);
                merge(&mut spans);
                let mut met = false;
                for c in carried.iter_mut().filter(|c| c.kept) {
                    let k = spans.partition_point(|w| w.to < c.span.from);
                    if spans[k..]
                        .iter()
                        .take_while(|w| w.from <= c.span.to)
                        .any(|w| w.meets(&c.span))
                    {
                        c.kept = false;
                        met = true;
                    }
                }
                if !met {
                    break;
                }
                if round == 3 {
                    carried.iter_mut().for_each(|c| c.kept = false);
                }
            }
            for c in carried.iter().filter(|c| c.kept) {
                let first = hits.len();
                let found = base.map_or(&[][..], |b| &b.hits[c.hits.0..c.hits.1]);
                hits.extend(found.iter().map(|hit| Hit {
                    start: (hit.start as isize + c.shift) as usize,
                    end: (hit.end as isize + c.shift) as usize,
                    rule: hit.rule,
                    escaped: hit.escaped,
                }));
                windows.push(Searched {
                    rule: index,
                    span: c.span,
                    windowed: true,
                    hits: (first, hits.len()),
                });
                count += 1;
            }
            for span in &mut spans {
                let first = hits.len();
                self.search(rule, index, data, span, memo, &mut hits);
                windows.push(Searched {
                    rule: index,
                    span: *span,
                    windowed: true,
                    hits: (first, hits.len()),
                });
            }
        }
        return_scratch(scratch);
        windows.sort_by_key(|w| w.span.read.0);
        let shortest_read = windows
            .iter()
            .filter(|w| w.windowed)
            .map(|w| w.span.read.1 - w.span.read.0)
            .min()
            .unwrap_or(usize::MAX);
        Some(Seen(Arc::new(SeenIn {
            len: data.len(),
            place_index: OnceLock::new(),
            window_index: OnceLock::new(),
            shortest_read,
            places,
            windows,
            hits,
            carried: count,
        })))
    }

    /// The hits of what [`Detector::see`] saw, as [`Detector::scan`] finds them in the
    /// same buffer at `path`, appended to `hits`.
    pub fn seen_hits(&self, seen: &Seen, path: Option<&str>, hits: &mut Vec<Hit>) {
        let first = hits.len();
        let lock_file = path.is_some_and(is_lock_file);
        let rules = self.rules.rules();
        hits.extend(
            seen.0
                .hits
                .iter()
                .filter(|hit| !(lock_file && rules[hit.rule].kind == Kind::Generic)),
        );
        hits[first..].sort_unstable();
        self.drop_shadowed(hits, first);
    }

    /// Runs each rule around its keywords' places (for each rule, the `(start, end)` of
    /// every place of one of its keywords) and keeps what passes.
    fn scan_around(
        &self,
        data: &[u8],
        path: Option<&str>,
        scratch: &mut Scratch,
        hits: &mut Vec<Hit>,
        memo: Option<&Memo>,
    ) {
        let first = hits.len();
        let lock_file = path.is_some_and(is_lock_file);
        let mut windows = Vec::new();
        let mut lines = Lines::default();
        scratch.rules.extend_from_slice(&scratch.places.touched);
        scratch.rules.sort_unstable();
        for &index in &scratch.rules {
            let rule = &self.rules.rules()[index];
            if lock_file && rule.kind == Kind::Generic {
                continue;
            }
            let places = &scratch.places.lists[index];
            self.search_windows(rule, data, places, &mut lines, &mut windows);
            for window in &mut windows {
                self.search(rule, index, data, window, memo, hits);
            }
        }
        hits[first..].sort_unstable();
        self.drop_shadowed(hits, first);
    }

    /// Every match of a rule holds one of its keywords, so a pattern whose matches have a
    /// bounded reach (see [`Reach`]) only needs searching around the keywords' places:
    /// each window reaches that far on both sides of a keyword, and ends at a line end
    /// so that `\b` and `$` see the real text. Unbounded patterns search the whole
    /// buffer. Each window also says which bytes its bounds were read from.
    fn search_windows(
        &self,
        rule: &Rule,
        data: &[u8],
        places: &[(usize, usize)],
        lines: &mut Lines,
        windows: &mut Vec<Span>,
    ) {
        windows.clear();
        let Some(reach) = self.reach(rule, data.len()) else {
            windows.push(Span::whole(data.len()));
            return;
        };
        for &(start, end) in places {
            windows.push(self.window(reach, data, start, end, lines));
        }
        windows.sort_unstable_by_key(|w| w.from);
        merge(windows);
    }

    /// How far a rule's matches reach from its keywords in a buffer of `len` bytes, when
    /// it is searched around them at all.
    fn reach(&self, rule: &Rule, len: usize) -> Option<Reach> {
        rule.reach.filter(|reach| {
            // A buffer worth cutting: well over what one window takes.
            let size = reach.bytes.or(reach.besides_space).unwrap_or(1024);
            self.windowed && len > 4 * size + 1024
        })
    }

    /// The window around one keyword (see [`Detector::search_windows`]).
    fn window(
        &self,
        reach: Reach,
        data: &[u8],
        start: usize,
        end: usize,
        lines: &mut Lines,
    ) -> Span {
        // Each measure bounds where a match around this keyword can start and end; the
        // window is what all of them allow.
        let (mut from, mut to) = (0, data.len());
        let mut read = (start, end);
        if let Some(n) = reach.bytes {
            from = from.max(end.saturating_sub(n));
            to = to.min(start + n);
        }
        if let Some(n) = reach.lines {
            // Read near the keyword, unless lines are long: then every line of the
            // buffer is listed once.
            let near = (lines.all.is_none())
                .then(|| {
                    Some((
                        after_content_lines_above(data, start, n + 1, from, NEAR_LINES)?,
                        before_content_lines_below(data, end, n + 1, to, NEAR_LINES)?,
                    ))
                })
                .flatten();
            match near {
                Some(((first, read_from), (last, (back, read_to)))) => {
                    from = from.max(first);
                    to = to.min(last);
                    read = (read.0.min(read_from).min(back), read.1.max(read_to));
                }
                None => {
                    let (first, last) = lines
                        .all
                        .get_or_insert_with(|| ContentLines::of(data))
                        .around(start, end, n, data.len());
                    from = from.max(first);
                    to = to.min(last);
                    read = (0, data.len());
                }
            }
        }
        // Counting white space is a walk byte by byte: only when no length bounds the
        // window, and within what the lines allow.
        if let (None, Some(n)) = (reach.bytes, reach.besides_space) {
            let (low, high) = (from.min(start), to.max(end));
            let back = within(data[low..end].iter().rev(), n);
            let ahead = within(data[start..high].iter(), n);
            from = from.max(end - back);
            to = to.min(start + ahead);
            // The byte that stopped each walk was read too.
            read = (
                read.0.min((end - back).saturating_sub(1).max(low)),
                read.1.max((start + ahead + 1).min(high)),
            );
        }
        let line_end = lines.end_of_line(data, to);
        // What a search of the window reads: the few bytes before it, and the line end.
        let read = (
            read.0.min(from).min(from.saturating_sub(CONTEXT)),
            read.1.max((line_end + 1).min(data.len())),
        );
        Span {
            from,
            to: line_end,
            read,
        }
    }

    /// Runs one rule over `data[from..to]`, with the text before `from` as context;
    /// widens `window.read` by what the checks read (the lines of the matches).
    fn search(
        &self,
        rule: &Rule,
        index: usize,
        data: &[u8],
        window: &mut Span,
        memo: Option<&Memo>,
        hits: &mut Vec<Hit>,
    ) {
        let (from, to) = (window.from, window.to);
        let mut found = Vec::new();
        match memo {
            Some(memo) => memo.candidates(index, data, from, to, &mut found, |out| {
                candidates(rule, data, from, to, out)
            }),
            None => candidates(rule, data, from, to, &mut found),
        }
        let mut line = Line::default();
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
            if self.accept(rule, index, data, (start, end), &mut window.read, &mut line) {
                hits.push(Hit {
                    start,
                    end,
                    rule: index,
                    escaped: memchr::memchr2(b'%', b'\\', &data[start..end]).is_some(),
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
                // Generic, JWT and URL detectors all defer to a provider's own format, and
                // to what decoding the same text found in it.
                let rank = |r: &Rule| match r.kind {
                    Kind::Specific => 3,
                    Kind::BasicAuth => 2,
                    Kind::Base64 | Kind::Hex | Kind::Percent | Kind::Escaped => 1,
                    Kind::Generic | Kind::Jwt | Kind::UrlCredentials => 0,
                };
                // Percent-encoded and escaped text is mostly written as itself: it stays
                // beside the other readings of the same text (what it finds where another
                // rule read escapes is that rule's: a URL whose password holds `%40`, see
                // `Context::detect`), and only the generic one defers to it.
                let spelled = |r: &Rule| matches!(r.kind, Kind::Percent | Kind::Escaped);
                match (spelled(rule), spelled(other_rule)) {
                    (true, false) => return false,
                    (false, true) => return rule.kind == Kind::Generic,
                    _ => {}
                }
                if rank(rule) < rank(other_rule) {
                    return true;
                }
                if rank(rule) == rank(other_rule)
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

    /// Whether `name` (the text before a value on its line) names a provider: one of
    /// its words (`ALGOLIA_ADMIN_KEY`, `mailgun.privateKey`) is a provider's name, or a
    /// long one begins one (`twilioAuthToken`). Passwords are a person's choice, which no
    /// provider's format describes: a name that says password names no provider.
    fn names_provider(&self, name: &[u8]) -> bool {
        let name = name.to_ascii_lowercase();
        let password = [&b"pass"[..], b"pwd"]
            .iter()
            .any(|w| name.windows(w.len()).any(|x| x == *w));
        if password {
            return false;
        }
        let variable = last_identifier(&name);
        (!variable.is_empty() && self.provider_variables.contains(&variable_key(variable)))
            || name
                .split(|b| !b.is_ascii_alphanumeric())
                .filter(|word| word.len() >= 4)
                .any(|word| {
                    self.provider_names.contains(word)
                        || (5..word.len()).any(|n| self.provider_names.contains(&word[..n]))
                })
    }

    /// Whether one of rule `index`'s keywords (its base64 fragments included) is in
    /// `data[start..end]` or shortly before it: what the search around keywords sees, so
    /// that a whole-buffer search finds no more.
    fn keyword_near(&self, index: usize, data: &[u8], start: usize, end: usize) -> bool {
        // On the run's own line: the search around keywords looks no further.
        let (from, _) = near_bounds(data, start, end, MAX_KEYWORD_GAP, 0);
        let mut near = false;
        self.keywords.find(data, from, end, &mut |_, _, keyword| {
            near |= self.keyword_rules[keyword].contains(&index);
        });
        near
    }

    /// What the rules find in encoded text `data[start..end]` (`kind` says how it is
    /// encoded) once decoded: its line is scanned again with the decoded text in place
    /// of the encoded, so that a name before it (`password: …`) still counts. Appends
    /// each secret found inside the decoded text, by rule and value, with the encoded
    /// text that holds it; text decoded from decoded text is followed up to
    /// [`decode::MAX_DEPTH`] deep.
    pub fn decoded(
        &self,
        kind: Kind,
        data: &[u8],
        (start, end): (usize, usize),
        found: &mut Vec<Decoded>,
    ) {
        let depth = DECODE_DEPTH.with(std::cell::Cell::get);
        if depth >= decode::MAX_DEPTH {
            return;
        }
        let encoded = &data[start..end];
        let (text, spelled) = match kind {
            Kind::Base64 => (decode::base64_text(encoded), None),
            Kind::Hex => (decode::hex_text(encoded), None),
            Kind::Percent => match decode::percent_text(encoded) {
                Some(s) => (None, Some(s)),
                None => return,
            },
            Kind::Escaped => match decode::unescape_text(encoded) {
                Some(s) => (None, Some(s)),
                None => return,
            },
            _ => return,
        };
        let Some(text) = text.as_deref().or(spelled.as_ref().map(|s| &s.text[..])) else {
            return;
        };
        // The name before the text and the quote after it, not the whole line: a line
        // of many encoded values must not be scanned again once per value.
        let (before, after) = decode_context(data, start, end);
        let mut line = Vec::with_capacity(start - before + text.len() + after - end);
        line.extend_from_slice(&data[before..start]);
        let (from, to) = (line.len(), line.len() + text.len());
        line.extend_from_slice(text);
        line.extend_from_slice(&data[end..after]);
        // Where the decoded bytes `a..b` (in `line`) are written in `data`.
        let source = |a: usize, b: usize| -> (usize, usize) {
            let (a, b) = (a.clamp(from, to) - from, b.clamp(from, to) - from);
            match &spelled {
                Some(spelled) => {
                    let (x, y) = spelled.source(a, b);
                    (start + x, start + y)
                }
                None => (start, end),
            }
        };
        DECODE_DEPTH.with(|d| d.set(depth + 1));
        let mut hits = Vec::new();
        self.scan(&line, None, &mut hits);
        for hit in hits {
            if hit.end <= from || hit.start >= to {
                continue;
            }
            let inner = self.rules.rules()[hit.rule].kind;
            if inner.encoding().is_some() {
                let first = found.len();
                self.decoded(inner, &line, (hit.start, hit.end), found);
                for nested in &mut found[first..] {
                    nested.span = source(nested.span.0, nested.span.1);
                }
                continue;
            }
            let span = source(hit.start, hit.end);
            found.push(Decoded {
                rule: hit.rule,
                value: line[hit.start..hit.end].to_vec(),
                span,
            });
        }
        DECODE_DEPTH.with(|d| d.set(depth));
    }

    /// Whether a match passes the checks; widens `read` by the bytes they read beyond
    /// the match (its line).
    fn accept(
        &self,
        rule: &Rule,
        index: usize,
        data: &[u8],
        (start, end): (usize, usize),
        read: &mut (usize, usize),
        line: &mut Line,
    ) -> bool {
        // The line of the match, found once for the matches on it.
        let (line_start, line_end) = match line.bounds {
            Some((from, to)) if from <= start && end <= to => (from, to),
            _ => {
                let bounds = line_bounds(data, start, end);
                *line = Line {
                    bounds: Some(bounds),
                    allowed: None,
                };
                bounds
            }
        };
        // Every check reads at most the match's line, the line breaks that end it
        // included; what was read decides a refusal as much as an acceptance.
        *read = (
            read.0.min(line_start.saturating_sub(1)),
            read.1.max((line_end + 1).min(data.len())),
        );
        if !self.check(rule, index, data, start, end) {
            return false;
        }
        if let Some(lines) = (rule.parts.iter().filter(|p| p.required))
            .map(|p| p.lines)
            .max()
        {
            let (from, to) = lines_around(data, start, end, lines);
            *read = (
                read.0.min(from.saturating_sub(1)),
                read.1.max((to + 1).min(data.len())),
            );
            let found = self.parts(rule, data, start, end);
            if found
                .iter()
                .zip(&rule.parts)
                .any(|(at, part)| part.required && at.is_none())
            {
                return false;
            }
        }
        let allowed = *line.allowed.get_or_insert_with(|| {
            data[line_start..line_end]
                .windows(INLINE_ALLOW.len())
                .any(|w| w == INLINE_ALLOW.as_bytes())
        });
        !allowed
    }

    /// Where each of `rule`'s parts is for its secret at `start..end`: the match nearest
    /// to it within the part's lines (never overlapping it), or `None`.
    pub(crate) fn parts(
        &self,
        rule: &Rule,
        data: &[u8],
        start: usize,
        end: usize,
    ) -> Vec<Option<(usize, usize)>> {
        (rule.parts.iter())
            .map(|part| {
                let (from, to) = lines_around(data, start, end, part.lines);
                let distance = |&(a, b): &(usize, usize)| match b <= start {
                    true => start - b,
                    false => a - end,
                };
                (part.regex.captures_iter(&data[from..to]))
                    .filter_map(|c| c.get(part.group))
                    .map(|m| (from + m.start(), from + m.end()))
                    .filter(|&(a, b)| a < b && (b <= start || a >= end))
                    .filter(|&(a, b)| !is_placeholder(&String::from_utf8_lossy(&data[a..b])))
                    .min_by_key(distance)
            })
            .collect()
    }

    /// [`Detector::accept`]'s checks.
    fn check(&self, rule: &Rule, index: usize, data: &[u8], start: usize, end: usize) -> bool {
        let value = &data[start..end];
        // A value need not be UTF-8 (a rule may match any bytes); the text checks read it
        // with invalid sequences replaced.
        let text = String::from_utf8_lossy(value);
        let text = text.as_ref();
        // Encoded text is judged by what it decodes to (a URL at `example.com` may hold
        // a real key in its query).
        if text.trim().is_empty() || (rule.kind.encoding().is_none() && is_placeholder(text)) {
            return false;
        }
        if let Some(floor) = rule.entropy
            && shannon_entropy(value) < floor
        {
            return false;
        }
        if let Some(checksum) = rule.spec.checksum
            && !checksum.holds(value)
        {
            return false;
        }
        match rule.kind {
            Kind::Specific | Kind::UrlCredentials => {}
            Kind::Generic => {
                // A value in a provider's format that the provider's own rule refused
                // (a `ghp_` token of the wrong length or checksum) is a near miss.
                let head = value[..value.len().min(self.longest_prefix)].to_ascii_lowercase();
                if !plausible_generic_value(text)
                    || (3..=head.len()).any(|n| self.provider_prefixes.contains(&head[..n]))
                {
                    return false;
                }
                // So is a value in the shape of a format with a checksum that fails it (a
                // WIF key or an `xprv` with a wrong check digit).
                let checked = (self.checksum_rules.iter()).any(|&i| {
                    let other = &self.rules.rules()[i];
                    let whole = (other.regex().and_then(|re| re.captures(value)))
                        .and_then(|c| c.get(other.secret_group))
                        .is_some_and(|m| m.start() == 0 && m.end() == value.len());
                    whole && other.spec.checksum.is_some_and(|c| !c.holds(value))
                });
                if checked {
                    return false;
                }
                // So is a key assigned to a provider's name (`ALGOLIA_ADMIN_KEY=…` of
                // the wrong length): the provider's rule knows its format. A password
                // is a person's choice, which no provider's format describes.
                let (name_start, _) = near_bounds(data, start, end, MAX_NAME, 0);
                let name = &data[name_start..start];
                if self.names_provider(name) {
                    return false;
                }
            }
            Kind::Jwt => {
                if !plausible_jwt(text) {
                    return false;
                }
            }
            Kind::BasicAuth => match decode::basic_credentials(value) {
                Some((user, password)) => {
                    if !plausible_url_password(Some(&user), &password) {
                        return false;
                    }
                }
                None => return false,
            },
            Kind::Base64 | Kind::Hex | Kind::Percent | Kind::Escaped => {
                if !self.keyword_near(index, data, start, end) {
                    return false;
                }
                let mut found = Vec::new();
                self.decoded(rule.kind, data, (start, end), &mut found);
                if found.is_empty() {
                    return false;
                }
            }
        }
        if self.allow.values.contains(value)
            || self.allow.value_patterns.iter().any(|p| p.is_match(value))
        {
            return false;
        }
        true
    }
}

/// How `keyword` (lowercase) is written where the examples hold it (`AKIA`, `AIza`),
/// or as given when they do not.
fn written_forms(keyword: &str, examples: &[String]) -> Vec<Vec<u8>> {
    let needle = keyword.as_bytes();
    let mut forms: Vec<Vec<u8>> = Vec::new();
    for example in examples {
        let bytes = example.as_bytes();
        let found = (bytes.windows(needle.len()))
            .find(|w| w.eq_ignore_ascii_case(needle))
            .map(<[u8]>::to_vec);
        if let Some(form) = found
            && !forms.contains(&form)
        {
            forms.push(form);
        }
    }
    if forms.is_empty() {
        forms.push(needle.to_vec());
    }
    forms
}

/// What a rule's pattern matches in `data[from..to]` (with the text before `from` as
/// context), before any check: each secret's span and, for URL credentials, the user's.
/// Depends on the window's bytes and the few before it only (see [`Memo::candidates`]).
fn candidates(rule: &Rule, data: &[u8], from: usize, to: usize, out: &mut Vec<Candidate>) {
    let Some(regex) = rule.regex() else {
        return;
    };
    let haystack = &data[..to];
    let mut at = from;
    while at <= to {
        let Some(captures) = regex.captures_at(haystack, at) else {
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

/// What the windows of one buffer learn of its lines, for the next window.
#[derive(Default)]
struct Lines {
    /// Every content line, once reading near keywords proved too long (see
    /// [`NEAR_LINES`]).
    all: Option<ContentLines>,
    /// The last line end found: no line break in `end.0..end.1`.
    end: Option<(usize, usize)>,
}

impl Lines {
    /// The first line break at or after `at`, or the buffer's end.
    fn end_of_line(&mut self, data: &[u8], at: usize) -> usize {
        if let Some((from, end)) = self.end
            && from <= at
            && at <= end
        {
            return end;
        }
        let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |i| at + i);
        self.end = Some((at, end));
        end
    }
}

/// Bytes read around a keyword to find the content lines near it before every line of
/// the buffer is listed instead (see [`ContentLines`]): a buffer of long lines and many
/// keywords would otherwise be read over and over.
const NEAR_LINES: usize = 4096;

/// Where a match holding a keyword that starts at `at` and touching at most `n - 1`
/// lines above the keyword's that hold anything but white space can start: after the
/// last byte that is not white space of the `n`th such line above the keyword's (the
/// keyword's being the last such line that starts by `at`), or at `floor` when that lies
/// before `floor` (a bound already known) or there is no such line. Reads back from `at`
/// no further than `floor`, and `None` when that is more than `budget` bytes and the
/// line is not found within them. With the answer: where reading stopped.
fn after_content_lines_above(
    data: &[u8],
    at: usize,
    n: usize,
    floor: usize,
    budget: usize,
) -> Option<(usize, usize)> {
    // The keyword's line counts as the first, then each line above with content.
    let mut wanted = n + 1;
    // Only what lies before `at` on its own line can make it the keyword's line.
    let mut end = (at + 1).min(data.len());
    let stop = floor.max(end.saturating_sub(budget));
    while end > stop {
        let start = memchr::memrchr(b'\n', &data[stop..end]).map_or(stop, |i| stop + i + 1);
        if let Some(last) = data[start..end].iter().rposition(|&b| !is_space(b)) {
            wanted -= 1;
            if wanted == 0 {
                // The line break before the line was read, unless the line is the first.
                return Some((start + last + 1, start.saturating_sub(1)));
            }
        }
        if start == stop {
            break;
        }
        end = start - 1;
    }
    (stop == floor).then_some((floor, floor))
}

/// Where a match holding a keyword that ends at `end` and touching at most `n - 1` lines
/// below the keyword's that hold anything but white space can end: before the first
/// byte that is not white space of the `n`th line that starts (its first such byte)
/// after the keyword's last byte, or at `ceiling` when that lies beyond `ceiling` or
/// there is no such line. Reads no further than `ceiling`, and `None` when that is
/// more than `budget` bytes (either way) and the line is not found within them. With the
/// answer: the first and the end of the bytes read.
fn before_content_lines_below(
    data: &[u8],
    end: usize,
    n: usize,
    ceiling: usize,
    budget: usize,
) -> Option<(usize, (usize, usize))> {
    let ceiling = ceiling.min(data.len());
    let mut wanted = n;
    // The keyword's own line counts only when nothing but white space comes before the
    // keyword's last byte on it.
    let mut before = data[..end].iter().rev();
    let blank_before = loop {
        match before.next() {
            Some(b'\n') | None => break true,
            Some(&b) if !is_space(b) => break false,
            Some(_) if end - before.len() > budget => return None,
            Some(_) => {}
        }
    };
    // Where that walk stopped (it read the byte that stopped it).
    let back = before.len();
    let from = end.min(ceiling);
    let stop = ceiling.min(from.saturating_add(budget));
    let mut at = if blank_before {
        from
    } else {
        memchr::memchr(b'\n', &data[from..stop]).map_or(stop, |i| from + i + 1)
    };
    while at < stop {
        let line_end = memchr::memchr(b'\n', &data[at..stop]).map_or(stop, |i| at + i);
        if let Some(first) = data[at..line_end].iter().position(|&b| !is_space(b)) {
            wanted -= 1;
            if wanted == 0 {
                return Some((at + first, (back, at + first + 1)));
            }
        }
        at = line_end + 1;
    }
    (stop == ceiling).then_some((ceiling, (back, stop)))
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

/// Where the whole line (or lines) around a span starts and ends.
/// Where the text around `data[start..end]` on its line begins and ends, reading at
/// most `before` bytes back and `after` bytes on: a check that needs only that much of
/// a long line must not read all of it for each match.
fn near_bounds(
    data: &[u8],
    start: usize,
    end: usize,
    before: usize,
    after: usize,
) -> (usize, usize) {
    let low = start.saturating_sub(before);
    let high = end.saturating_add(after).min(data.len());
    let from = memchr::memrchr(b'\n', &data[low..start]).map_or(low, |i| low + i + 1);
    let to = memchr::memchr(b'\n', &data[end..high]).map_or(high, |i| end + i);
    (from, to)
}

fn line_bounds(data: &[u8], start: usize, end: usize) -> (usize, usize) {
    let from = memchr::memrchr(b'\n', &data[..start]).map_or(0, |i| i + 1);
    let to = memchr::memchr(b'\n', &data[end..]).map_or(data.len(), |i| end + i);
    (from, to)
}

/// Words that name no provider, whatever variable they are in.
const GENERIC_NAME_WORDS: &[&str] = &[
    "access",
    "account",
    "admin",
    "api",
    "app",
    "application",
    "auth",
    "bearer",
    "client",
    "config",
    "credential",
    "credentials",
    "default",
    "dev",
    "env",
    "export",
    "id",
    "key",
    "keys",
    "live",
    "master",
    "pass",
    "password",
    "private",
    "prod",
    "public",
    "pwd",
    "secret",
    "server",
    "service",
    "set",
    "signing",
    "test",
    "token",
    "url",
    "user",
    "value",
    "webhook",
];

/// The identifier that ends `text` once the quotes, spaces and assignment signs after
/// it are dropped: `ASSEMBLYAI_API_KEY` of `export ASSEMBLYAI_API_KEY="`.
fn last_identifier(text: &[u8]) -> &[u8] {
    let end = text
        .iter()
        .rposition(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        .map_or(0, |i| i + 1);
    let start = text[..end]
        .iter()
        .rposition(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        .map_or(0, |i| i + 1);
    &text[start..end]
}

/// The words of a name, lowercase: split at separators and where a lowercase letter
/// meets an uppercase one (`clientSecret`, `ApiKey`).
fn name_words(name: &[u8]) -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> = vec![Vec::new()];
    let mut previous = b' ';
    for &b in name {
        let boundary =
            !b.is_ascii_alphanumeric() || (previous.is_ascii_lowercase() && b.is_ascii_uppercase());
        if boundary && words.last().is_some_and(|w| !w.is_empty()) {
            words.push(Vec::new());
        }
        if b.is_ascii_alphanumeric()
            && let Some(word) = words.last_mut()
        {
            word.push(b.to_ascii_lowercase());
        }
        previous = b;
    }
    words.retain(|w| !w.is_empty());
    words
}

/// Whether `word` is [`GENERIC_NAME_WORDS`] run together (`apikey`, `clientsecret`).
fn generic_words(word: &[u8]) -> bool {
    // ends[i]: word[..i] splits into generic words.
    let mut ends = vec![false; word.len() + 1];
    ends[0] = true;
    for i in 0..word.len() {
        if !ends[i] {
            continue;
        }
        for g in GENERIC_NAME_WORDS {
            if word[i..].starts_with(g.as_bytes()) {
                ends[i + g.len()] = true;
            }
        }
    }
    ends[word.len()]
}

/// A variable's name as compared: lowercase letters and digits only.
fn variable_key(name: &[u8]) -> Vec<u8> {
    (name.iter())
        .filter(|b| b.is_ascii_alphanumeric())
        .map(u8::to_ascii_lowercase)
        .collect()
}

/// Whether a keyword or word can be a provider's name: 4 or more lowercase letters and
/// digits, a letter among them.
fn is_name(word: &str) -> bool {
    word.len() >= 4
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && word.bytes().any(|b| b.is_ascii_lowercase())
}

/// The variables that providers' rules' examples assign their tokens to, compared whole
/// (`ASSEMBLYAI_API_KEY`, `OPENAI_API_KEY`), when a word of the variable says more than
/// what any code calls a credential (`API_KEY`, `SESSION_TOKEN`, `Authorization`).
fn provider_variables<'a>(rules: impl Iterator<Item = &'a Rule>) -> HashSet<Vec<u8>> {
    let mut variables = HashSet::new();
    for line in rules
        .flat_map(|r| &r.spec().examples)
        .flat_map(|e| e.lines())
    {
        let Some(at) = line.find(['=', ':']) else {
            continue;
        };
        let name = last_identifier(&line.as_bytes()[..at]);
        let own_word = name_words(name).iter().any(|w| {
            w.len() >= 3
                && !generic_words(w)
                && !COMMON_NAME_WORDS
                    .iter()
                    .any(|c| c.as_bytes() == w.as_slice())
        });
        if own_word {
            variables.insert(variable_key(name));
        }
    }
    variables
}

/// Words that many programs' credential variables hold, whatever provider they are for.
const COMMON_NAME_WORDS: &[&str] = &[
    "authorization",
    "bearer",
    "bot",
    "database",
    "header",
    "headers",
    "login",
    "oauth",
    "refresh",
    "registry",
    "session",
    "smtp",
    "web",
];

/// How far a part may be from its secret in bytes, whatever its lines' length.
const MAX_PART_DISTANCE: usize = 4096;

/// `data[start..end]` widened to `lines` whole lines above and below (within
/// [`MAX_PART_DISTANCE`] bytes).
fn lines_around(data: &[u8], start: usize, end: usize, lines: u32) -> (usize, usize) {
    // Line breaks are looked for within the distance only: a 10 MB line is not read
    // once per candidate on it.
    let floor = start.saturating_sub(MAX_PART_DISTANCE);
    let ceiling = end.saturating_add(MAX_PART_DISTANCE).min(data.len());
    // The start of the line holding the byte before `at`, and the end of the line
    // holding `at`.
    let back =
        |at: usize| memchr::memrchr(b'\n', &data[floor..at]).map_or(floor, |i| floor + i + 1);
    let ahead = |at: usize| memchr::memchr(b'\n', &data[at..ceiling]).map_or(ceiling, |i| at + i);
    let (mut from, mut to) = (back(start), ahead(end));
    for _ in 0..lines {
        if from > floor {
            from = back(from - 1);
        }
        if to < ceiling {
            to = ahead(to + 1);
        }
    }
    (from, to)
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
    // Long and random (a Django `SECRET_KEY` drawn from `!@#$%^&*(-_=+)`): a secret
    // however much punctuation it holds, unless it is a template.
    let template = ["${", "{{", "%(", "%s", "#{"]
        .iter()
        .any(|t| value.contains(t));
    let random = bytes.len() >= 24 && shannon_entropy(bytes) >= 4.2 && !template;
    // A `%` before a format letter, where a format string has one (at the start or
    // after a separator: `%s`, `user:%s@`), or a call's brackets: code, not a value. A
    // `%r` inside a run of letters and digits is a password's.
    let format = (0..bytes.len().saturating_sub(1)).any(|i| {
        bytes[i] == b'%'
            && b"sdifxoqvr(%".contains(&bytes[i + 1])
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
    });
    if !random && (format || bytes.iter().any(|b| b"()[]{}$\\".contains(b))) {
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
    if !random
        && (value.contains("::")
            || value.starts_with([':', '=', '&', '*', '!', '|', '?', '#', '@']))
    {
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
        assert!(!is_placeholder("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"));
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

    #[test]
    fn a_name_names_a_provider_only_by_a_whole_word_or_a_long_prefix() {
        let detector = detector();
        for named in [
            "ALGOLIA_ADMIN_KEY=",
            "  mailgun.privateKey: ",
            "twilioAuthToken = ",
            // By the first word of a rule's name, and by a variable a rule's examples
            // assign its tokens to.
            "ASSEMBLYAI_API_KEY=",
            "export OPENAI_API_KEY=\"",
        ] {
            assert!(detector.names_provider(named.as_bytes()), "{named}");
        }
        for unnamed in [
            "ATTACHMENT_TOKEN=",
            "VAPID_PRIVATE_KEY=",
            "DB_PASSWORD=",
            "ALGOLIA_DB_PASSWORD=",
            "api_key = ",
            "  client_secret: ",
            "<ApiKey>",
        ] {
            assert!(!detector.names_provider(unnamed.as_bytes()), "{unnamed}");
        }
        // A key of the wrong length under a provider's name is that provider's to judge;
        // the same value under a name of no provider is a generic secret.
        let mut hits = Vec::new();
        detector.scan(
            b"ALGOLIA_ADMIN_KEY=634a097bafe0089728ee9207\n",
            None,
            &mut hits,
        );
        assert!(hits.is_empty(), "{hits:?}");
        detector.scan(
            b"ATTACHMENT_TOKEN=634a097bafe0089728ee9207\n",
            None,
            &mut hits,
        );
        assert_eq!(hits.len(), 1);
    }

    /// The ids of the rules that report something in `text`.
    fn rule_ids(detector: &Detector, text: &str) -> Vec<String> {
        let mut hits = Vec::new();
        detector.scan(text.as_bytes(), None, &mut hits);
        (hits.iter())
            .map(|h| detector.rules()[h.rule].id.clone())
            .collect()
    }

    #[test]
    fn a_value_in_a_checksummed_format_that_fails_its_checksum_is_no_generic_secret() {
        let detector = detector();
        let rule_of = |text: &str| rule_ids(&detector, text);
        let valid = "L2Uy7KK4eC4yHuHc8SXdwTn2rBYambufkU6hK1hFH22Fa2KsABYE";
        assert_eq!(
            rule_of(&format!("BTC_PRIVATE_KEY={valid}\n")),
            ["bitcoin-wif-private-key"]
        );
        // One character changed: the check digits fail, and no rule reports it.
        let broken = valid.replace("SXdw", "SXdx");
        assert_eq!(
            rule_of(&format!("BTC_PRIVATE_KEY={broken}\n")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_context_part_is_required_near_the_secret_and_never_reported() {
        let detector = detector();
        let rules_of = |text: &str| rule_ids(&detector, text);
        let key = "appKey: 3f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3f5a";
        let under =
            |section: &str, gap: usize| format!("{section}:\n{}  {key}\n", "  x: 1\n".repeat(gap));
        assert_eq!(
            rules_of(&under("datadog", 0)),
            ["datadog-application-key-in-section"]
        );
        assert_eq!(
            rules_of(&under("datadog", 4)),
            ["datadog-application-key-in-section"]
        );
        // Too far from its section, or in another provider's: not this rule's.
        assert!(rules_of(&under("datadog", 6)).is_empty());
        assert!(rules_of(&under("firebase", 0)).is_empty());
        let rule = (detector.rules().iter())
            .find(|r| r.id == "datadog-application-key-in-section")
            .expect("shipped");
        let data = under("datadog", 0);
        let at = data.find("3f9a").expect("key");
        let parts = detector.parts(rule, data.as_bytes(), at, at + 40);
        assert!(parts[0].is_some() && rule.parts[0].context);
    }

    #[test]
    fn a_line_of_many_encoded_values_is_decoded_once_per_value() {
        use base64::Engine as _;
        // 20 000 base64 values on one line, each after a secret-like name: each is
        // decoded with its name, never with the whole line (which would take hours).
        let value = base64::engine::general_purpose::STANDARD.encode("just some text here");
        let mut line = String::from("{");
        for i in 0..20_000 {
            line.push_str(&format!("\"a{i}_token\":\"{value}\","));
        }
        line.push_str("\"last\":1}\n");
        let detector = detector();
        let mut hits = Vec::new();
        detector.scan(line.as_bytes(), None, &mut hits);
        // The encoded values themselves, under secret-like names: nothing decoded.
        assert_eq!(hits.len(), 20_000);
        assert!((hits.iter()).all(|h| detector.rules()[h.rule].id == "generic-secret-assignment"));
    }

    /// Every rule's examples and negatives.
    fn examples_and_negatives(detector: &Detector) -> Vec<&String> {
        detector
            .rules()
            .iter()
            .flat_map(|r| r.spec().examples.iter().chain(&r.spec().negatives))
            .collect()
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
        let examples = examples_and_negatives(&windowed);
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
            .chain(b"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".iter().copied())
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
        let examples = examples_and_negatives(&detector);
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
    fn seeking_from_a_hint_or_a_bucket_finds_what_a_binary_search_finds() {
        let mut rng = Rng(0x5EE4_0000_0000_0001);
        for _ in 0..2000 {
            let mut items: Vec<usize> = (0..rng.below(40)).map(|_| rng.below(100)).collect();
            items.sort_unstable();
            let value = rng.below(110);
            let mut hint = rng.below(items.len() + 3);
            let found = seek(&items, &mut hint, |&x| x < value);
            assert_eq!(
                found,
                items.partition_point(|&x| x < value),
                "{items:?} {value}"
            );
            assert_eq!(hint, found);
            // Positions indexed by their buckets give the same.
            let positions: Vec<usize> = items.iter().map(|&x| x * 37).collect();
            let buckets = Buckets::of(110 * 37, positions.iter().copied());
            let at = value * 37 + rng.below(37);
            assert_eq!(
                buckets.before(&positions, at, |&x| x),
                positions.partition_point(|&x| x < at)
            );
        }
    }

    /// What the content-line bounds must be: from every content line's first and last
    /// byte that are not white space, listed for the whole buffer.
    fn content_line_bounds(data: &[u8], start: usize, end: usize, n: usize) -> (usize, usize) {
        let mut spans = Vec::new();
        let mut at = 0;
        for line in data.split(|&b| b == b'\n') {
            if let Some(first) = line.iter().position(|&b| !is_space(b)) {
                let last = line.iter().rposition(|&b| !is_space(b)).unwrap_or(first);
                spans.push((at + first, at + last + 1));
            }
            at += line.len() + 1;
        }
        let index = |at: usize| {
            spans
                .partition_point(|&(first, _)| first <= at)
                .saturating_sub(1)
        };
        let above = index(start).checked_sub(n + 1);
        let below = index(end - 1) + n + 1;
        (
            above.map_or(0, |k| spans[k].1),
            spans.get(below).map_or(data.len(), |&(first, _)| first),
        )
    }

    #[test]
    fn content_lines_around_a_keyword_are_found_by_reading_only_near_it() {
        let mut rng = Rng(0xC0FF_EE00_1234_5678);
        let mut data = Vec::new();
        for _ in 0..3000 {
            match rng.below(5) {
                0 => data.extend_from_slice(b"   \t"),
                1 => data.extend_from_slice(b"let x = 1;"),
                2 => data.extend_from_slice(b"\r"),
                _ => data.extend_from_slice(b"  word"),
            }
            data.push(b'\n');
        }
        let lines = ContentLines::of(&data);
        for _ in 0..20_000 {
            let start = rng.below(data.len());
            let end = (start + 1 + rng.below(6)).min(data.len());
            let n = rng.below(4);
            let (low, high) = content_line_bounds(&data, start, end, n);
            // With a bound already known on either side, or none.
            let floor = if rng.below(2) == 0 {
                0
            } else {
                start.saturating_sub(rng.below(200))
            };
            let ceiling = if rng.below(2) == 0 {
                data.len()
            } else {
                end + rng.below(200)
            };
            // Read near the keyword, or not at all when the budget is short.
            for budget in [usize::MAX, 64] {
                let above =
                    after_content_lines_above(&data, start, n + 1, floor, budget).map(|a| a.0);
                let below =
                    before_content_lines_below(&data, end, n + 1, ceiling, budget).map(|b| b.0);
                if budget == usize::MAX {
                    assert!(above.is_some() && below.is_some());
                }
                if let Some(above) = above {
                    assert_eq!(above, low.max(floor), "above {start} {n} {floor}");
                }
                if let Some(below) = below {
                    let expected = high.min(ceiling).min(data.len());
                    assert_eq!(below, expected, "below {end} {n} {ceiling}");
                }
            }
            // The whole buffer's lines, listed once, say the same.
            assert_eq!(lines.around(start, end, n, data.len()), (low, high));
        }
        assert_eq!(
            after_content_lines_above(b"   \n\n", 2, 1, 0, 64),
            Some((0, 0))
        );
        assert_eq!(
            before_content_lines_below(b"a\n  \n", 1, 1, 5, 64),
            Some((5, (0, 5)))
        );
        assert_eq!(
            before_content_lines_below(b"a\n  \n b", 1, 1, 8, 64),
            Some((6, (0, 7)))
        );
        // Long white space before a keyword's end is a long read too.
        let spaces = [b' '; 100];
        assert_eq!(before_content_lines_below(&spaces, 100, 1, 100, 64), None);
    }

    /// A keyword search of a delta's result, found from its base's, finds exactly what
    /// a search of the whole result finds, and the scan then finds the same secrets:
    /// over versions of a file that insert, delete and move lines (moved lines are
    /// copied from elsewhere in the base, which makes seams between copies).
    #[test]
    fn keywords_found_from_a_base_and_a_delta_are_those_of_a_whole_search() {
        let filler = [
            "fn main() {",
            "password = load()",
            "  // api key",
            "}",
            "tok",
            "en",
        ];
        places_after_deltas_are_those_of_whole_searches(
            &detector(),
            &filler,
            0x0DE1_7A00_2026_1207,
        );
    }

    /// The same, for keywords that match case, begin words or are followed by a given
    /// text: what decides them (the byte before a keyword, the rest of its line) moves
    /// with the seams between copies.
    #[test]
    fn keywords_that_match_case_begin_words_or_are_followed_are_found_from_a_base_and_a_delta() {
        let mut rules = RuleSet::default();
        rules
            .add_file(
                "test",
                r#"
category = "test"

[[rules]]
id = "test-word-key"
name = "Test key after a name that begins a word"
keywords = ["dd", "acme"]
keywords_begin_words = true
pattern = '''(?i:(?:\b|_)(?:dd|acme)[_-]?key)\s*=\s*(?P<secret>[0-9a-f]{32})\b'''
examples = ["dd_key = 3f9a0c6e1b7d2e4f8a5c9b0d1e2f3a4b", "ACME-KEY=4b3a2f1e0d9b8c7a6f5e4d3c2b1a0f9e"]
negatives = ["add_key = 3f9a0c6e1b7d2e4f8a5c9b0d1e2f3a4b", "xacme_key = 4b3a2f1e0d9b8c7a6f5e4d3c2b1a0f9e"]

[[rules]]
id = "test-case-key"
name = "Test key with a capital prefix"
keywords = ["SK"]
keywords_match_case = true
keywords_begin_words = true
pattern = '''\b(?P<secret>SK[0-9a-f]{32})\b'''
examples = ["SK3f9a0c6e1b7d2e4f8a5c9b0d1e2f3a4b", "key: SK4b3a2f1e0d9b8c7a6f5e4d3c2b1a0f9e"]
negatives = ["sk3f9a0c6e1b7d2e4f8a5c9b0d1e2f3a4b", "TASK4b3a2f1e0d9b8c7a6f5e4d3c2b1a0f9e"]

[[rules]]
id = "test-url-password"
name = "Test password in a URL"
keywords = ["://"]
followed_by = '''[a-z]{1,16}:[a-z0-9]{8,24}@'''
pattern = '''\b[a-z]{2,8}://[a-z]{1,16}:(?P<secret>[a-z0-9]{8,24})@[a-z]{2,20}'''
examples = ["https://bob:k3x9q7m2p4@host", "see redis://ann:w8e5r1t6y2u9@cache"]
negatives = ["https://bob@host", "https://host/k3x9q7m2p4@x"]
"#,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            super::super::rules::check_examples(&rules, true),
            Vec::<String>::new()
        );
        let detector = Detector::new(rules, Allowlist::default()).unwrap_or_else(|e| panic!("{e}"));
        let filler = [
            "address",
            "add",
            "dd",
            "_key = 0123456789abcdef0123456789abcdef",
            "task",
            "sk",
            "SK",
            "x",
            " ",
            "acme",
            "Acme",
            "-key=fedcba9876543210fedcba9876543210",
            "TA",
            "https://",
            "ftp://",
            "bob",
            "bob:",
            "k3x9q7m2p4",
            "@host",
            "/path",
            ":",
        ];
        places_after_deltas_are_those_of_whole_searches(&detector, &filler, 0x5EED_0C45);
    }

    fn places_after_deltas_are_those_of_whole_searches(
        detector: &Detector,
        filler: &[&str],
        seed: u64,
    ) {
        let memo = Memo::default();
        let examples = examples_and_negatives(detector);
        let mut rng = Rng(seed);
        let line = |rng: &mut Rng| -> Vec<u8> {
            if rng.below(5) == 0 {
                examples[rng.below(examples.len())].as_bytes().to_vec()
            } else {
                filler[rng.below(filler.len())].as_bytes().to_vec()
            }
        };
        let mut file: Vec<Vec<u8>> = (0..600).map(|_| line(&mut rng)).collect();
        let mut base = file.join(&b"\n"[..]);
        let mut places = detector.places(&base, Some(&memo)).expect("small");
        let mut seen_base = detector.see(&base, None, None).expect("small");
        let (mut found_any, mut carried) = (false, 0);
        for round in 0..80 {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(file.len());
                match rng.below(4) {
                    0 => file.insert(at, line(&mut rng)),
                    1 => drop(file.remove(at)),
                    2 => {
                        // Move a run of lines elsewhere.
                        let len = 1 + rng.below(20.min(file.len() - at));
                        let run: Vec<Vec<u8>> = file.drain(at..at + len).collect();
                        let to = rng.below(file.len() + 1);
                        file.splice(to..to, run);
                    }
                    _ => {
                        // Join two lines, or cut one in two: keywords across the seam.
                        if at + 1 < file.len() && rng.below(2) == 0 {
                            let next = file.remove(at + 1);
                            file[at].extend_from_slice(&next);
                        } else {
                            let cut = rng.below(file[at].len() + 1);
                            let tail = file[at].split_off(cut);
                            file.insert(at + 1, tail);
                        }
                    }
                }
            }
            let data = file.join(&b"\n"[..]);
            let delta = crate::git::delta::encode(&base, &data, usize::MAX).expect("no limit");
            let after = detector
                .places_after(&places, base.len(), &delta, &data)
                .expect("the delta fits");
            let whole = detector.places(&data, None).expect("small");
            assert_eq!(after, whole, "round {round}");
            let (mut fresh, mut noted) = (Vec::new(), Vec::new());
            detector.scan(&data, None, &mut fresh);
            let seen = detector
                .see(&data, Some((&seen_base, &delta)), Some(&memo))
                .expect("small");
            detector.seen_hits(&seen, None, &mut noted);
            assert_eq!(fresh, noted, "round {round}");
            carried += seen.0.carried;
            found_any |= !fresh.is_empty();
            (base, places, seen_base) = (data, after, seen);
        }
        assert!(found_any);
        assert!(carried > 0, "no window was carried from a base");
        // A delta that does not fit its base gives nothing (the caller searches whole).
        assert_eq!(
            detector.places_after(&places, base.len() + 1, &[0, 0], b""),
            None
        );
    }
}
