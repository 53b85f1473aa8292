//! `clean_repository`: fetch the source bundle and the encrypted report, rewrite every
//! ref's history without the selected secrets (the engine re-reads the result and fails
//! if any survives), store the cleaned bundle and a download archive, job → `cleaned`.

use std::sync::Arc;
use std::time::Instant;

use deployguard::jobs::{Job, JobStatus, work};
use deployguard::storage::ObjectKey;
use deployguard::tasks::JobRef;
use deployguard_engine::clean::{
    self, ArchiveFormat, CleanError, CleanOptions, CleanProgress, CleanRun, DEFAULT_REPLACEMENT,
    FileSelection, Phase, Select, Selection, SelectionError,
};
use serde_json::json;

use super::{Services, database, io, joined, storage};
use crate::registry::{TaskContext, TaskError};

const WORKING: JobStatus = JobStatus::Cleaning;

pub(super) async fn run(
    services: Arc<Services>,
    ctx: TaskContext,
    job: JobRef,
) -> Result<serde_json::Value, TaskError> {
    let job = match super::begin(&ctx, &job, WORKING, WORKING, "downloading").await? {
        Ok(job) => job,
        Err(skipped) => return Ok(skipped),
    };
    let result = clean(&services, &ctx, &job).await;
    if result.is_err() {
        let id = job.id;
        let own = [
            ObjectKey::CleanedBundle(id),
            ObjectKey::CleanedIndex(id),
            ObjectKey::Archive(id),
        ];
        super::tidy(&services, &ctx, id, &own).await;
    }
    result
}

async fn clean(
    services: &Services,
    ctx: &TaskContext,
    job: &Job,
) -> Result<serde_json::Value, TaskError> {
    let id = job.id;
    let started = Instant::now();
    let dir = services
        .work
        .task_dir("clean", id)
        .map_err(io("work directory"))?;

    // The values to remove: the selected rows, read from the decrypted report by the
    // engine's one selection function.
    let chosen: Vec<(String, String)> = work::selected(&ctx.db, id)
        .await
        .map_err(database)?
        .into_iter()
        .map(|(rule, hash)| (rule, hex::encode(hash)))
        .collect();
    let files = match work::file_selection(&ctx.db, id).await.map_err(database)? {
        Some(choice) => file_selection(&choice)?,
        None => FileSelection::default(),
    };
    if chosen.is_empty() && files.is_empty() {
        return Err(TaskError::fatal(
            "nothing_selected",
            "no secret or file is selected for cleaning",
        ));
    }
    let selection = if chosen.is_empty() {
        Selection::files_only(files)
            .map_err(|e| TaskError::fatal("selection_invalid", e.to_string()))?
    } else {
        values(services, id, chosen).await?.with_files(files)
    };
    clean_with(services, ctx, job, selection, started, dir).await
}

