//! The periodic tasks run by the real worker from the default queue, against real
//! PostgreSQL and S3: expiry deletes exactly the expired jobs' objects, storage cleanup
//! exactly the orphans.

use std::time::Duration;

use chrono::SubsecRound;
use deployguard::jobs::JobStatus;
use deployguard::queue::Task;
use deployguard::queue::WorkQueue;
use deployguard::storage::ObjectKey;
use deployguard::tasks::{CleanupExpiredJobs, Periodic, RequeueStuckJobs, StorageCleanup};
use deployguard_testkit::{JobRow, TestEnv};
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Worker, publisher, task, wait_state};

const SECS: Duration = Duration::from_secs(1);

const HOUR: f64 = 3600.0;
const DAY: f64 = 86_400.0;

/// A job row in `status`, created two days ago, expiring in `expires_in` seconds
/// (negative: in the past).
async fn job(env: &TestEnv, status: JobStatus, expires_in: f64) -> Uuid {
    JobRow::new()
        .status(status)
        .created_ago(Duration::from_secs(2 * 86_400))
        .expires_in_secs(expires_in)
        .insert(env)
        .await
}

/// Stores the objects a job has after its scan.
async fn store(env: &TestEnv, id: Uuid) -> Vec<String> {
    let keys = [
        ObjectKey::SourceBundle(id),
        ObjectKey::SourceIndex(id),
        ObjectKey::Sarif(id),
    ];
    for key in keys {
        env.storage().put_bytes(key, b"x".to_vec()).await.unwrap();
    }
    keys.iter().map(ToString::to_string).collect()
}

async fn all_keys(env: &TestEnv) -> Vec<String> {
    let mut keys = Vec::new();
    for prefix in ["repos/", "reports/", "cleaned/", "other/"] {
        keys.extend(env.storage().list_keys(prefix).await.unwrap());
    }
    keys.sort();
    keys
}

