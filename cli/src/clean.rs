//! `deployguard clean` and `deployguard push`: wiring of the library's engines to files,
//! flags, credentials and exit codes.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use deployguard_engine::clean::{
    self, ArchiveFormat, CleanOptions, CleanProgress, CleanReport, CleanRun, DEFAULT_REPLACEMENT,
    FileSelection, Phase, Select, Selection,
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
    #[arg(long, value_name = "FILE")]
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
    /// Remove every file whose path matches GLOB from every commit (`.gitignore`
    /// style: `.env` or `**/.env` at any depth, `config/prod.env` from the root,
    /// `secrets/` a directory); repeat for more.
    #[arg(long, value_name = "GLOB")]
    delete_path: Vec<String>,
    /// Remove these blobs (full ids, from `scan`'s file findings or largest blobs)
    /// wherever they are, comma separated.
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    delete_blob: Vec<String>,
    /// Remove every blob bigger than SIZE (`500K`, `20M`, `1G`) wherever it is, except
    /// those at the tips of protected refs.
    #[arg(long, value_name = "SIZE")]
    strip_blobs_bigger_than: Option<String>,
    /// Keep the files at the tip of REF exactly as they are (`main`, `HEAD`, a tag)
    /// while its history is cleaned; repeat for more.
    #[arg(long, value_name = "REF")]
    protect_ref: Vec<String>,
    /// Drop commits that become empty (keeping merges, root commits and commits that
    /// were empty before); refs move to the parent.
    #[arg(long)]
    prune_empty: bool,
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
    let bigger_than = args
        .strip_blobs_bigger_than
        .as_deref()
        .map(clean::parse_size)
        .transpose()
        .map_err(|e| format!("--strip-blobs-bigger-than: {e}"))?;
    let files = FileSelection::new(&args.delete_path, &args.delete_blob, bigger_than)
        .map_err(|e| e.to_string())?;
    if args.secrets.is_none() && args.replace_text.is_none() {
        if files.is_empty() {
            return Err(
                "give what to remove: --secrets FILE (with --select or --all), \
                        --replace-text FILE, --delete-path GLOB, --delete-blob ID or \
                        --strip-blobs-bigger-than SIZE"
                    .into(),
            );
        }
        return Selection::files_only(files).map_err(|e| e.to_string());
    }
    Ok(values(args)?.with_files(files))
}

fn values(args: &CleanArgs) -> Result<Selection, String> {
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
            &CleanOptions {
                protect_refs: args.protect_ref.clone(),
                prune_empty: args.prune_empty,
                source_url: None,
            },
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
    summary.push_str("\nwhat is left to do:\n");
    for (i, step) in report.next_steps.iter().enumerate() {
        summary.push_str(&format!("  {}. {step}\n", i + 1));
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
    let what = match (&report.files, report.selected) {
        (None, n) => format!("{n} selected value(s)"),
        (Some(_), 0) => "the selected files".to_owned(),
        (Some(_), n) => format!("{n} selected value(s) and the selected files"),
    };
    if report.commits_rewritten == 0
        && report.commits_pruned == 0
        && report.blobs_rewritten == 0
        && report.tags_rewritten == 0
        && report.trees_rewritten == 0
    {
        out.push_str(&format!(
            "none of {what} occurs in {}: the history is unchanged\n",
            source.display()
        ));
    } else {
        out.push_str(&format!(
            "rewrote {} of {} commits, {} blobs, {} trees and {} tags to remove {what}\n",
            report.commits_rewritten,
            report.commits,
            report.blobs_rewritten,
            report.trees_rewritten,
            report.tags_rewritten,
        ));
    }
    if let Some(files) = &report.files {
        out.push_str(&format!(
            "removed {} tree entries (the files, and directories they left empty) and {} \
             distinct blobs from the history\n",
            files.entries_removed, files.blobs_removed
        ));
        for unmatched in &files.unmatched {
            out.push_str(&format!(
                "warning: {unmatched} matched nothing in the history\n"
            ));
        }
    }
    if report.commits_pruned > 0 {
        out.push_str(&format!(
            "dropped {} commits that became empty\n",
            report.commits_pruned
        ));
    }
    for protected in &report.protected {
        if protected.values + protected.files > 0 {
            out.push_str(&format!(
                "warning: the protected tip of {} still holds {} blob(s) with a selected value \
                 and {} file(s) selected for removal; they stay wherever they occur in history\n",
                protected.name, protected.values, protected.files
            ));
        } else {
            out.push_str(&format!(
                "kept the files at the tip of {} as they are\n",
                protected.name
            ));
        }
    }
    if report.message_ids_rewritten > 0 || !report.message_ids_unmapped.is_empty() {
        out.push_str(&format!(
            "commit ids quoted in messages: {} rewritten, {} could not be mapped\n",
            report.message_ids_rewritten,
            report.message_ids_unmapped.len()
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
    let short = |id: &str| id[..12.min(id.len())].to_owned();
    for r in changed.iter().take(20) {
        out.push_str(&format!(
            "  {}  {} -> {}",
            r.name,
            short(&r.old),
            short(&r.new)
        ));
        if let Some(first) = report.first_changed.iter().find(|f| f.name == r.name) {
            out.push_str(&format!(
                " (first changed commit {} -> {})",
                short(&first.old),
                short(&first.new)
            ));
        }
        out.push('\n');
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
        "verified: none of the {} objects in the bundle holds anything selected ({} read back)\n",
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