/// The whole files selected, as the API stored them (checked then; checked again).
fn file_selection(choice: &serde_json::Value) -> Result<FileSelection, TaskError> {
    let strings = |key: &str| -> Vec<String> {
        choice
            .get(key)
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let size = choice
        .get("strip_blobs_bigger_than")
        .and_then(serde_json::Value::as_u64);
    FileSelection::new(&strings("paths"), &strings("blob_ids"), size)
        .map_err(|e| TaskError::fatal("selection_invalid", e.to_string()))
}

/// The selected secrets' values, read from the decrypted report by the engine's one
/// selection function.
async fn values(
    services: &Services,
    id: uuid::Uuid,
    chosen: Vec<(String, String)>,
) -> Result<Selection, TaskError> {
    let sealed = services
        .storage
        .get_bytes(ObjectKey::EncryptedReport(id))
        .await
        .map_err(storage)?;
    let plain = services
        .config
        .report_keys
        .open(super::scan::report_context(id).as_bytes(), &sealed)
        .map_err(|e| TaskError::fatal("report_unreadable", e.to_string()))?;
    let selection = Selection::from_secrets(
        &plain,
        &Select::Hashes(chosen),
        DEFAULT_REPLACEMENT.as_bytes(),
    )
    .map_err(|e| match e {
        SelectionError::Missing { .. } | SelectionError::EmptyValue(_) => {
            TaskError::fatal("report_mismatch", e.to_string())
        }
        SelectionError::SecretsFile(_) | SelectionError::SecretsFileVersion(_) => {
            TaskError::fatal("report_unreadable", e.to_string())
        }
        other => TaskError::fatal("selection_invalid", other.to_string()),
    })?;
    drop(plain);
    Ok(selection)
}

async fn clean_with(
    services: &Services,
    ctx: &TaskContext,
    job: &Job,
    selection: Selection,
    started: Instant,
    dir: Arc<tempfile::TempDir>,
) -> Result<serde_json::Value, TaskError> {
    let id = job.id;

    super::stage(ctx, id, WORKING, 5, "downloading the repository").await;
    let source =
        super::get_repository(services, &dir, ObjectKey::SourceBundle(id), "source.git").await?;
    let download_ms = started.elapsed().as_millis() as u64;

    // Rewrite, verify, package.
    let progress = Arc::new(CleanProgress::default());
    let cleaned = dir.path().join("cleaned.bundle");
    let archive = dir.path().join("cleaned.zip");
    let name = repository_name(&job.source_url);
    let options = CleanOptions {
        source_url: Some(job.source_url.clone()),
        ..CleanOptions::default()
    };
    let rewriting = {
        let (dir, cancel, progress) = (Arc::clone(&dir), ctx.cancel.flag(), Arc::clone(&progress));
        let (source, cleaned, archive) = (source.clone(), cleaned.clone(), archive.clone());
        tokio::task::spawn_blocking(move || -> Result<_, CleanError> {
            let work = dir.path().join("work");
            let scratch = dir.path().join("archive");
            for path in [&work, &scratch] {
                std::fs::create_dir_all(path).map_err(|e| CleanError::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            }
            let run = CleanRun {
                progress: Some(&progress),
                cancel: Some(&cancel),
            };
            let report = clean::clean(&source, &work, &selection, &options, &cleaned, &run)?;
            let packaging = Instant::now();
            clean::write_archive(
                &cleaned,
                report.bundle_index.as_deref(),
                &scratch,
                &name,
                &archive,
                ArchiveFormat::Zip,
            )?;
            Ok((report, packaging.elapsed().as_millis() as u64))
        })
    };
    let sample = || match progress.phase() {
        Phase::Preparing => (10, "preparing".to_owned()),
        Phase::Reading => (20, format!("reading {} objects", progress.objects_read())),
        Phase::Rewriting => (
            40,
            format!("rewriting: {} objects written", progress.objects_written()),
        ),
        Phase::Verifying | Phase::Done => (
            60,
            format!("verifying: {} objects checked", progress.objects_verified()),
        ),
    };
    let clean_started = Instant::now();
    let (report, archive_ms) = joined(super::reporting(ctx, id, WORKING, sample, rewriting).await)?
        .map_err(|e| match e {
            CleanError::Cancelled => TaskError::fatal("cancelled", e.to_string()),
            other => TaskError::fatal("clean_failed", other.to_string()),
        })?;
    let clean_ms = clean_started.elapsed().as_millis() as u64;

    super::stage(ctx, id, WORKING, 80, "uploading the cleaned repository").await;
    let upload_started = Instant::now();
    tokio::try_join!(
        super::put_bundle(
            services,
            ObjectKey::CleanedBundle(id),
            &cleaned,
            report.bundle_index.as_deref()
        ),
        async {
            services
                .storage
                .put_file(ObjectKey::Archive(id), &archive)
                .await
                .map_err(storage)
        },
    )?;
    let upload_ms = upload_started.elapsed().as_millis() as u64;
    let secrets_cleaned = i32::try_from(report.selected).unwrap_or(i32::MAX);
    let commits = i64::try_from(report.commits_rewritten).unwrap_or(i64::MAX);
    let stored = serde_json::to_value(&report)
        .map_err(|e| TaskError::fatal("clean_failed", e.to_string()))?;
    if !work::finish_clean(&ctx.db, id, secrets_cleaned, commits, &stored)
        .await
        .map_err(database)?
    {
        return Err(TaskError::fatal(
            "job_moved_on",
            "the job was stopped during the clean",
        ));
    }
    Ok(json!({
        "secrets_cleaned": secrets_cleaned,
        "commits_rewritten": commits,
        "commits_pruned": report.commits_pruned,
        "files": report.files,
        "refs_changed": report.changed_refs().count(),
        "lfs_orphaned": report.lfs_orphaned.len(),
        "bundle_bytes": report.bundle_bytes,
        "timings": {
            "download_ms": download_ms,
            "clean_ms": clean_ms - archive_ms,
            "archive_ms": archive_ms,
            "upload_ms": upload_ms,
        },
    }))
}

/// The archive's top directory: the repository's name from its URL.
fn repository_name(url: &str) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let name = last.strip_suffix(".git").unwrap_or(last);
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        "repository".into()
    } else {
        name
    }
}
