use std::time::{Duration, Instant};

use deployguard::queue::Task;
use deployguard::queue::message::REASON_HEADER;
use deployguard::queue::topology::DEAD_LETTER_QUEUE;
use deployguard::queue::{TaskMessage, WorkQueue};
use deployguard_testkit::TestEnv;
use deployguard_worker::diagnostic::{Effect, FAIL_POLICY, Fail, Noop, Sleep};
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use serde_json::json;
use uuid::Uuid;

use crate::{Worker, eventually, insert_job, job_row, publisher, task, task_state, wait_state};

const SECS: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_once_are_recorded_and_counted_in_metrics() {
    let env = TestEnv::new().await;
    let worker = Worker::start(&env, &["--concurrency", "2"], &[]).await;
    let publisher = publisher(&env);
    let messages: Vec<TaskMessage> = (0..20)
        .map(|_| task(Noop::NAME, WorkQueue::Default, json!({})))
        .collect();
    for outcome in publisher.publish_many(&messages).await {
        outcome.unwrap();
    }
    for message in &messages {
        assert!(
            wait_state(&env, message.id, "success", 20 * SECS).await,
            "{}",
            worker.log()
        );
    }
    let (workers, unfinished): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT worker), count(*) FILTER (WHERE finished_at IS NULL OR started_at IS NULL)
         FROM task_results",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!((workers, unfinished), (1, 0));

    let text = worker.metrics_text().await;
    let line = format!(
        "deployguard_worker_tasks_succeeded_total{{task=\"{}\"}} 20",
        Noop::NAME
    );
    assert!(text.contains(&line), "{text}");
    assert!(
        text.contains("deployguard_worker_publish_to_start_seconds_count 20"),
        "{text}"
    );
    assert!(
        text.contains("deployguard_worker_tasks_in_flight 0"),
        "{text}"
    );
    let health = reqwest::get(format!("http://{}/health/ready", worker.metrics))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(env.ready_messages("deployguard").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_loses_nothing_and_the_effect_happens_once() {
    let env = TestEnv::new().await;
    let mut first = Worker::start(&env, &[], &[]).await;
    let publisher = publisher(&env);
    let message = task(Effect::NAME, WorkQueue::Clean, json!({"seconds": 2.5}));
    publisher.publish(&message).await.unwrap();
    assert!(
        wait_state(&env, message.id, "started", 10 * SECS).await,
        "{}",
        first.log()
    );
    let second = Worker::start(&env, &[], &[]).await;

    first.signal("KILL");
    first.exited(5 * SECS).await.unwrap();
    assert!(
        wait_state(&env, message.id, "success", 30 * SECS).await,
        "{}",
        second.log()
    );

    let effects = effects(&env, message.id).await;
    assert_eq!(effects, 1);
    let (attempt, worker): (i32, String) =
        sqlx::query_as("SELECT attempt, worker FROM task_results WHERE task_id = $1")
            .bind(message.id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(attempt, 1, "a redelivery is not a retry");
    assert!(
        second.log().contains(&worker),
        "the second worker finished it"
    );
    assert!(
        eventually(10 * SECS, || async {
            env.ready_messages("deployguard.clean").await == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_unknown_messages_are_dead_lettered_with_a_reason_and_fail_their_job() {
    let env = TestEnv::new().await;
    let worker = Worker::start(&env, &[], &[]).await;
    let publisher = publisher(&env);
    // Make sure the topology exists before raw publishing.
    publisher
        .publish(&task(Noop::NAME, WorkQueue::Scan, json!({})))
        .await
        .unwrap();

    let garbage_job = insert_job(&env).await;
    let conn = env.amqp_connection().await;
    let channel = conn.create_channel().await.unwrap();
    // JSON, but no headers and a field no task body has.
    let body = format!(r#"{{"job_id":"{garbage_job}","surprise":true}}"#);
    channel
        .basic_publish(
            "deployguard.tasks".into(),
            "deployguard.scan".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let unknown_job = insert_job(&env).await;
    let mut unknown = task("deployguard.no_such_task", WorkQueue::Scan, json!({}));
    unknown.body.job_id = Some(unknown_job);
    publisher.publish(&unknown).await.unwrap();

    assert!(
        eventually(15 * SECS, || async {
            env.ready_messages(DEAD_LETTER_QUEUE).await == 2
        })
        .await,
        "{}",
        worker.log()
    );
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let parked = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        let headers = parked.delivery.properties.headers().clone().unwrap();
        reasons.push(
            headers
                .inner()
                .get(REASON_HEADER)
                .unwrap()
                .as_long_string()
                .unwrap()
                .to_string(),
        );
    }
    reasons.sort();
    assert!(reasons[0].contains("no task header"), "{reasons:?}");
    assert!(
        reasons[1].contains("unknown task \"deployguard.no_such_task\""),
        "{reasons:?}"
    );

    let (status, code, error) = job_row(&env, garbage_job).await;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("invalid_task_message"))
    );
    assert!(error.unwrap().contains("no task header"));
    let (status, _, error) = job_row(&env, unknown_job).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("unknown task"));
    assert_eq!(
        task_state(&env, unknown.id).await.as_deref(),
        Some("dead_lettered")
    );
    assert!(worker.log().contains("dead-lettered"));
}

/// How many times the diagnostic effect task wrote its effect.
async fn effects(env: &TestEnv, task_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'diagnostic.effect' AND details->>'task_id' = $1",
    )
    .bind(task_id.to_string())
    .fetch_one(&env.db)
    .await
    .unwrap()
}

/// When each attempt of a task started, from the diagnostic task's audit rows.
async fn attempt_times(env: &TestEnv, task_id: Uuid) -> Vec<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar(
        "SELECT occurred_at FROM audit_logs
         WHERE action = 'diagnostic.attempt' AND details->>'task_id' = $1 ORDER BY occurred_at",
    )
    .bind(task_id.to_string())
    .fetch_all(&env.db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_backoff_policy_then_dead_letter_and_fail_the_job() {
    let env = TestEnv::new().await;
    let worker = Worker::start(&env, &[], &[]).await;
    let publisher = publisher(&env);

    // Fails twice, then succeeds: two retries, 1 s and 2 s (±20 %) apart.
    let recovering = task(Fail::NAME, WorkQueue::Push, json!({"times": 2}));
    publisher.publish(&recovering).await.unwrap();
    // Always fails: four attempts, then the dead-letter queue.
    let job = insert_job(&env).await;
    let mut hopeless = task(Fail::NAME, WorkQueue::Push, json!({"times": 99}));
    hopeless.body.job_id = Some(job);
    publisher.publish(&hopeless).await.unwrap();

    assert!(
        wait_state(&env, recovering.id, "success", 30 * SECS).await,
        "{}",
        worker.log()
    );
    let times = attempt_times(&env, recovering.id).await;
    assert_eq!(times.len(), 3);
    for (retry, pair) in times.windows(2).enumerate() {
        let gap = (pair[1] - pair[0]).to_std().unwrap();
        let (low, high) = FAIL_POLICY.delay_bounds(retry as u32 + 1);
        assert!(
            gap >= low && gap <= high + Duration::from_millis(700),
            "retry {} came after {gap:?}, policy says {low:?}..{high:?}",
            retry + 1
        );
    }

    assert!(
        wait_state(&env, hopeless.id, "dead_lettered", 40 * SECS).await,
        "{}",
        worker.log()
    );
    assert_eq!(attempt_times(&env, hopeless.id).await.len(), 4);
    let (status, code, error) = job_row(&env, job).await;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("retries_exhausted"))
    );
    assert!(error.unwrap().contains("gave up after 4 attempts"));
    assert!(
        eventually(15 * SECS, || async {
            env.ready_messages(DEAD_LETTER_QUEUE).await == 1
        })
        .await
    );
    let text = worker.metrics_text().await;
    assert!(
        text.contains(&format!(
            "deployguard_worker_tasks_retried_total{{task=\"{}\"}} 5",
            Fail::NAME
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_is_taken_by_queue_order_then_by_message_priority() {
    let env = TestEnv::new().await;
    let publisher = publisher(&env);
    let mut expected = Vec::new();
    let mut messages = Vec::new();
    // Published lowest first; the worker is not running yet.
    for queue in [
        WorkQueue::Default,
        WorkQueue::Push,
        WorkQueue::Clean,
        WorkQueue::Scan,
    ] {
        let mut in_queue = Vec::new();
        for priority in [1, 9, 5] {
            let message = task(Noop::NAME, queue, json!({})).with_job_priority(priority);
            in_queue.push((priority, message.id));
            messages.push(message);
        }
        in_queue.sort_by_key(|p| std::cmp::Reverse(p.0));
        expected.splice(0..0, in_queue.into_iter().map(|(_, id)| id));
    }
    for outcome in publisher.publish_many(&messages).await {
        outcome.unwrap();
    }

    let worker = Worker::start(&env, &["--concurrency", "1"], &[]).await;
    for id in &expected {
        assert!(
            wait_state(&env, *id, "success", 20 * SECS).await,
            "{}",
            worker.log()
        );
    }
    let order: Vec<Uuid> =
        sqlx::query_scalar("SELECT task_id FROM task_results ORDER BY started_at")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_queue_worker_takes_higher_priorities_first() {
    let env = TestEnv::new().await;
    let publisher = publisher(&env);
    // Job priorities; 0 and 3 share the broker's low level and keep their order.
    let messages: Vec<TaskMessage> = [0, 3, 9, 6]
        .into_iter()
        .map(|p| task(Noop::NAME, WorkQueue::Scan, json!({})).with_job_priority(p))
        .collect();
    for outcome in publisher.publish_many(&messages).await {
        outcome.unwrap();
    }
    let worker = Worker::start(&env, &["--queues", "scan", "--concurrency", "1"], &[]).await;
    for message in &messages {
        assert!(
            wait_state(&env, message.id, "success", 20 * SECS).await,
            "{}",
            worker.log()
        );
    }
    let order: Vec<Uuid> =
        sqlx::query_scalar("SELECT task_id FROM task_results ORDER BY started_at")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let expected: Vec<Uuid> = [2, 3, 0, 1].map(|i| messages[i].id).to_vec();
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limits_stop_then_kill_a_task_and_free_its_slot() {
    let env = TestEnv::new().await;
    let worker = Worker::start(
        &env,
        &["--concurrency", "1"],
        &[
            ("TASK_SOFT_TIME_LIMIT_SECS", "1"),
            ("TASK_TIME_LIMIT_SECS", "2"),
        ],
    )
    .await;
    let publisher = publisher(&env);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("sleep.pid");

    // Ignores the soft limit, in a child process: killed at the hard limit.
    let hanging_job = insert_job(&env).await;
    let mut hanging = task(
        Sleep::NAME,
        WorkQueue::Scan,
        json!({"seconds": 600, "child": true, "ignore_cancel": true, "pid_file": pid_file}),
    );
    hanging.body.job_id = Some(hanging_job);
    // Stops when asked at the soft limit.
    let polite = task(Sleep::NAME, WorkQueue::Scan, json!({"seconds": 600}));
    let after = task(Noop::NAME, WorkQueue::Scan, json!({}));
    for message in [&hanging, &polite, &after] {
        publisher.publish(message).await.unwrap();
    }

    let started = Instant::now();
    assert!(
        wait_state(&env, hanging.id, "failure", 15 * SECS).await,
        "{}",
        worker.log()
    );
    assert!(started.elapsed() >= 2 * SECS);
    let (status, code, error) = job_row(&env, hanging_job).await;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("time_limit"))
    );
    assert!(error.unwrap().contains("hard time limit of 2 s"));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let gone = eventually(5 * SECS, || async {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.split_whitespace().nth(2) == Some("Z"),
        }
    })
    .await;
    assert!(gone, "the task's child process outlived the hard limit");

    assert!(
        wait_state(&env, polite.id, "failure", 10 * SECS).await,
        "{}",
        worker.log()
    );
    let error: String = sqlx::query_scalar("SELECT error FROM task_results WHERE task_id = $1")
        .bind(polite.id)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert!(error.contains("soft time limit"), "{error}");
    assert!(
        wait_state(&env, after.id, "success", 10 * SECS).await,
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_stops_its_running_task_promptly() {
    let env = TestEnv::new().await;
    let worker = Worker::start(&env, &[], &[("TASK_LEASE_SECS", "60")]).await;
    let job = insert_job(&env).await;
    let mut message = task(Sleep::NAME, WorkQueue::Scan, json!({"seconds": 600}));
    message.body.job_id = Some(job);
    publisher(&env).publish(&message).await.unwrap();
    assert!(
        wait_state(&env, message.id, "started", 10 * SECS).await,
        "{}",
        worker.log()
    );

    sqlx::query("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1")
        .bind(job)
        .execute(&env.db)
        .await
        .unwrap();
    let cancelled = Instant::now();
    // The heartbeat would notice within 15 s; the notification does it at once.
    assert!(
        wait_state(&env, message.id, "revoked", 3 * SECS).await,
        "{}",
        worker.log()
    );
    assert!(cancelled.elapsed() < 3 * SECS);
    assert_eq!(job_row(&env, job).await.0, "cancelled");

    // A task of the cancelled job that is still queued never runs.
    let mut late = task(Effect::NAME, WorkQueue::Scan, json!({"seconds": 0}));
    late.body.job_id = Some(job);
    publisher(&env).publish(&late).await.unwrap();
    assert!(
        wait_state(&env, late.id, "revoked", 10 * SECS).await,
        "{}",
        worker.log()
    );
    assert_eq!(effects(&env, late.id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_short_tasks_and_hands_back_the_rest() {
    let env = TestEnv::new().await;
    let mut worker = Worker::start(
        &env,
        &["--concurrency", "2"],
        &[("WORKER_SHUTDOWN_GRACE_SECS", "3")],
    )
    .await;
    let publisher = publisher(&env);
    let short = task(Sleep::NAME, WorkQueue::Clean, json!({"seconds": 1.5}));
    let long = task(Sleep::NAME, WorkQueue::Clean, json!({"seconds": 600}));
    publisher.publish(&short).await.unwrap();
    publisher.publish(&long).await.unwrap();
    assert!(wait_state(&env, short.id, "started", 10 * SECS).await);
    assert!(wait_state(&env, long.id, "started", 10 * SECS).await);
    let queued = task(Noop::NAME, WorkQueue::Clean, json!({}));
    publisher.publish(&queued).await.unwrap();

    worker.signal("TERM");
    let status = worker.exited(15 * SECS).await.expect("worker did not stop");
    assert!(status.success(), "{}", worker.log());
    assert_eq!(task_state(&env, short.id).await.as_deref(), Some("success"));
    assert_eq!(
        task_state(&env, long.id).await.as_deref(),
        Some("received"),
        "claim released"
    );
    assert_eq!(
        task_state(&env, queued.id).await,
        None,
        "nothing new was started"
    );
    assert!(
        eventually(5 * SECS, || async {
            env.ready_messages("deployguard.clean").await == 2
        })
        .await,
        "the long task and the queued one are back in the queue"
    );

    // The next worker picks both up at once (no lease to wait out).
    let next = Worker::start(&env, &["--concurrency", "2"], &[]).await;
    assert!(
        wait_state(&env, queued.id, "success", 10 * SECS).await,
        "{}",
        next.log()
    );
    assert!(
        wait_state(&env, long.id, "started", 10 * SECS).await,
        "{}",
        next.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_staged_in_the_outbox_is_published_by_the_relay() {
    let env = TestEnv::new().await;
    let job = insert_job(&env).await;
    let mut message = task(Noop::NAME, WorkQueue::Scan, json!({}));
    message.body.job_id = Some(job);
    // Committed with the job, and the process "died" before publishing.
    let mut tx = env.db.begin().await.unwrap();
    deployguard::queue::outbox::stage(&mut tx, &message)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // ... and that was longer ago than the grace the relay leaves the stager.
    sqlx::query("UPDATE outbox SET available_at = now() WHERE message_id = $1")
        .bind(message.id)
        .execute(&env.db)
        .await
        .unwrap();

    let worker = Worker::start(&env, &[], &[]).await;
    assert!(
        wait_state(&env, message.id, "success", 15 * SECS).await,
        "{}",
        worker.log()
    );
    let published: bool =
        sqlx::query_scalar("SELECT published_at IS NOT NULL FROM outbox WHERE message_id = $1")
            .bind(message.id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert!(published);
}

/// Restarts the broker itself, so it runs alone: `scripts/test.sh` runs ignored tests
/// in a second, serial pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts RabbitMQ; run alone (scripts/test.sh does)"]
async fn exclusive_rabbitmq_restart_mid_run_loses_no_task() {
    let env = TestEnv::new().await;
    let worker = Worker::start(&env, &["--concurrency", "2"], &[]).await;
    let publisher = publisher(&env);
    // Two in flight across the restart (their acks die with the connection), thirty queued.
    let mut messages: Vec<TaskMessage> = (0..2)
        .map(|_| task(Effect::NAME, WorkQueue::Scan, json!({"seconds": 3})))
        .collect();
    messages.extend((0..30).map(|_| task(Noop::NAME, WorkQueue::Clean, json!({}))));
    for outcome in publisher.publish_many(&messages).await {
        outcome.unwrap();
    }
    assert!(
        wait_state(&env, messages[0].id, "started", 10 * SECS).await,
        "{}",
        worker.log()
    );

    deployguard_testkit::rabbitmqctl("stop_app");
    tokio::time::sleep(2 * SECS).await;
    deployguard_testkit::rabbitmqctl("start_app");

    for message in &messages {
        assert!(
            wait_state(&env, message.id, "success", 90 * SECS).await,
            "task {} of {} lost:\n{}",
            message.id,
            message.task,
            worker.log()
        );
    }
    let log = worker.log();
    assert!(log.contains("reconnecting"), "{log}");
    for message in &messages[..2] {
        assert_eq!(
            effects(&env, message.id).await,
            1,
            "the redelivered in-flight task ran again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_a_failed_attempt_does_not_run_again() {
    let env = TestEnv::new().await;
    let worker = Worker::start(&env, &[], &[]).await;
    let publisher = publisher(&env);
    let message = task(Fail::NAME, WorkQueue::Push, json!({"times": 99}));
    publisher.publish(&message).await.unwrap();
    assert!(
        wait_state(&env, message.id, "retry", 10 * SECS).await,
        "{}",
        worker.log()
    );
    // The same first attempt again (an outbox double publish, a redelivery after a lost ack).
    publisher.publish(&message).await.unwrap();

    assert!(
        wait_state(&env, message.id, "dead_lettered", 40 * SECS).await,
        "{}",
        worker.log()
    );
    tokio::time::sleep(SECS).await;
    assert_eq!(
        attempt_times(&env, message.id).await.len(),
        4,
        "{}",
        worker.log()
    );
    let text = worker.metrics_text().await;
    assert!(
        text.contains(&format!(
            "deployguard_worker_tasks_duplicates_total{{task=\"{}\"}} 1",
            Fail::NAME
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_started_together_on_one_work_dir_all_start_and_sweep_only_the_dead() {
    let env = TestEnv::new().await;
    let base = tempfile::tempdir().unwrap();
    let work_dir = base.path().display().to_string();
    let vars = [("WORK_DIR", work_dir.as_str())];
    for round in 0..3 {
        // A worker that was killed outright left its area behind, unlocked.
        let crashed = base.path().join(format!("worker-crashed-{round}"));
        std::fs::create_dir_all(crashed.join("scan-x")).unwrap();
        std::fs::write(crashed.join(".lock"), b"").unwrap();
        let starting = (0..4).map(|_| Worker::start(&env, &[], &vars));
        let workers = futures_util::future::join_all(starting).await;
        assert!(!crashed.exists(), "round {round}: the dead area stays");
        let areas = std::fs::read_dir(base.path()).unwrap().count();
        assert_eq!(areas, workers.len(), "round {round}: one area per worker");
        drop(workers);
    }
}
