//! `deployguard scan`: wiring of the library's scanner to files, flags and exit codes.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use deployguard_engine::scan::{
    self, Confidence, Progress, Revisions, ScanRun, Scanner, Settings, Target, settings,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Args, Debug)]
pub(crate) struct ScanArgs {
    /// A repository (bare or not), a directory, a file, or a git URL to clone.
    #[arg(default_value = ".")]
    target: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Settings file (default: `.deployguard.toml` at the target's root, if any).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Scan the files on disk, even inside a repository, instead of its history.
    #[arg(long, conflicts_with_all = ["since", "range", "staged"])]
    no_git: bool,
    /// Only blobs introduced by commits reachable from HEAD but not from REV.
    #[arg(long, value_name = "REV", conflicts_with_all = ["range", "staged"])]
    since: Option<String>,
    /// Only blobs introduced by the commits of a range such as `main..feature`.
    #[arg(long, value_name = "A..B", conflicts_with = "staged")]
    range: Option<String>,
    /// Only what is staged in the index (for a pre-commit hook).
    #[arg(long)]
    staged: bool,
    /// Report only secrets absent from this earlier JSON report.
    #[arg(long, value_name = "REPORT")]
    baseline: Option<PathBuf>,
    /// Fingerprints to ignore (default: `.deployguardignore` at the target's root, if any).
    #[arg(long, value_name = "FILE")]
    ignore_file: Option<PathBuf>,
    /// Write every secret's full value to this file (mode 0600), for `deployguard clean`.
    #[arg(long, value_name = "FILE")]
    secrets_out: Option<PathBuf>,
    /// Print full secret values in the report. Without it, only previews are shown.
    #[arg(long)]
    show_secrets: bool,
    /// Skip blobs and files larger than this many bytes (reported as skipped).
    #[arg(long, value_name = "BYTES")]
    max_file_size: Option<u64>,
    /// List this many of the history's largest blobs, with the path and commit that
    /// brought each in; 0 lists none. History scans only.
    #[arg(long, value_name = "N", default_value_t = scan::DEFAULT_LARGEST_BLOBS)]
    largest_blobs: usize,
    /// Scanning threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// No progress line, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// No colours, even on a terminal.
    #[arg(long)]
    no_color: bool,
    /// Report only secrets at least this sure: `high` (provider formats, checksums),
    /// `medium` (recognised by context) or `low` (everything).
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = MinConfidence::Low)]
    min_confidence: MinConfidence,
    /// Exit with status 3 when content could not be read (too large, unreadable, or
    /// missing from a partial clone) and no secret was found.
    #[arg(long)]
    fail_on_skipped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MinConfidence {
    Low,
    Medium,
    High,
}

impl MinConfidence {
    fn level(self) -> Confidence {
        match self {
            MinConfidence::Low => Confidence::Low,
            MinConfidence::Medium => Confidence::Medium,
            MinConfidence::High => Confidence::High,
        }
    }
}

/// What a scan ended with, for the exit status.
enum Outcome {
    Clean,
    Found,
    Incomplete,
}

pub(crate) fn run(args: ScanArgs) -> ExitCode {
    match scan(&args) {
        Ok(Outcome::Found) => ExitCode::from(1),
        Ok(Outcome::Incomplete) => ExitCode::from(3),
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Err(message) => crate::fail(&message),
    }
}

