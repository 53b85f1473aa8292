//! Real git repositories built step by step by a test, with fixed identities and
//! strictly increasing dates so that history order is deterministic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A non-bare repository in its own temporary directory (removed on drop).
pub struct TestRepo {
    dir: tempfile::TempDir,
    clock: u64,
}

impl TestRepo {
    /// An empty repository whose first branch is `main`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dg-repo-")
            .tempdir()
            .expect("temporary directory");
        let mut repo = Self {
            dir,
            clock: 1_700_000_000,
        };
        repo.git(&["init", "-q", "-b", "main", "."]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the work tree and returns its trimmed standard output; panics on failure.
    pub fn git(&mut self, args: &[&str]) -> String {
        self.git_with_input(args, None)
    }

    /// Like [`TestRepo::git`], feeding `input` on standard input.
    pub fn git_with_input(&mut self, args: &[&str], input: Option<&[u8]>) -> String {
        self.clock += 60;
        let date = format!("@{} +0000", self.clock);
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.test")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.test")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("running git");
        if let Some(input) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("writing to git");
        }
        let out = child.wait_with_output().expect("waiting for git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a file (creating directories) and stages it.
    pub fn write(&mut self, path: &str, contents: impl AsRef<[u8]>) -> &mut Self {
        let full = self.file(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("creating directories");
        }
        std::fs::write(&full, contents).expect("writing file");
        self.git(&["add", "--", path]);
        self
    }

    /// Removes a file and stages the removal.
    pub fn remove(&mut self, path: &str) -> &mut Self {
        self.git(&["rm", "-q", "--", path]);
        self
    }

    /// Renames a file and stages the rename.
    pub fn rename(&mut self, from: &str, to: &str) -> &mut Self {
        if let Some(parent) = self.file(to).parent() {
            std::fs::create_dir_all(parent).expect("creating directories");
        }
        self.git(&["mv", "--", from, to]);
        self
    }

    /// Commits what is staged (empty commits allowed) and returns the commit id.
    pub fn commit(&mut self, message: &str) -> String {
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn head(&mut self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Switches to a branch, creating it at HEAD when it does not exist.
    pub fn checkout(&mut self, branch: &str) -> &mut Self {
        let exists = Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ])
            .current_dir(self.dir.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if exists {
            self.git(&["checkout", "-q", branch]);
        } else {
            self.git(&["checkout", "-q", "-b", branch]);
        }
        self
    }

    /// Merges a branch into the current one with a merge commit; returns its id.
    pub fn merge(&mut self, branch: &str, message: &str) -> String {
        self.git(&["merge", "-q", "--no-ff", "-m", message, branch]);
        self.head()
    }

    /// An annotated tag at HEAD.
    pub fn tag_annotated(&mut self, name: &str, message: &str) -> &mut Self {
        self.git(&["tag", "-a", name, "-m", message]);
        self
    }

    /// A lightweight tag at HEAD.
    pub fn tag(&mut self, name: &str) -> &mut Self {
        self.git(&["tag", name]);
        self
    }

    /// The id git gives these bytes as a blob.
    pub fn blob_id(&mut self, contents: &[u8]) -> String {
        self.git_with_input(&["hash-object", "--stdin"], Some(contents))
    }

    /// Number of distinct blobs reachable from every ref.
    /// A bare partial clone of this repository at `into` (`--filter=blob:none`): its
    /// history whole, the blobs of no commit.
    pub fn partial_clone(&mut self, into: &Path) {
        self.git(&["config", "uploadpack.allowFilter", "true"]);
        let url = format!("file://{}", self.path().display());
        let dest = into.to_string_lossy();
        git_in(
            self.path(),
            &["clone", "-q", "--bare", "--filter=blob:none", &url, &dest],
        );
    }

    pub fn reachable_blob_count(&mut self) -> usize {
        let objects = self.git(&["rev-list", "--objects", "--all"]);
        let ids: Vec<&str> = objects
            .lines()
            .filter_map(|l| l.split(' ').next())
            .collect();
        let input = ids.join("\n") + "\n";
        let types = self.git_with_input(
            &["cat-file", "--batch-check=%(objecttype)"],
            Some(input.as_bytes()),
        );
        types.lines().filter(|t| *t == "blob").count()
    }

    fn file(&self, path: &str) -> PathBuf {
        self.dir.path().join(path)
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs git in `dir` with the user's and the system's configuration shut out and
/// returns its standard output; panics (fails the test) when git fails.
pub fn git_in(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
