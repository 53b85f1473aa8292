//! Running the git CLI: every git process DeployGuard starts is built here, with the
//! user's and the system's configuration shut out, and reports failures as [`GitError`]
//! carrying git's own message.

pub mod bundle;
pub mod delta;
pub mod objects;
pub mod pack;
pub mod refs;
pub mod remote;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

pub use remote::{clone_mirror, redact_url_userinfo};

/// Bytes taken by the files under `dir` (what a clone in progress has written so far).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Objects in a repository, loose and packed (`git count-objects -v`).
pub fn object_count(repo: &Path) -> Result<u64, GitError> {
    let out = output(repo, &["count-objects", "-v"])?;
    let text = String::from_utf8_lossy(&out);
    Ok(text
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key, "count" | "in-pack")
                .then(|| value.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("git {command} failed: {message}")]
pub struct GitError {
    pub command: String,
    pub message: String,
}

impl GitError {
    pub(crate) fn new(command: &str, message: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            message: message.into(),
        }
    }
}

/// A git command with the user's and the system's configuration shut out, so no hook,
/// textconv driver or credential prompt can run. The repository's own configuration
/// still applies, so the settings that could make a read run a program are forced off
/// (signature checks, lazy fetches of missing objects, fsmonitor), and git's check that
/// the repository belongs to the current user stays on.
pub fn command(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "core.quotepath=false",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "log.showSignature=false",
            "-c",
            "protocol.allow=never",
        ])
        .env("GIT_NO_LAZY_FETCH", "1")
        // `refs/replace/*` would make git show other content than the object ids name.
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .stdin(Stdio::null());
    command
}

/// A running git process whose stderr is collected (for the error message) and which is
/// killed if dropped before it finished.
pub(crate) struct Running {
    child: Option<Child>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    what: String,
}

impl Running {
    pub(crate) fn spawn(mut command: Command, what: &str) -> Result<Self, GitError> {
        command.stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| GitError {
            command: what.into(),
            message: format!("cannot run git: {e}"),
        })?;
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if out.len() < 16 << 10 {
                        out.extend_from_slice(&chunk[..n]);
                    }
                }
                out
            })
        });
        Ok(Self {
            child: Some(child),
            stderr,
            what: what.into(),
        })
    }

    pub(crate) fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| unreachable!("child is only taken by finish"))
    }

    /// Waits for the process: its exit status and what it wrote to stderr.
    pub(crate) fn wait(mut self) -> Result<(std::process::ExitStatus, Vec<u8>), GitError> {
        let Some(mut child) = self.child.take() else {
            return Err(GitError::new(&self.what, "already finished"));
        };
        let status = child
            .wait()
            .map_err(|e| GitError::new(&self.what, e.to_string()))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok((status, stderr))
    }

    /// Waits for the process like [`Running::wait`], but kills it when `cancel` is set or
    /// `over_limit` (asked every 200 ms) says so. The exit and the flag are looked at
    /// every 10 ms, so the wait ends within 10 ms of git's.
    pub(crate) fn wait_watched(
        mut self,
        cancel: Option<&std::sync::atomic::AtomicBool>,
        mut over_limit: impl FnMut() -> bool,
    ) -> Result<(std::process::ExitStatus, Vec<u8>), Stopped> {
        const LOOK: std::time::Duration = std::time::Duration::from_millis(10);
        const LOOKS_PER_LIMIT_CHECK: u32 = 20;
        let mut looks = 0u32;
        loop {
            looks = looks.wrapping_add(1);
            match self.child().try_wait() {
                Ok(Some(_)) => return self.wait().map_err(Stopped::Git),
                Ok(None) => {}
                Err(e) => return Err(Stopped::Git(GitError::new(&self.what, e.to_string()))),
            }
            let reason = if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Acquire)) {
                Some(Stopped::Cancelled)
            } else if looks.is_multiple_of(LOOKS_PER_LIMIT_CHECK) {
                over_limit().then_some(Stopped::Limit)
            } else {
                None
            };
            if let Some(reason) = reason {
                // Dropping kills the process and reaps it.
                drop(self);
                return Err(reason);
            }
            std::thread::sleep(LOOK);
        }
    }

    /// Waits for the process; a non-zero exit becomes an error carrying git's message.
    pub(crate) fn finish(self) -> Result<(), GitError> {
        let what = self.what.clone();
        let (status, stderr) = self.wait()?;
        if status.success() {
            return Ok(());
        }
        Err(GitError::new(&what, stderr_message(&stderr, status)))
    }
}

