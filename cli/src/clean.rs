//! `deployguard clean` and `deployguard push`: wiring of the library's engines to files,
//! flags, credentials and exit codes.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use deployguard_engine::clean::{
    self, ArchiveFormat, CleanProgress, CleanReport, CleanRun, DEFAULT_REPLACEMENT, Phase, Select,
    Selection,
};
use deployguard_engine::git::remote::{
    self, Credentials, PushOptions, PushReport, RemoteUrl, UrlPolicy,
};
#[cfg(feature = "github")]
use deployguard_engine::github;

#[derive(Args, Debug)]
pub(crate) struct CleanArgs {
    /// The repository to clean (bare or not; it is not modified) or a bundle file.
    path: PathBuf,
    /// The secrets file written by `deployguard scan --secrets-out`.
    #[arg(long, value_name = "FILE", required_unless_present = "replace_text")]
    secrets: Option<PathBuf>,
    /// Remove the secrets with these ids (or unique id prefixes), comma separated.
    #[arg(
        long,
        value_name = "ID,...",
        value_delimiter = ',',
        requires = "secrets"
    )]
    select: Vec<String>,
    /// Remove every secret in the secrets file.
    #[arg(long, conflicts_with = "select", requires = "secrets")]
    all: bool,
    /// Expressions to remove, in git-filter-repo's `--replace-text` format
    /// (`literal:`, `regex:` or `glob:` lines, each optionally `==>REPLACEMENT`).
    #[arg(long, value_name = "FILE", conflicts_with = "secrets")]
    replace_text: Option<PathBuf>,
    /// What each removed value becomes.
    #[arg(long, value_name = "TEXT", default_value = DEFAULT_REPLACEMENT)]
    replacement: String,
    /// Write the cleaned repository to this bundle file (`git clone FILE` reads it).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
    /// Also write a ready-to-use clone as a `.zip` or `.tar.gz` archive.
    #[arg(long, value_name = "FILE")]
    archive: Option<PathBuf>,
    /// Write `old new` commit ids, one rewritten commit per line.
    #[arg(long, value_name = "FILE")]
    commit_map: Option<PathBuf>,
    /// Write the full report (every ref before and after, counts) as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Where to work (default: a temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// No progress line, even on a terminal.
    #[arg(long)]
    no_progress: bool,
}

pub(crate) fn run_clean(args: CleanArgs) -> ExitCode {
    match clean_command(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => crate::fail(&message),
    }
}