/// Publishes a periodic task as beat does and waits for its success; its result.
async fn run(env: &TestEnv, worker: &Worker, name: &str) -> Value {
    let message = task(name, WorkQueue::Default, json!({}));
    publisher(env).publish(&message).await.unwrap();
    assert!(
        wait_state(env, message.id, "success", 60 * SECS).await,
        "{}",
        worker.log()
    );
    sqlx::query_scalar("SELECT result FROM task_results WHERE task_id = $1")
        .bind(message.id)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_expires_exactly_the_jobs_past_their_time_and_deletes_their_objects() {
    let env = TestEnv::new().await;
    let waiting = job(&env, JobStatus::AwaitingSelection, -HOUR).await;
    let busy = job(&env, JobStatus::Scanning, -60.0).await;
    let failed = job(&env, JobStatus::Failed, -DAY).await;
    let live = job(&env, JobStatus::AwaitingSelection, HOUR).await;
    let mut expired_keys = Vec::new();
    for id in [waiting, busy, failed] {
        expired_keys.extend(store(&env, id).await);
    }
    let live_keys = store(&env, live).await;
    let worker = Worker::start(&env, &[], &[]).await;

    let result = run(&env, &worker, CleanupExpiredJobs::NAME).await;
    assert_eq!(result["expired"], 3, "{result}");
    assert_eq!(result["objects_deleted"], 9, "{result}");
    for id in [waiting, busy, failed] {
        assert_eq!(env.job_status(id).await, "expired");
    }
    assert_eq!(env.job_status(live).await, "awaiting_selection");
    assert_eq!(all_keys(&env).await, {
        let mut keys = live_keys.clone();
        keys.sort();
        keys
    });
    let audited: Vec<(Uuid, Value)> = sqlx::query_as(
        "SELECT job_id, details FROM audit_logs
         WHERE action = 'job.expire' AND actor_id = 'system:beat' ORDER BY job_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let mut expected = vec![waiting, busy, failed];
    expected.sort();
    assert_eq!(
        audited.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        expected
    );
    assert!(
        audited
            .iter()
            .any(|(_, d)| d["previous_status"] == "scanning"),
        "{audited:?}"
    );

    // Again: nothing more to do, nothing more deleted.
    let again = run(&env, &worker, CleanupExpiredJobs::NAME).await;
    assert_eq!(
        again,
        json!({"expired": 0, "objects_deleted": 0, "jobs_with_objects_left": 0})
    );
    assert_eq!(all_keys(&env).await.len(), live_keys.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_cleanup_deletes_exactly_the_objects_no_live_job_owns() {
    let env = TestEnv::new().await;
    let live = job(&env, JobStatus::Cleaned, DAY).await;
    let failed = job(&env, JobStatus::Failed, DAY).await;
    let cancelled = job(&env, JobStatus::Cancelled, DAY).await;
    let expired = job(&env, JobStatus::Expired, -DAY).await;
    let mut kept = store(&env, live).await;
    kept.extend(store(&env, failed).await);
    kept.push("other/not-ours.txt".into());
    env.put_object("other/not-ours.txt", b"x").await;
    for id in [cancelled, expired] {
        store(&env, id).await;
    }
    env.put_object("repos/not-a-job/file", b"x").await;
    // A job that no longer exists, with more objects than one listing page holds.
    let gone = Uuid::now_v7();
    let orphans: Vec<String> = (0..1_100)
        .map(|i| format!("cleaned/{gone}/part-{i:04}"))
        .collect();
    futures_util::stream::iter(&orphans)
        .for_each_concurrent(16, |key| env.put_object(key, b"x"))
        .await;
    let worker = Worker::start(&env, &[], &[]).await;

    let result = run(&env, &worker, StorageCleanup::NAME).await;
    assert_eq!(result["objects_deleted"], 3 + 3 + 1 + 1_100, "{result}");
    kept.sort();
    assert_eq!(all_keys(&env).await, kept);
    // The jobs themselves are untouched.
    assert_eq!(env.job_status(live).await, "cleaned");
    assert_eq!(env.job_status(cancelled).await, "cancelled");

    let again = run(&env, &worker, StorageCleanup::NAME).await;
    assert_eq!(again["objects_deleted"], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_fired_by_beat_is_carried_out_and_its_outcome_recorded() {
    let env = TestEnv::new().await;
    let expired = job(&env, JobStatus::AwaitingSelection, -HOUR).await;
    let worker = Worker::start(&env, &[], &[]).await;
    let publisher = publisher(&env);
    let slot = chrono::Utc::now().trunc_subsecs(0);
    for task in [Periodic::CleanupExpiredJobs, Periodic::StorageCleanup] {
        let fired = deployguard_beat::fire::fire(&env.db, &publisher, "test-beat", task, slot)
            .await
            .unwrap();
        assert_eq!(fired, deployguard_beat::fire::Fired::Published);
    }
    // The same time again is not published again.
    let again = deployguard_beat::fire::fire(
        &env.db,
        &publisher,
        "other-beat",
        Periodic::CleanupExpiredJobs,
        slot,
    )
    .await
    .unwrap();
    assert_eq!(again, deployguard_beat::fire::Fired::AlreadyClaimed);

    let recorded = crate::eventually(30 * SECS, || async {
        deployguard_beat::fire::record_outcomes(&env.db)
            .await
            .unwrap();
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM beat_runs ORDER BY task_name")
                .fetch_all(&env.db)
                .await
                .unwrap();
        statuses == ["succeeded", "succeeded"]
    })
    .await;
    assert!(recorded, "{}", worker.log());
    assert_eq!(env.job_status(expired).await, "expired");
    let published_at: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("SELECT published_at FROM beat_runs")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert!(published_at.iter().all(Option::is_some));
}

/// A job in `status` and `stage`, created a day ago and last updated `ago` seconds ago.
async fn job_updated(env: &TestEnv, status: JobStatus, stage: &str, ago: u64) -> Uuid {
    JobRow::new()
        .status(status)
        .stage(stage)
        .created_ago(Duration::from_secs(86_400))
        .updated_ago(Duration::from_secs(ago))
        .insert(env)
        .await
}

/// A task record for `job` whose last heartbeat was `ago` ago.
async fn task_heard(env: &TestEnv, job: Uuid, ago: &str) {
    sqlx::query(
        "INSERT INTO task_results (task_id, task_name, job_id, state, started_at, updated_at)
         VALUES ($1, 'deployguard.scan_repository', $2, 'started', now() - $3::interval,
                 now() - $3::interval)",
    )
    .bind(Uuid::now_v7())
    .bind(job)
    .bind(ago)
    .execute(&env.db)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_jobs_are_queued_again_and_failed_after_three_tries() {
    let env = TestEnv::new().await;
    // Lost in the queue: a scan and a clean queued two hours ago, never picked up.
    let lost_scan = job_updated(&env, JobStatus::Pending, "queued", 7200).await;
    let lost_clean = job_updated(&env, JobStatus::Cleaning, "queued", 7200).await;
    // A worker that vanished mid-scan, its message not redelivered.
    let silent = job_updated(&env, JobStatus::Scanning, "scanning 10/90 blobs", 3 * 3600).await;
    task_heard(&env, silent, "3 hours").await;
    // Not stuck: queued a minute ago; a long scan whose worker still beats.
    let fresh = job_updated(&env, JobStatus::Pending, "queued", 60).await;
    let beating = job_updated(&env, JobStatus::Scanning, "cloning (900 MiB)", 3 * 3600).await;
    task_heard(&env, beating, "5 seconds").await;
    // Requeued three times already.
    let hopeless = job_updated(&env, JobStatus::Pushing, "queued", 7200).await;
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO audit_logs (actor_id, action, job_id, details, outcome)
             VALUES ('system:beat', 'job.requeue', $1, jsonb_build_object('status', 'pushing'),
                     'success')",
        )
        .bind(hopeless)
        .execute(&env.db)
        .await
        .unwrap();
    }
    // This worker serves the default queue only: requeued job tasks stay queued.
    let worker = Worker::start(&env, &["--queues", "default"], &[]).await;
    let message = task(
        RequeueStuckJobs::NAME,
        WorkQueue::Default,
        json!({"queued_secs": 600, "silent_secs": 3600}),
    );
    publisher(&env).publish(&message).await.unwrap();
    assert!(
        wait_state(&env, message.id, "success", 60 * SECS).await,
        "{}",
        worker.log()
    );
    let result: Value = sqlx::query_scalar("SELECT result FROM task_results WHERE task_id = $1")
        .bind(message.id)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(result, json!({"requeued": 3, "failed": 1, "waiting": 0}));

    // The relay publishes the staged messages: one scan for each of the two scans, one
    // clean; nothing for the others.
    let queued = crate::eventually(30 * SECS, || async {
        env.ready_messages(WorkQueue::Scan.name()).await == 2
            && env.ready_messages(WorkQueue::Clean.name()).await == 1
    })
    .await;
    assert!(queued, "{}", worker.log());
    assert_eq!(env.ready_messages(WorkQueue::Push.name()).await, 0);
    let requeued: Vec<Uuid> = sqlx::query_scalar(
        "SELECT job_id FROM outbox WHERE published_at IS NOT NULL ORDER BY job_id",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let mut expected = vec![lost_scan, lost_clean, silent];
    expected.sort();
    assert_eq!(requeued, expected);
    for id in [lost_scan, lost_clean, silent] {
        let (status, stage): (String, Option<String>) =
            sqlx::query_as("SELECT status, stage FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&env.db)
                .await
                .unwrap();
        assert_eq!(stage.as_deref(), Some("queued"), "{status}");
    }
    // The job now names its new message: a late copy of the old one would be skipped.
    let (named, staged): (Option<Uuid>, Uuid) = sqlx::query_as(
        "SELECT j.task_id, o.message_id FROM jobs j JOIN outbox o ON o.job_id = j.id
         WHERE j.id = $1",
    )
    .bind(lost_scan)
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(named, Some(staged));
    let (status, code, _) = crate::job_row(&env, hopeless).await;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("task_lost"))
    );
    assert_eq!(crate::job_row(&env, fresh).await.0, "pending");
    assert_eq!(crate::job_row(&env, beating).await.0, "scanning");

    // Run again at once: the requeued jobs were just touched, so nothing moves. A job
    // lost in the queue meanwhile is left alone too while the scan queue holds
    // messages: its own may be among them.
    let behind = job_updated(&env, JobStatus::Pending, "queued", 7200).await;
    let again = task(
        RequeueStuckJobs::NAME,
        WorkQueue::Default,
        json!({"queued_secs": 600, "silent_secs": 3600}),
    );
    publisher(&env).publish(&again).await.unwrap();
    assert!(wait_state(&env, again.id, "success", 60 * SECS).await);
    let result: Value = sqlx::query_scalar("SELECT result FROM task_results WHERE task_id = $1")
        .bind(again.id)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(result, json!({"requeued": 0, "failed": 0, "waiting": 1}));
    let (status, stage): (String, Option<String>) =
        sqlx::query_as("SELECT status, stage FROM jobs WHERE id = $1")
            .bind(behind)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), stage.as_deref()),
        ("pending", Some("queued"))
    );
    assert_eq!(env.ready_messages(WorkQueue::Scan.name()).await, 2);
}
