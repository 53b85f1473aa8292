//! Whole files a selection removes: by path pattern, by blob id, or by size.
//!
//! Path patterns follow `.gitignore`: a pattern without a slash (`.env`, `*.p12`,
//! `secrets/`) names an entry at any depth and is matched against names alone, so
//! whether a tree changes depends on the tree only; a pattern with a slash
//! (`config/prod.env`, `/deploy/keys`, `src/**/*.pem`) is anchored at the root and
//! matched against whole paths. `*` and `?` stop at `/`, `**` spans directories, a
//! trailing `/` matches directories only, and a pattern that names a directory removes
//! everything under it.

use regex::bytes::Regex;

use super::selection::SelectionError;
use crate::git::objects::Oid;

/// At most this many path patterns, blob ids each.
pub const MAX_PATTERNS: usize = 10_000;

#[derive(Clone, Debug)]
enum Component {
    /// `**`: any number of directories, none included.
    Any,
    Literal(Vec<u8>),
    Pattern(Regex),
}

impl Component {
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Literal(literal) => literal == name,
            Self::Pattern(regex) => regex.is_match(name),
        }
    }
}

/// One path pattern.
#[derive(Clone, Debug)]
struct PathGlob {
    /// Matches directories only (the pattern ended in `/`).
    dir_only: bool,
    /// Matched against whole paths from the root; else against names only.
    anchored: bool,
    components: Vec<Component>,
}

impl PathGlob {
    fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text;
        let dir_only = rest.ends_with('/');
        rest = rest.trim_end_matches('/');
        let rooted = rest.starts_with('/');
        rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            return Err("an empty path pattern matches nothing".into());
        }
        let mut anchored = rooted || rest.contains('/');
        // `**/NAME` is NAME at any depth: the same as NAME.
        if let Some(name) = rest.strip_prefix("**/")
            && !rooted
            && !name.contains('/')
            && name != "**"
        {
            rest = name;
            anchored = false;
        }
        let components = rest
            .split('/')
            .map(|part| match part {
                "" => Err("a path pattern cannot hold an empty component (`//`)".to_owned()),
                "." | ".." => Err("a path pattern cannot hold `.` or `..`".to_owned()),
                "**" => Ok(Component::Any),
                _ => component(part),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !anchored && matches!(components.as_slice(), [Component::Any]) {
            return Err("`**` alone would remove every file".into());
        }
        Ok(Self {
            dir_only,
            anchored,
            components,
        })
    }

    fn applies_to(&self, is_tree: bool) -> bool {
        is_tree || !self.dir_only
    }

    /// An unanchored pattern against one entry's name.
    fn matches_name(&self, name: &[u8], is_tree: bool) -> bool {
        !self.anchored && self.applies_to(is_tree) && self.components[0].matches(name)
    }

    /// An anchored pattern against a whole path (`a/b/c`, no leading slash).
    fn matches_path(&self, path: &[u8], is_tree: bool) -> bool {
        let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        self.anchored && self.applies_to(is_tree) && full_match(&self.components, &parts)
    }

    /// Whether an anchored pattern can match something under the directory `dir`.
    fn may_match_below(&self, dir: &[u8]) -> bool {
        if !self.anchored {
            return false;
        }
        if dir.is_empty() {
            return true;
        }
        let parts: Vec<&[u8]> = dir.split(|&b| b == b'/').collect();
        prefix_match(&self.components, &parts)
    }
}

/// One component with `*`, `?` or `[…]` as an anchored regular expression; a
/// component without them as a literal. A backslash takes the next character as it is.
fn component(part: &str) -> Result<Component, String> {
    if !part.contains(['*', '?', '[', '\\']) {
        return Ok(Component::Literal(part.as_bytes().to_vec()));
    }
    let mut re = String::from("(?s-u)^");
    let mut chars = part.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                re.push_str("[^/]*");
            }
            '?' => re.push_str("[^/]"),
            '\\' => match chars.next() {
                Some(next) => re.push_str(&regex::escape(&next.to_string())),
                None => return Err("a path pattern cannot end in `\\`".into()),
            },
            '[' => {
                let mut class = String::from("[");
                if matches!(chars.peek(), Some('!' | '^')) {
                    chars.next();
                    class.push('^');
                }
                let mut closed = false;
                let mut first = true;
                while let Some(c) = chars.next() {
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    let c = match c {
                        '\\' => chars.next().ok_or("a path pattern cannot end in `\\`")?,
                        '[' if chars.peek() == Some(&':') => {
                            return Err("POSIX classes (`[[:digit:]]`) are not supported in \
                                        path patterns; list the characters"
                                .into());
                        }
                        c => c,
                    };
                    if matches!(c, '\\' | '[' | ']' | '&' | '~' | '^') {
                        class.push('\\');
                    }
                    class.push(c);
                }
                if !closed {
                    return Err("a `[` in a path pattern is not closed by `]`".into());
                }
                class.push(']');
                re.push_str(&class);
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    re.push('$');
    let regex = Regex::new(&re).map_err(|_| "a path pattern is not valid".to_owned())?;
    Ok(Component::Pattern(regex))
}

