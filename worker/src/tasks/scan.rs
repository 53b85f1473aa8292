//! `scan_repository`: clone every ref, scan every reachable blob once, store the source
//! bundle, the encrypted report and a SARIF report, then the secrets (previews and keyed
//! hashes only), and move the job to `awaiting_selection` or `completed`.

use std::sync::Arc;
use std::time::Instant;

use deployguard::jobs::work::{self, FoundSecret, ScanOutcome};
use deployguard::jobs::{Job, JobStatus};
use deployguard::storage::ObjectKey;
use deployguard::tasks::JobRef;
use deployguard_engine::git::{self, remote};
use deployguard_engine::scan::{
    self, Progress, Report, Revisions, ScanRun, Scanner, Settings, Target,
};
use serde_json::json;

use super::{Services, database, io, joined, storage};
use crate::registry::{TaskContext, TaskError};

const WORKING: JobStatus = JobStatus::Scanning;

pub(super) async fn run(
    services: Arc<Services>,
    ctx: TaskContext,
    job: JobRef,
) -> Result<serde_json::Value, TaskError> {
    let job = match super::begin(&ctx, &job, JobStatus::Pending, WORKING, "cloning").await? {
        Ok(job) => job,
        Err(skipped) => return Ok(skipped),
    };
    let result = scan(&services, &ctx, &job).await;
    if result.is_err() {
        let id = job.id;
        let own = [
            ObjectKey::SourceBundle(id),
            ObjectKey::SourceIndex(id),
            ObjectKey::Sarif(id),
            ObjectKey::EncryptedReport(id),
        ];
        super::tidy(&services, &ctx, id, &own).await;
    }
    result
}

async fn scan(
    services: &Services,
    ctx: &TaskContext,
    job: &Job,
) -> Result<serde_json::Value, TaskError> {
    let id = job.id;
    let limits = &services.config;
    let dir = services
        .work
        .task_dir("scan", id)
        .map_err(io("work directory"))?;
    let mirror = dir.path().join("repo.git");
    let mut timings = serde_json::Map::new();
    let mut lap = Instant::now();
    let mut mark = |name: &str, lap: &mut Instant| {
        timings.insert(
            format!("{name}_ms"),
            json!(lap.elapsed().as_millis() as u64),
        );
        *lap = Instant::now();
    };

    // Clone.
    let credentials = super::credentials(
        services,
        job.source_credentials_id.as_deref(),
        &job.owner_id,
    )
    .await?;
    let (source, pinned) = super::reachable(services, &job.source_url).await?;
    let clone = {
        let (dir, mirror, cancel) = (Arc::clone(&dir), mirror.clone(), ctx.cancel.flag());
        let branch = job.source_branch.clone();
        let max_bytes = limits.max_repo_bytes;
        tokio::task::spawn_blocking(move || {
            let _dir = dir;
            remote::clone_remote(
                &source,
                &mirror,
                &remote::CloneOptions {
                    credentials: credentials.as_ref(),
                    pinned: &pinned,
                    cancel: Some(&cancel),
                    max_bytes: Some(max_bytes),
                    branch: branch.as_deref(),
                },
            )
        })
    };
    let sample = || {
        let mib = git::disk_usage(&mirror) >> 20;
        (2, format!("cloning ({mib} MiB)"))
    };
    joined(super::reporting(ctx, id, WORKING, sample, clone).await)?.map_err(clone_error)?;
    let objects = git::object_count(&mirror)
        .map_err(|e| TaskError::retryable("clone_failed", e.to_string()))?;
    if objects > limits.max_repo_objects {
        return Err(TaskError::fatal(
            "repository_too_large",
            format!(
                "the repository has {objects} objects, more than the limit of {}",
                limits.max_repo_objects
            ),
        ));
    }
    mark("clone", &mut lap);

    // Scan.
    super::stage(ctx, id, WORKING, 20, "scanning").await;
    let progress = Arc::new(Progress::default());
    let scanning = {
        let (dir, mirror, cancel) = (Arc::clone(&dir), mirror.clone(), ctx.cancel.flag());
        let (progress, key) = (Arc::clone(&progress), limits.hash_key.clone());
        tokio::task::spawn_blocking(move || -> Result<(Report, String), String> {
            let _dir = dir;
            let settings = match scan::settings::read_repository_file(
                &mirror,
                scan::settings::SETTINGS_FILE,
            ) {
                Some(text) => Settings::parse(scan::settings::SETTINGS_FILE, &text)
                    .map_err(|e| e.to_string())?,
                None => Settings::default(),
            };
            let scanner = Scanner::new(&settings)
                .map_err(|e| e.to_string())?
                .with_hash_key(key);
            let target = Target::Git {
                repo: mirror,
                revisions: Revisions::All,
            };
            let run = ScanRun {
                progress: Some(&progress),
                cancel: Some(&cancel),
            };
            let report = scanner.scan(&target, &run).map_err(|e| e.to_string())?;
            let sarif = report.to_sarif(scanner.rules());
            Ok((report, sarif))
        })
    };
    // Until every blob to scan is known (history is read first), the share done is not
    // known either: the stage says what is happening and the percent stays put, so it
    // only ever rises.
    let sample = || {
        let (done, total) = (progress.done(), progress.discovered());
        if !progress.enumeration_done() {
            return (20, format!("reading history: {total} blobs to scan so far"));
        }
        let fraction = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let percent = 20 + (fraction.min(1.0) * 65.0) as u8;
        (percent, format!("scanning {done}/{total} blobs"))
    };
    let (mut report, sarif) = joined(super::reporting(ctx, id, WORKING, sample, scanning).await)?
        .map_err(|e| TaskError::fatal("scan_failed", e))?;
    report.source.location = git::redact_url_userinfo(&job.source_url);
    mark("scan", &mut lap);

    // Upload: the bundle, then the reports.
    super::stage(ctx, id, WORKING, 85, "uploading the repository").await;
    let bundle = dir.path().join("source.bundle");
    let index = {
        let (dir, mirror, bundle) = (Arc::clone(&dir), mirror.clone(), bundle.clone());
        joined(
            tokio::task::spawn_blocking(move || {
                let _dir = dir;
                git::bundle::create_indexed(&mirror, &bundle)
            })
            .await,
        )?
        .map_err(|e| TaskError::fatal("bundle_failed", e.to_string()))?
        .ok_or_else(|| {
            TaskError::fatal(
                "empty_repository",
                "the repository has no branches or tags, so there is nothing to scan",
            )
        })?
    };
    let bundle_bytes =
        super::put_bundle(services, ObjectKey::SourceBundle(id), &bundle, Some(&index)).await?;
    super::stage(ctx, id, WORKING, 95, "uploading the reports").await;
    services
        .storage
        .put_bytes(ObjectKey::Sarif(id), sarif.into_bytes())
        .await
        .map_err(storage)?;
    let outcome = outcome(&report);
    let mut full = report;
    full.reveal_values();
    let sealed = limits
        .report_keys
        .seal(report_context(id).as_bytes(), full.to_json().as_bytes())
        .map_err(|e| TaskError::fatal("encryption_failed", e.to_string()))?;
    drop(full);
    services
        .storage
        .put_bytes(ObjectKey::EncryptedReport(id), sealed)
        .await
        .map_err(storage)?;
    mark("upload", &mut lap);

    // Record.
    let Some(status) = work::finish_scan(&ctx.db, id, &outcome)
        .await
        .map_err(database)?
    else {
        return Err(TaskError::fatal(
            "job_moved_on",
            "the job was stopped during the scan",
        ));
    };
    mark("record", &mut lap);
    tracing::info!(job_id = %id, secrets = outcome.secrets.len(), status = status.as_str(), "scan stored");
    Ok(json!({
        "status": status.as_str(),
        "secrets": outcome.secrets.len(),
        "blobs_scanned": outcome.blobs_scanned,
        "objects": objects,
        "bundle_bytes": bundle_bytes,
        "timings": timings,
    }))
}

