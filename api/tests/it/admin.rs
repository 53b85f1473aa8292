//! The admin panel's endpoints: queues, the dead-letter queue, stats and audit.

use std::sync::Arc;

use deployguard::queue::{Broker, Publisher, TaskBody, TaskMessage, WorkQueue};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Api, send};

/// Parks a scan task of `job_id` the way the worker does after its last retry.
async fn park(api: &Api, job_id: &str, reason: &str) -> String {
    let config = api.env.config();
    let publisher = Publisher::new(Arc::new(Broker::new(&config.broker, "test")));
    let message = TaskMessage::new(
        "deployguard.scan_repository",
        WorkQueue::Scan,
        TaskBody {
            job_id: Some(job_id.parse().unwrap()),
            user_id: Some("alice".into()),
            args: serde_json::Map::new(),
        },
    );
    let (properties, body) = message.encode();
    publisher
        .publish_dead_letter(&properties, &body, WorkQueue::Scan.name(), reason)
        .await
        .unwrap();
    message.id.to_string()
}

/// The task ids of the messages waiting in the scan queue (left in place).
async fn scan_queue_task_ids(api: &Api) -> Vec<String> {
    let conn = api.env.amqp_connection().await;
    let channel = conn.create_channel().await.unwrap();
    let mut ids = Vec::new();
    while let Some(got) = channel
        .basic_get(
            WorkQueue::Scan.name().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
    {
        if let Some(id) = got.delivery.properties.message_id() {
            ids.push(id.to_string());
        }
    }
    // Closing the channel returns every unacknowledged message to the queue.
    let _ = conn.close(200, "done".into()).await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_show_depth_and_consumers() {
    let api = Api::start().await;
    api.create_job("alice").await;
    api.create_job("alice").await;
    let (status, body) = send(api.admin(Method::GET, "/admin/queues")).await;
    assert_eq!(status, 200, "{body}");
    let queues = body["queues"].as_array().unwrap();
    let scan = queues
        .iter()
        .find(|q| q["name"] == "deployguard.scan")
        .unwrap();
    assert_eq!(scan["messages_ready"], 2);
    assert_eq!(scan["consumers"], 0);
    for name in [
        "deployguard",
        "deployguard.clean",
        "deployguard.push",
        "deployguard.dead",
    ] {
        assert!(
            queues.iter().any(|q| q["name"] == name),
            "{name} missing: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_requeued_with_their_job_revived_and_purged() {
    let api = Api::start().await;
    let job = api.create_job("alice").await;
    // The scan failed for good: the worker parked the task and failed the job.
    sqlx::query(
        "UPDATE jobs SET status = 'failed', error_code = 'retries_exhausted',
                error = 'clone failed 5 times' WHERE id = $1::uuid",
    )
    .bind(&job)
    .execute(&api.db())
    .await
    .unwrap();
    let task = park(&api, &job, "retries exhausted: clone failed").await;
    let other = api.create_job("alice").await;
    let second = park(&api, &other, "unknown task").await;

    let (status, body) = send(api.admin(Method::GET, "/admin/dead-letters")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 2);
    let first = &body["messages"][0];
    assert_eq!(first["task_id"], task.as_str());
    assert_eq!(first["task"], "deployguard.scan_repository");
    assert_eq!(first["job_id"], job.as_str());
    assert_eq!(first["reason"], "retries exhausted: clone failed");
    assert_eq!(first["queue"], "deployguard.scan");
    assert_eq!(first["requeueable"], true);
    // Listing takes nothing away.
    assert_eq!(api.env.ready_messages("deployguard.dead").await, 2);

    let scans_before = api.env.ready_messages("deployguard.scan").await;
    let (status, body) =
        send(api.admin(Method::POST, &format!("/admin/dead-letters/{task}/requeue"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requeued"], 1);
    assert_eq!(body["jobs_reset"], json!([job]));
    assert_eq!(api.env.ready_messages("deployguard.dead").await, 1);
    assert_eq!(
        api.env.ready_messages("deployguard.scan").await,
        scans_before + 1
    );
    let (_, detail) = send(api.call("alice", Method::GET, &format!("/jobs/{job}"))).await;
    assert_eq!(detail["job"]["status"], "pending", "{detail}");
    assert_eq!(detail["job"]["error"], serde_json::Value::Null);
    // The job now waits for the requeued message (a worker runs it; any other copy of
    // its task is skipped).
    let named: Option<String> =
        sqlx::query_scalar("SELECT task_id::text FROM jobs WHERE id = $1::uuid")
            .bind(&job)
            .fetch_one(&api.db())
            .await
            .unwrap();
    let queued = scan_queue_task_ids(&api).await;
    assert!(
        named
            .as_ref()
            .is_some_and(|id| *id != task && queued.contains(id)),
        "the job names {named:?}; queued: {queued:?}"
    );

    let (status, body) =
        send(api.admin(Method::POST, &format!("/admin/dead-letters/{task}/requeue"))).await;
    assert_eq!(status, 404, "already requeued: {body}");
    let (status, body) = send(api.admin(Method::DELETE, "/admin/dead-letters")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged"], 1);
    assert_eq!(api.env.ready_messages("deployguard.dead").await, 0);
    let _ = second;

    let (_, audit) = send(api.admin(Method::GET, "/admin/audit?actor_id=root-admin")).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "admin.dead_letter.purge",
            "admin.dead_letter.requeue",
            "admin.dead_letter.requeue"
        ]
    );
    assert_eq!(audit["entries"][1]["outcome"], "rejected");
    assert_eq!(audit["entries"][2]["outcome"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_all_sends_back_every_readable_dead_letter() {
    let api = Api::start().await;
    let a = api.create_job("alice").await;
    let b = api.create_job("alice").await;
    park(&api, &a, "x").await;
    park(&api, &b, "y").await;
    let (status, body) = send(api.admin(Method::POST, "/admin/dead-letters/requeue")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requeued"], 2);
    assert_eq!(body["jobs_reset"], json!([]), "neither job had failed");
    assert_eq!(api.env.ready_messages("deployguard.dead").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_jobs_by_status_and_secrets() {
    let api = Api::start().await;
    let a = api.create_job("alice").await;
    let b = api.create_job("bob").await;
    api.create_job("bob").await;
    api.set_status(&a, "awaiting_selection").await;
    api.add_secrets(&a, 3).await;
    sqlx::query(
        "UPDATE jobs SET status = 'completed', started_at = created_at,
                finished_at = created_at + interval '90 seconds' WHERE id = $1::uuid",
    )
    .bind(&b)
    .execute(&api.db())
    .await
    .unwrap();
    let (status, stats) = send(api.admin(Method::GET, "/admin/stats")).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["jobs_total"], 3);
    assert_eq!(stats["jobs_by_status"]["pending"], 1);
    assert_eq!(stats["jobs_by_status"]["awaiting_selection"], 1);
    assert_eq!(stats["jobs_by_status"]["completed"], 1);
    assert_eq!(stats["jobs_by_status"]["pushed"], 0);
    assert_eq!(stats["secrets_found"], 3);
    assert_eq!(stats["duration_seconds"]["count"], 1);
    assert_eq!(stats["duration_seconds"]["p50"], 90.0);
    let (_, none) = send(api.admin(Method::GET, "/admin/stats?since=2999-01-01T00:00:00Z")).await;
    assert_eq!(none["jobs_total"], 0);
    let (status, _) = send(api.admin(Method::GET, "/admin/stats?since=yesterday")).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_filters_are_400_not_500() {
    let api = Api::start().await;
    for path in [
        "/admin/jobs?user_id=a%00b",
        "/admin/audit?actor_id=%00",
        "/admin/audit?action=x%01y",
        "/admin/jobs?created_after=-200000-01-01T00:00:00Z",
        "/admin/stats?until=200000-01-01T00:00:00Z",
        "/admin/audit?since=0001-01-01T00:00:00Z",
    ] {
        let (status, body) = send(api.admin(Method::GET, path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "validation_error", "{path}");
    }
    // A forged cursor far outside the database's time range.
    use base64::Engine;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}.{}",
        i64::MAX / 2,
        uuid::Uuid::nil()
    ));
    let (status, _) = send(api.call("alice", Method::GET, &format!("/jobs?cursor={cursor}"))).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_job_moved_on_stays_parked() {
    let api = Api::start().await;
    let job = api.create_job("alice").await;
    api.set_status(&job, "completed").await;
    park(&api, &job, "x").await;
    let scans = api.env.ready_messages("deployguard.scan").await;
    let (status, body) = send(api.admin(Method::POST, "/admin/dead-letters/requeue")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requeued"], 0);
    assert_eq!(body["skipped"], 1);
    assert_eq!(api.env.ready_messages("deployguard.dead").await, 1);
    assert_eq!(api.env.ready_messages("deployguard.scan").await, scans);
}