fn full_match(pattern: &[Component], path: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        // A trailing `**` is what is inside: at least one name.
        Some((Component::Any, [])) => !path.is_empty(),
        Some((Component::Any, rest)) => {
            (0..=path.len()).any(|skip| full_match(rest, &path[skip..]))
        }
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(name, tail)| first.matches(name) && full_match(rest, tail)),
    }
}

/// Whether `pattern` can match some path that continues `dir` by at least one name.
fn prefix_match(pattern: &[Component], dir: &[&[u8]]) -> bool {
    match (pattern.split_first(), dir.split_first()) {
        (None, _) => false,
        (Some((Component::Any, _)), _) => true,
        (Some(_), None) => true,
        (Some((first, rest)), Some((name, tail))) => {
            first.matches(name) && prefix_match(rest, tail)
        }
    }
}

/// The files a selection removes.
#[derive(Clone, Debug, Default)]
pub struct FileSelection {
    /// The patterns as given, for reports.
    texts: Vec<String>,
    globs: Vec<PathGlob>,
    blobs: Vec<Oid>,
    bigger_than: Option<u64>,
}

impl FileSelection {
    /// Path patterns, blob ids (full hex) and a size limit in bytes (blobs bigger than
    /// it are removed). Bad input is an error; nothing is silently dropped.
    pub fn new(
        paths: &[String],
        blobs: &[String],
        bigger_than: Option<u64>,
    ) -> Result<Self, SelectionError> {
        if paths.len() > MAX_PATTERNS || blobs.len() > MAX_PATTERNS {
            return Err(SelectionError::Files(format!(
                "at most {MAX_PATTERNS} path patterns and {MAX_PATTERNS} blob ids can be selected"
            )));
        }
        let mut texts = Vec::new();
        let mut globs = Vec::new();
        for text in paths {
            if texts.contains(text) {
                continue;
            }
            let glob = PathGlob::parse(text)
                .map_err(|problem| SelectionError::Files(format!("path {text:?}: {problem}")))?;
            texts.push(text.clone());
            globs.push(glob);
        }
        let mut ids = Vec::new();
        for text in blobs {
            let hex = text.trim();
            let valid = matches!(hex.len(), 40 | 64) && hex.bytes().all(|b| b.is_ascii_hexdigit());
            let oid = valid
                .then(|| Oid::from_hex(hex.to_ascii_lowercase().as_bytes()))
                .flatten()
                .ok_or_else(|| {
                    SelectionError::Files(format!(
                        "blob id {hex:?} is not a full object id (40 or 64 hex digits)"
                    ))
                })?;
            ids.push(oid);
        }
        ids.sort_unstable();
        ids.dedup();
        if bigger_than == Some(0) {
            return Err(SelectionError::Files(
                "a size limit of 0 would remove every file; give a size above 0".into(),
            ));
        }
        Ok(Self {
            texts,
            globs,
            blobs: ids,
            bigger_than,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty() && self.blobs.is_empty() && self.bigger_than.is_none()
    }

    /// The path patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.texts
    }

    /// The blob ids selected, sorted.
    pub fn blob_ids(&self) -> &[Oid] {
        &self.blobs
    }

    pub fn bigger_than(&self) -> Option<u64> {
        self.bigger_than
    }

    /// Any pattern is anchored: whether a tree changes then depends on where it is.
    pub(crate) fn has_anchored(&self) -> bool {
        self.globs.iter().any(|g| g.anchored)
    }

    /// Any pattern matches by name alone.
    pub(crate) fn has_names(&self) -> bool {
        self.globs.iter().any(|g| !g.anchored)
    }

    /// Every unanchored pattern that matches a tree entry by its name.
    pub(crate) fn name_matches<'a>(
        &'a self,
        name: &'a [u8],
        is_tree: bool,
    ) -> impl Iterator<Item = usize> + 'a {
        (self.globs.iter().enumerate())
            .filter(move |(_, g)| g.matches_name(name, is_tree))
            .map(|(i, _)| i)
    }

    /// Every anchored pattern that matches the entry at `path`.
    pub(crate) fn path_matches<'a>(
        &'a self,
        path: &'a [u8],
        is_tree: bool,
    ) -> impl Iterator<Item = usize> + 'a {
        (self.globs.iter().enumerate())
            .filter(move |(_, g)| g.matches_path(path, is_tree))
            .map(|(i, _)| i)
    }

    /// The first unanchored pattern that matches a tree entry by its name.
    pub(crate) fn name_match(&self, name: &[u8], is_tree: bool) -> Option<usize> {
        self.name_matches(name, is_tree).next()
    }

    /// The first anchored pattern that matches the entry at `path`.
    #[cfg(test)]
    fn path_match(&self, path: &[u8], is_tree: bool) -> Option<usize> {
        self.path_matches(path, is_tree).next()
    }

    /// Whether an anchored pattern could match under the directory `dir`.
    pub(crate) fn may_match_below(&self, dir: &[u8]) -> bool {
        self.globs.iter().any(|g| g.may_match_below(dir))
    }

    /// Whether a blob of `size` bytes with id `oid` is removed wherever it is.
    pub(crate) fn removes_blob(&self, oid: &Oid, size: u64) -> bool {
        self.bigger_than.is_some_and(|limit| size > limit) || self.names_blob(oid)
    }

    /// Whether `oid` is one of the blob ids selected.
    pub(crate) fn names_blob(&self, oid: &Oid) -> bool {
        self.blobs.binary_search(oid).is_ok()
    }
}