fn looks_like_url(target: &str) -> bool {
    if target.contains("://") {
        return true;
    }
    // scp-like `user@host:path`, but not a local path that happens to hold a colon.
    match target.split_once(':') {
        Some((host, _)) => host.contains('@') && !host.contains('/') && !Path::new(target).exists(),
        None => false,
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the scan and writes its outputs.
fn scan(args: &ScanArgs) -> Result<Outcome, String> {
    let mut clone_dir = None;
    let root: PathBuf = if looks_like_url(&args.target) {
        if args.staged || args.no_git {
            return Err("--staged and --no-git need a local repository, not a URL".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("deployguard-scan-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let into = dir.path().join("repo.git");
        scan::clone_mirror(&args.target, &into).map_err(|e| e.to_string())?;
        clone_dir = Some(dir);
        into
    } else {
        PathBuf::from(&args.target)
    };
    if !root.exists() {
        return Err(format!("{}: no such file or directory", root.display()));
    }
    let in_git = !args.no_git && scan::is_repository(&root);
    let settings_root = if root.is_dir() {
        Some(root.as_path())
    } else {
        None
    };

    let settings = match &args.config {
        Some(path) => {
            Settings::parse(&path.display().to_string(), &read(path)?).map_err(|e| e.to_string())?
        }
        None => match settings_root
            .and_then(|r| settings::read_repository_file(r, settings::SETTINGS_FILE))
        {
            Some(text) => {
                Settings::parse(settings::SETTINGS_FILE, &text).map_err(|e| e.to_string())?
            }
            None => Settings::default(),
        },
    };
    let mut suppressed = std::collections::HashSet::new();
    let ignore_text = match &args.ignore_file {
        Some(path) => Some((path.display().to_string(), read(path)?)),
        None => settings_root
            .and_then(|r| settings::read_repository_file(r, settings::IGNORE_FILE))
            .map(|t| (settings::IGNORE_FILE.to_owned(), t)),
    };
    if let Some((origin, text)) = ignore_text {
        suppressed.extend(settings::parse_ignore_file(&origin, &text).map_err(|e| e.to_string())?);
    }
    if let Some(path) = &args.baseline {
        suppressed.extend(
            settings::parse_baseline(&path.display().to_string(), &read(path)?)
                .map_err(|e| e.to_string())?,
        );
    }

    let mut scanner = Scanner::new(&settings)
        .map_err(|e| e.to_string())?
        .suppress(suppressed)
        .with_largest_blobs(args.largest_blobs);
    if let Some(bytes) = args.max_file_size {
        scanner = scanner.with_max_blob_size(bytes);
    }
    if let Some(threads) = args.threads {
        scanner = scanner.with_threads(threads);
    }

    let target = if args.staged {
        Target::Staged { repo: root.clone() }
    } else if in_git {
        let revisions = match (&args.since, &args.range) {
            (Some(rev), _) => Revisions::Since(rev.clone()),
            (_, Some(range)) => Revisions::Range(range.clone()),
            _ => Revisions::All,
        };
        Target::Git {
            repo: root.clone(),
            revisions,
        }
    } else {
        if args.since.is_some() || args.range.is_some() {
            return Err(format!(
                "{}: --since and --range need a git repository",
                root.display()
            ));
        }
        Target::Files { root: root.clone() }
    };

    let progress = Progress::default();
    let finished = AtomicBool::new(false);
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let result = std::thread::scope(|scope| {
        if show_progress {
            scope.spawn(|| progress_line(&progress, &finished));
        }
        let result = scanner.scan(
            &target,
            &ScanRun {
                progress: Some(&progress),
                cancel: None,
            },
        );
        finished.store(true, Ordering::Relaxed);
        result
    });
    let mut report = result.map_err(|e| e.to_string())?;
    if clone_dir.is_some() {
        report.source.location = scan::redact_url_userinfo(&args.target);
    }
    drop(clone_dir);
    let floor = args.min_confidence.level();
    report.secrets.retain(|secret| secret.confidence >= floor);

    if let Some(path) = &args.secrets_out {
        write_private(path, report.secrets_file().as_bytes())?;
    }
    if args.show_secrets {
        report.reveal_values();
    }
    let color = args.output.is_none()
        && !args.no_color
        && std::env::var_os("NO_COLOR").is_none()
        && std::io::stdout().is_terminal();
    let rendered = match args.format {
        Format::Text => report.to_text(color),
        Format::Json => report.to_json() + "\n",
        Format::Sarif => report.to_sarif(scanner.rules()) + "\n",
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, rendered).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => crate::print(&rendered),
    }
    Ok(if !report.secrets.is_empty() || !report.files.is_empty() {
        Outcome::Found
    } else if args.fail_on_skipped && report.stats.blobs_unread > 0 {
        Outcome::Incomplete
    } else {
        Outcome::Clean
    })
}

/// Writes a file only its owner can read, whatever was there before.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let describe = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(describe)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(describe)?;
    file.write_all(contents).map_err(describe)
}

fn progress_line(progress: &Progress, finished: &AtomicBool) {
    let mut stderr = std::io::stderr();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let total = if progress.enumeration_done() {
            progress.discovered().to_string()
        } else {
            format!("{}+", progress.discovered())
        };
        let _ = write!(
            stderr,
            "\r\x1b[2Kscanning: {}/{} blobs, {} MiB",
            progress.done(),
            total,
            progress.bytes() >> 20
        );
        let _ = stderr.flush();
    }
    let _ = write!(stderr, "\r\x1b[2K");
}