/// What the encrypted report is bound to (its key): another job's report does not
/// decrypt here.
pub(super) fn report_context(job: uuid::Uuid) -> String {
    ObjectKey::EncryptedReport(job).to_string()
}

fn clone_error(err: remote::CloneError) -> TaskError {
    use remote::CloneError as E;
    let message = err.to_string();
    match err {
        E::Authentication { .. } => TaskError::fatal("authentication_failed", message),
        E::NotFound { .. } => TaskError::fatal("repository_not_found", message),
        E::TooLarge { .. } => TaskError::fatal("repository_too_large", message),
        E::Cancelled => TaskError::fatal("cancelled", message),
        E::Git(_) => TaskError::retryable("clone_failed", message),
    }
}

/// The rows the database keeps: previews, keyed hashes and locations.
fn outcome(report: &Report) -> ScanOutcome {
    let secrets = report
        .secrets
        .iter()
        .map(|s| {
            let mut hash = [0u8; 32];
            if let Ok(bytes) = hex::decode(&s.hash)
                && bytes.len() == 32
            {
                hash.copy_from_slice(&bytes);
            }
            let locations: Vec<serde_json::Value> = s
                .occurrences
                .iter()
                .map(|o| json!({"path": o.path, "commit": o.commit, "line": o.line, "column": o.column, "kind": o.kind, "encoding": o.encoding, "member": o.member, "author": o.author}))
                .collect();
            FoundSecret {
                rule_id: s.rule_id.clone(),
                secret_type: s.secret_type.clone(),
                preview: s.preview.clone(),
                value_hash: hash,
                hash_key_id: report.hash_key_id.clone(),
                locations: serde_json::Value::Array(locations),
                occurrences: i32::try_from(s.occurrences.len()).unwrap_or(i32::MAX).max(1),
                confidence: serde_json::to_value(s.confidence)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "medium".into()),
            }
        })
        .collect();
    // File findings and largest blobs are paths, sizes and ids: no value in them.
    let array = |value: Result<serde_json::Value, serde_json::Error>| {
        value.unwrap_or_else(|_| serde_json::Value::Array(Vec::new()))
    };
    ScanOutcome {
        secrets,
        files: array(serde_json::to_value(&report.files)),
        largest_blobs: array(serde_json::to_value(&report.largest_blobs)),
        blobs_scanned: report.stats.blobs_scanned as i64,
        blobs_skipped: report.stats.blobs_skipped as i64,
    }
}