/// A size as people write it: `500`, `10K`, `20M`, `1G` (powers of 1024; a trailing
/// `B` or `iB` is allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text:?}: the unit must be K, M, G or T")),
            };
            (&t[..at], shift)
        }
        _ => (t, 0),
    };
    let number: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (for example 500K, 20M, 1G)"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> FileSelection {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        FileSelection::new(&paths, &[], None).expect("valid patterns")
    }

    #[test]
    fn a_pattern_without_a_slash_matches_names_at_any_depth() {
        let f = files(&["**/.env", "*.p12", "secrets/"]);
        assert!(!f.has_anchored());
        assert_eq!(f.name_match(b".env", false), Some(0));
        assert_eq!(f.name_match(b"store.p12", false), Some(1));
        assert_eq!(f.name_match(b"secrets", true), Some(2));
        assert_eq!(
            f.name_match(b"secrets", false),
            None,
            "secrets/ names directories"
        );
        assert_eq!(f.name_match(b".env.example", false), None);
    }

    #[test]
    fn a_pattern_with_a_slash_is_anchored_at_the_root() {
        let f = files(&["config/prod.env", "/keys", "src/**/*.pem"]);
        assert!(f.has_anchored() && !f.has_names());
        assert_eq!(f.path_match(b"config/prod.env", false), Some(0));
        assert_eq!(f.path_match(b"app/config/prod.env", false), None);
        assert_eq!(f.path_match(b"keys", true), Some(1));
        assert_eq!(f.path_match(b"src/a.pem", false), Some(2));
        assert_eq!(f.path_match(b"src/x/y/a.pem", false), Some(2));
        assert_eq!(f.path_match(b"src/x/a.pem.bak", false), None);
        let inside = files(&["/build/**"]);
        assert_eq!(
            inside.path_match(b"build", false),
            None,
            "only what is inside"
        );
        assert_eq!(inside.path_match(b"build/x.o", false), Some(0));
        assert!(f.may_match_below(b""));
        assert!(f.may_match_below(b"src/deep/er"));
        assert!(f.may_match_below(b"config"));
        assert!(!f.may_match_below(b"docs"));
        assert!(!f.may_match_below(b"config/prod.env"));
    }

    #[test]
    fn wildcards_stop_at_slashes_and_classes_work() {
        let f = files(&["a/*/c", "id_[!.]*", "x?z", "[\\]a]b"]);
        assert_eq!(f.name_match(b"]b", false), Some(3));
        assert_eq!(f.name_match(b"ab", false), Some(3));
        assert_eq!(f.path_match(b"a/b/c", false), Some(0));
        assert_eq!(f.path_match(b"a/b/b/c", false), None);
        assert_eq!(f.name_match(b"id_rsa", false), Some(1));
        assert_eq!(f.name_match(b"id_.pub", false), None);
        assert_eq!(f.name_match(b"xyz", false), Some(2));
    }

    #[test]
    fn bad_file_selections_are_refused_with_the_reason() {
        for bad in ["", "/", "a//b", "../x", "**", "a/[b", "[[:digit:]]x"] {
            let err = FileSelection::new(&[bad.to_owned()], &[], None).expect_err(bad);
            assert!(err.to_string().contains("path"), "{bad}: {err}");
        }
        let err = FileSelection::new(&[], &["abc".into()], None).expect_err("short id");
        assert!(err.to_string().contains("blob id"), "{err}");
        let err = FileSelection::new(&[], &[], Some(0)).expect_err("size 0");
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("500"), Ok(500));
        assert_eq!(parse_size("10K"), Ok(10 << 10));
        assert_eq!(parse_size("20M"), Ok(20 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("3mb"), Ok(3 << 20));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