fn selection(args: &CleanArgs) -> Result<Selection, String> {
    let replacement = args.replacement.as_bytes();
    if let Some(path) = &args.replace_text {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return Selection::parse_expressions(&text, replacement)
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    let Some(path) = &args.secrets else {
        return Err("give --secrets FILE (with --select or --all) or --replace-text FILE".into());
    };
    let select = match (args.all, args.select.is_empty()) {
        (true, _) => Select::All,
        (false, false) => Select::Ids(args.select.clone()),
        (false, true) => {
            return Err(
                "choose what to remove: --select ID,... or --all (ids are in the scan report)"
                    .into(),
            );
        }
    };
    let file = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Selection::from_secrets(&file, &select, replacement)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn clean_command(args: &CleanArgs) -> Result<(), String> {
    let selection = selection(args)?;
    if !args.path.exists() {
        return Err(format!(
            "{}: no such file or directory",
            args.path.display()
        ));
    }
    let archive_format = match &args.archive {
        Some(path) => Some(ArchiveFormat::from_path(path).ok_or_else(|| {
            format!(
                "{}: the archive must end in .zip, .tar.gz or .tgz",
                path.display()
            )
        })?),
        None => None,
    };
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            tempfile::Builder::new()
                .prefix("deployguard-clean-")
                .tempdir_in(dir)
        }
        None => tempfile::Builder::new()
            .prefix("deployguard-clean-")
            .tempdir(),
    }
    .map_err(|e| format!("work directory: {e}"))?;

    let started = Instant::now();
    let progress = CleanProgress::default();
    let finished = AtomicBool::new(false);
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let result = std::thread::scope(|scope| {
        if show_progress {
            scope.spawn(|| progress_line(&progress, &finished));
        }
        let result = clean::clean(
            &args.path,
            work.path(),
            &selection,
            &args.output,
            &CleanRun {
                progress: Some(&progress),
                cancel: None,
            },
        );
        finished.store(true, Ordering::Relaxed);
        result
    });
    let report = result.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();

    if let Some(path) = &args.commit_map {
        std::fs::write(path, report.commit_map_text())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut summary = summary(&args.path, &report, &args.output, elapsed);
    if let (Some(path), Some(format)) = (&args.archive, archive_format) {
        let name = repository_name(&args.path);
        let bytes = clean::write_archive(
            &args.output,
            report.bundle_index.as_deref(),
            &work.path().join("archive"),
            &name,
            path,
            format,
        )
        .map_err(|e| e.to_string())?;
        summary.push_str(&format!("wrote {} ({})\n", path.display(), size(bytes)));
    }
    for (id, archives) in selection.inside_archives() {
        summary.push_str(&format!(
            "warning: secret {} was found inside {}: replacing text does not reach into \
             compressed archives, so it is still there until the archive is removed from \
             history\n",
            id.get(..12).unwrap_or(id),
            archives.join(", ")
        ));
    }
    eprint!("{summary}");
    Ok(())
}

/// A directory name for the archive: the repository's name without `.git`/`.bundle`.
fn repository_name(path: &Path) -> String {
    let name = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repository".into());
    let name = name
        .strip_suffix(".git")
        .or_else(|| name.strip_suffix(".bundle"))
        .unwrap_or(&name);
    let name: String = name
        .chars()
        .map(|c| if c.is_control() || c == '/' { '_' } else { c })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "repository".into()
    } else {
        name
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn summary(source: &Path, report: &CleanReport, output: &Path, elapsed: Duration) -> String {
    let mut out = String::new();
    if report.commits_rewritten == 0
        && report.blobs_rewritten == 0
        && report.tags_rewritten == 0
        && report.trees_rewritten == 0
    {
        out.push_str(&format!(
            "none of the {} selected value(s) occurs in {}: the history is unchanged\n",
            report.selected,
            source.display()
        ));
    } else {
        out.push_str(&format!(
            "rewrote {} of {} commits, {} blobs, {} trees and {} tags to remove {} selected value(s)\n",
            report.commits_rewritten,
            report.commits,
            report.blobs_rewritten,
            report.trees_rewritten,
            report.tags_rewritten,
            report.selected
        ));
    }
    if !report.signatures_dropped.is_empty() {
        out.push_str(&format!(
            "dropped the signatures of {} rewritten commits and tags (they no longer match)\n",
            report.signatures_dropped.len()
        ));
    }
    let changed: Vec<_> = report.changed_refs().collect();
    out.push_str(&format!(
        "refs changed: {} of {}\n",
        changed.len(),
        report.refs.len()
    ));
    for r in changed.iter().take(20) {
        out.push_str(&format!(
            "  {}  {} -> {}\n",
            r.name,
            &r.old[..12.min(r.old.len())],
            &r.new[..12.min(r.new.len())]
        ));
    }
    if changed.len() > 20 {
        out.push_str(&format!(
            "  … and {} more (see --report)\n",
            changed.len() - 20
        ));
    }
    if !report.forge_refs.is_empty() {
        out.push_str(&format!(
            "{} forge refs (refs/pull/*, refs/changes/*, …) are cleaned but will not be pushed\n",
            report.forge_refs.len()
        ));
    }
    out.push_str(&format!(
        "verified: none of the {} objects in the bundle holds a selected value ({} read back)\n",
        report.objects_verified, report.objects_reread
    ));
    out.push_str(&format!(
        "wrote {} ({}) in {:.1}s\n",
        output.display(),
        size(report.bundle_bytes),
        elapsed.as_secs_f64()
    ));
    out
}

fn progress_line(progress: &CleanProgress, finished: &AtomicBool) {
    let mut stderr = std::io::stderr();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let line = match progress.phase() {
            Phase::Preparing => "preparing".to_owned(),
            Phase::Reading => format!(
                "reading: {} objects, {} MiB",
                progress.objects_read(),
                progress.bytes_read() >> 20
            ),
            Phase::Rewriting => {
                format!("rewriting: {} objects written", progress.objects_written())
            }
            Phase::Verifying => format!(
                "writing and verifying the bundle: {} objects checked",
                progress.objects_verified()
            ),
            Phase::Done => break,
        };
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }
    let _ = write!(stderr, "\r\x1b[2K");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Platform {
    /// Any git server: push only.
    Generic,
    /// GitHub or GitHub Enterprise: create the repository if missing, then push.
    Github,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum PushFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct PushArgs {
    /// The cleaned repository: a bundle from `deployguard clean`, or a repository.
    path: PathBuf,
    /// Where to push: an https URL (ssh and local paths work too).
    #[arg(long, value_name = "URL")]
    target_url: String,
    /// Overwrite branches and tags that differ on the target.
    #[arg(long)]
    force: bool,
    #[arg(long, value_enum, default_value_t = Platform::Generic)]
    platform: Platform,
    /// GitHub API base (default: api.github.com for github.com, else
    /// `https://HOST/api/v3/` for GitHub Enterprise Server).
    #[arg(long, value_name = "URL")]
    github_api_url: Option<String>,
    /// Create a missing GitHub repository as public (default: private).
    #[arg(long)]
    public: bool,
    /// Allow a plain-http target URL.
    #[arg(long)]
    allow_http: bool,
    /// Output format of the per-ref results.
    #[arg(long, value_enum, default_value_t = PushFormat::Text)]
    format: PushFormat,
}

pub(crate) fn run_push(args: PushArgs) -> ExitCode {
    match push_command(&args) {
        Ok(report) => {
            print_push(&args, &report);
            ExitCode::SUCCESS
        }
        Err((message, report)) => {
            if let Some(report) = report {
                print_push(&args, &report);
            }
            crate::fail(&message)
        }
    }
}

fn print_push(args: &PushArgs, report: &PushReport) {
    match args.format {
        PushFormat::Json => {
            crate::print(&(serde_json::to_string_pretty(report).unwrap_or_default() + "\n"))
        }
        PushFormat::Text => {
            let mut out = format!("pushed to {}\n", report.url);
            for r in &report.refs {
                let outcome = serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                out.push_str(&format!("  {:<10} {}", outcome, r.refname));
                if let Some(reason) = &r.reason {
                    out.push_str(&format!(" ({reason})"));
                }
                out.push('\n');
            }
            if !report.not_pushed.is_empty() {
                out.push_str(&format!(
                    "not pushed ({} refs that are not branches or tags): {}\n",
                    report.not_pushed.len(),
                    report.not_pushed.join(", ")
                ));
            }
            crate::print(&out);
        }
    }
}

/// Credentials from the environment: `DEPLOYGUARD_GIT_TOKEN` (with
/// `DEPLOYGUARD_GIT_USERNAME`), or `GITHUB_TOKEN` for GitHub targets.
fn environment_credentials(platform: Platform) -> Option<Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(token) = var("DEPLOYGUARD_GIT_TOKEN") {
        let user = var("DEPLOYGUARD_GIT_USERNAME").unwrap_or_else(|| "x-access-token".into());
        return Some(Credentials::new(user, token));
    }
    if platform == Platform::Github
        && let Some(token) = var("GITHUB_TOKEN").or_else(|| var("GH_TOKEN"))
    {
        return Some(Credentials::new("x-access-token", token));
    }
    None
}

type PushFailure = (String, Option<PushReport>);

fn push_command(args: &PushArgs) -> Result<PushReport, PushFailure> {
    let plain = |m: String| (m, None);
    let policy = UrlPolicy {
        allow_http: args.allow_http,
        ..UrlPolicy::local_user()
    };
    let target = RemoteUrl::parse(&args.target_url, policy).map_err(|e| plain(e.to_string()))?;
    if !args.path.exists() {
        return Err(plain(format!(
            "{}: no such file or directory",
            args.path.display()
        )));
    }
    let credentials = environment_credentials(args.platform)
        .or_else(|| target.credentials().cloned())
        .or_else(|| match target.kind() {
            remote::RemoteKind::Https | remote::RemoteKind::Http => {
                remote::credential_fill(&target)
            }
            _ => None,
        });

    if args.platform == Platform::Github {
        ensure_github_repository(args, &target, credentials.as_ref()).map_err(plain)?;
    }

    // A bundle is unpacked into a temporary bare repository first.
    let _unpacked;
    let repo: PathBuf = if args.path.is_file() {
        if deployguard_engine::git::bundle_format(&args.path).is_none() {
            return Err(plain(format!(
                "{}: not a git bundle or repository",
                args.path.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("deployguard-push-")
            .tempdir()
            .map_err(|e| plain(format!("temporary directory: {e}")))?;
        let repo = dir.path().join("repo.git");
        deployguard_engine::git::bundle::unbundle(&args.path, None, &repo)
            .map_err(|e| plain(e.to_string()))?;
        _unpacked = dir;
        repo
    } else if deployguard_engine::git::is_repository(&args.path) {
        args.path.clone()
    } else {
        return Err(plain(format!(
            "{}: not a git bundle or repository",
            args.path.display()
        )));
    };
    let options = PushOptions {
        force: args.force,
        credentials: credentials.as_ref(),
        ..PushOptions::default()
    };
    match remote::push(&repo, &target, &options) {
        Ok(report) => Ok(report),
        Err(remote::PushError::Rejected {
            count,
            summary,
            report,
        }) => Err((
            format!("the remote rejected {count} ref(s): {summary}"),
            Some(*report),
        )),
        Err(e) => Err(plain(e.to_string())),
    }
}

#[cfg(not(feature = "github"))]
fn ensure_github_repository(
    _args: &PushArgs,
    _target: &RemoteUrl,
    _credentials: Option<&Credentials>,
) -> Result<(), String> {
    Err(
        "this deployguard was built without GitHub support (cargo feature `github`): \
         create the repository yourself and push with --platform generic"
            .into(),
    )
}

#[cfg(feature = "github")]
fn ensure_github_repository(
    args: &PushArgs,
    target: &RemoteUrl,
    credentials: Option<&Credentials>,
) -> Result<(), String> {
    let (owner, name) = github::repository_from_url(target.as_str()).ok_or_else(|| {
        format!(
            "{}: a GitHub target looks like https://HOST/OWNER/REPO(.git)",
            target.as_str()
        )
    })?;
    let api = match &args.github_api_url {
        Some(url) => url::Url::parse(url).map_err(|e| format!("--github-api-url: {e}"))?,
        None => {
            let (host, _) = target
                .host_and_path()
                .ok_or("a GitHub target must be an http(s) URL")?;
            github::api_base_for_host(&host).ok_or("cannot derive the GitHub API URL")?
        }
    };
    let token = credentials
        .map(|c| c.secret.clone())
        .ok_or("a GitHub target needs a token: set GITHUB_TOKEN (or DEPLOYGUARD_GIT_TOKEN)")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ensured = runtime.block_on(async {
        let client = github::client(&api, &token).map_err(|e| e.to_string())?;
        github::ensure_repository(&client, &owner, &name, !args.public)
            .await
            .map_err(|e| format!("GitHub: {e}"))
    })?;
    if ensured.created {
        eprintln!(
            "created {} repository {} on GitHub",
            if ensured.private { "private" } else { "public" },
            ensured.full_name
        );
    }
    Ok(())
}