/// Why a watched git process was stopped before it finished.
#[derive(Debug)]
pub(crate) enum Stopped {
    Cancelled,
    Limit,
    Git(GitError),
}

/// The first lines of git's complaint, or the exit status when it said nothing.
pub(crate) fn stderr_message(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let message = String::from_utf8_lossy(stderr);
    let message = message
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(5)
        .collect::<Vec<_>>()
        .join("; ");
    if message.is_empty() {
        format!("exited with {status}")
    } else {
        message
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a short git command with `input` on its standard input; returns its output.
pub fn output_with_input(repo: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>, GitError> {
    let what = args.first().copied().unwrap_or("git");
    let mut command = command(repo);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut running = Running::spawn(command, what)?;
    let stdin = running.child().stdin.take();
    let stdout = running.child().stdout.take();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        }
    });
    let mut out = Vec::new();
    if let Some(mut stdout) = stdout {
        stdout
            .read_to_end(&mut out)
            .map_err(|e| GitError::new(what, e.to_string()))?;
    }
    let _ = writer.join();
    running.finish()?;
    Ok(out)
}

/// Runs a short git command and returns its standard output.
pub fn output(repo: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let what = args.first().copied().unwrap_or("git");
    let mut command = command(repo);
    command.args(args).stdout(Stdio::piped());
    let mut running = Running::spawn(command, what)?;
    let mut out = Vec::new();
    if let Some(mut stdout) = running.child().stdout.take() {
        stdout.read_to_end(&mut out).map_err(|e| GitError {
            command: what.into(),
            message: e.to_string(),
        })?;
    }
    running.finish()?;
    Ok(out)
}

/// True when `path` is inside a git repository (work tree or bare).
pub fn is_repository(path: &Path) -> bool {
    path.is_dir() && output(path, &["rev-parse", "--git-dir"]).is_ok()
}

/// Creates an empty bare repository at `path` (its parent directories too) that keeps
/// no reflogs, so nothing there holds on to replaced history.
pub fn init_bare(path: &Path, format: objects::ObjectFormat) -> Result<(), GitError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| GitError::new("init", e.to_string()))?;
    let mut init = command(parent);
    init.args([
        "init",
        "--quiet",
        "--bare",
        &format!("--object-format={}", format.name()),
    ])
    .arg(path)
    .stdout(Stdio::null());
    Running::spawn(init, "init")?.finish()?;
    output(path, &["config", "core.logAllRefUpdates", "false"])?;
    Ok(())
}

/// The object format a bundle file declares, or `None` when the file is not a bundle.
pub fn bundle_format(path: &Path) -> Option<objects::ObjectFormat> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut reader = std::io::BufReader::new(file);
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first).ok()?;
    match first.as_slice() {
        b"# v2 git bundle\n" => Some(objects::ObjectFormat::Sha1),
        b"# v3 git bundle\n" => {
            // v3 lists capabilities (`@name=value`) before the refs.
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).ok()? > 0 && line.starts_with(b"@") {
                if line.as_slice() == b"@object-format=sha256\n" {
                    return Some(objects::ObjectFormat::Sha256);
                }
                line.clear();
            }
            Some(objects::ObjectFormat::Sha1)
        }
        _ => None,
    }
}

/// Copies every ref and object of `bundle` into the bare repository `repo`.
pub fn fetch_bundle(repo: &Path, bundle: &Path) -> Result<(), GitError> {
    let bundle =
        std::fs::canonicalize(bundle).map_err(|e| GitError::new("fetch", e.to_string()))?;
    let mut fetch = command(repo);
    fetch
        .args([
            "-c",
            "protocol.file.allow=always",
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
        ])
        .arg(&bundle)
        .arg("+refs/*:refs/*")
        .stdout(Stdio::null());
    Running::spawn(fetch, "fetch")?.finish()
}
