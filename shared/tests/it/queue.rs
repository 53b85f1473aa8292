use std::sync::Arc;
use std::time::Duration;

use deployguard::queue::topology::{declare_topology, work_queue_arguments};
use deployguard::queue::{
    Broker, PublishError, Publisher, QueueError, TaskBody, TaskMessage, WorkQueue, outbox,
};
use deployguard_testkit::{TcpProxy, TestEnv};
use lapin::options::QueueDeclareOptions;
use lapin::types::AMQPValue;

fn noop(queue: WorkQueue) -> TaskMessage {
    TaskMessage::new("deployguard.diagnostic.noop", queue, TaskBody::default())
}

/// A publisher whose broker connection goes through a proxy the test can cut.
async fn publisher_through_proxy(env: &TestEnv) -> (TcpProxy, Publisher) {
    let proxy = TcpProxy::start(env.services.amqp_addr()).await;
    let mut vars = env.vars();
    vars.insert("AMQP_URL".into(), env.amqp_url(Some(proxy.addr())));
    let broker = Broker::new(&TestEnv::config_from(&vars).broker, "queue-test");
    (proxy, Publisher::new(Arc::new(broker)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_declared_idempotently_and_a_conflicting_queue_is_named() {
    let env = TestEnv::new().await;
    let conn = env.amqp_connection().await;
    let channel = conn.create_channel().await.unwrap();
    declare_topology(&channel).await.unwrap();
    declare_topology(&channel).await.unwrap();
    let depths = env.queue_depths().await;
    for name in [
        "deployguard",
        "deployguard.scan",
        "deployguard.clean",
        "deployguard.push",
        "deployguard.dead",
        "deployguard.delay.1s",
        "deployguard.delay.3600s",
    ] {
        assert!(depths.contains_key(name), "{name} missing: {depths:?}");
    }

    let other = TestEnv::new().await;
    let conn = other.amqp_connection().await;
    let channel = conn.create_channel().await.unwrap();
    // An older deployment declared the scan queue with five priority levels.
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut arguments = work_queue_arguments();
    arguments.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(5));
    channel
        .queue_declare("deployguard.scan".into(), durable, arguments)
        .await
        .unwrap();
    let err = declare_topology(&channel).await.unwrap_err();
    assert!(matches!(err, QueueError::Topology(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("deployguard.scan"), "{text}");
    assert!(text.contains("inequivalent arg 'x-max-priority'"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_confirmed_in_bulk_and_fail_visibly_while_the_broker_is_away() {
    let env = TestEnv::new().await;
    let (proxy, publisher) = publisher_through_proxy(&env).await;

    let messages: Vec<TaskMessage> = (0..500).map(|_| noop(WorkQueue::Push)).collect();
    for outcome in publisher.publish_many(&messages).await {
        outcome.unwrap();
    }
    assert_eq!(env.ready_messages("deployguard.push").await, 500);

    proxy.cut().await;
    let started = tokio::time::Instant::now();
    let err = publisher.publish(&noop(WorkQueue::Push)).await.unwrap_err();
    assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );

    proxy.restore().await;
    let mut published = false;
    for _ in 0..50 {
        if publisher.publish(&noop(WorkQueue::Push)).await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(published, "publishing did not recover without a restart");
    assert_eq!(env.ready_messages("deployguard.push").await, 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_returns_to_its_own_queue_after_the_delay() {
    let env = TestEnv::new().await;
    let publisher = Publisher::new(Arc::new(Broker::new(&env.config().broker, "delay-test")));
    let mut message = noop(WorkQueue::Clean);
    message.retries = 1;
    publisher
        .publish_delayed(&message, Duration::from_millis(1500))
        .await
        .unwrap();
    let sent = tokio::time::Instant::now();
    assert_eq!(env.ready_messages("deployguard.clean").await, 0);
    while env.ready_messages("deployguard.clean").await == 0 {
        assert!(sent.elapsed() < Duration::from_secs(10), "never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(1300), "{waited:?}");
    assert!(waited < Duration::from_millis(2600), "{waited:?}");
    assert_eq!(env.ready_messages("deployguard.delay.2s").await, 0);
    assert_eq!(env.ready_messages("deployguard.scan").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_relay_publishes_staged_tasks_and_keeps_them_while_the_broker_is_away() {
    let env = TestEnv::new().await;
    let (proxy, publisher) = publisher_through_proxy(&env).await;

    let staged: Vec<TaskMessage> = (0..3).map(|_| noop(WorkQueue::Scan)).collect();
    let mut tx = env.db.begin().await.unwrap();
    for message in &staged {
        outbox::stage(&mut tx, message).await.unwrap();
    }
    tx.commit().await.unwrap();
    // The stager "died": skip the grace it would have had to publish them itself.
    assert_eq!(
        outbox::relay_once(&env.db, &publisher, 100).await.unwrap(),
        0
    );
    sqlx::query("UPDATE outbox SET available_at = now()")
        .execute(&env.db)
        .await
        .unwrap();

    proxy.cut().await;
    assert_eq!(
        outbox::relay_once(&env.db, &publisher, 100).await.unwrap(),
        0
    );
    let (unpublished, attempts, error): (i64, i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), sum(attempts), max(last_error) FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!((unpublished, attempts), (3, 3));
    assert!(error.unwrap().contains("unavailable"));

    proxy.restore().await;
    sqlx::query("UPDATE outbox SET available_at = now()")
        .execute(&env.db)
        .await
        .unwrap();
    let mut published = 0;
    for _ in 0..50 {
        published += outbox::relay_once(&env.db, &publisher, 100)
            .await
            .unwrap_or(0);
        if published == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(published, 3);
    assert_eq!(env.ready_messages("deployguard.scan").await, 3);
    assert_eq!(
        outbox::relay_once(&env.db, &publisher, 100).await.unwrap(),
        0,
        "published once"
    );
}

fn new_job(owner: &str) -> deployguard::jobs::NewJob {
    deployguard::jobs::NewJob {
        id: uuid::Uuid::now_v7(),
        owner_id: owner.into(),
        source_platform: deployguard::jobs::Platform::Generic,
        source_url: "https://git.example/r.git".into(),
        source_branch: None,
        source_credentials_id: None,
        priority: 5,
        callback_url: None,
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    }
}

fn audit_of(job: uuid::Uuid) -> deployguard::audit::AuditRecord<'static> {
    deployguard::audit::AuditRecord {
        actor: deployguard::audit::Actor {
            user_id: "user-1",
            client_ip: None,
            user_agent: None,
        },
        action: "job.create",
        job_id: Some(job),
        outcome: deployguard::audit::Outcome::Success,
        details: serde_json::json!({}),
    }
}

/// `(jobs, unpublished outbox rows, published outbox rows, audit rows)` of a job.
async fn traces(env: &TestEnv, job: uuid::Uuid) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE id = $1),
                (SELECT count(*) FROM outbox WHERE job_id = $1 AND published_at IS NULL),
                (SELECT count(*) FROM outbox WHERE job_id = $1 AND published_at IS NOT NULL),
                (SELECT count(*) FROM audit_logs WHERE job_id = $1)",
    )
    .bind(job)
    .fetch_one(&env.db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_publishes_and_audits_or_undoes_or_leaves_the_task_to_the_relay() {
    use deployguard::jobs::Create;
    use deployguard::queue::{Delivery, EnqueueError, OnRefusal, enqueue};
    use deployguard::tasks::{JobRef, JobTask};

    let env = TestEnv::new().await;
    let (proxy, publisher) = publisher_through_proxy(&env).await;
    let message_for = |job: &deployguard::jobs::NewJob| {
        JobTask::Scan
            .message(JobRef::new(job.id, &job.owner_id), job.priority)
            .unwrap()
    };

    // The broker takes it: the change, the published row and the audit row.
    let job = new_job("user-1");
    let message = message_for(&job);
    let audit = audit_of(job.id);
    let enqueued = enqueue(
        &env.db,
        &publisher,
        &message,
        &Create(&job),
        OnRefusal::Undo,
        Some(&audit),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(enqueued.delivery, Delivery::Published);
    assert_eq!(enqueued.output.id, job.id);
    assert_eq!(traces(&env, job.id).await, (1, 0, 1, 1));
    assert_eq!(env.ready_messages("deployguard.scan").await, 1);

    // The broker is away: a request leaves nothing behind.
    proxy.cut().await;
    let job = new_job("user-1");
    let refused = enqueue(
        &env.db,
        &publisher,
        &message_for(&job),
        &Create(&job),
        OnRefusal::Undo,
        Some(&audit_of(job.id)),
    )
    .await;
    assert!(
        matches!(refused, Err(EnqueueError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(traces(&env, job.id).await, (0, 0, 0, 0));

    // Scheduled work keeps its change; the relay publishes the staged task later.
    let job = new_job("user-1");
    let relayed = enqueue(
        &env.db,
        &publisher,
        &message_for(&job),
        &Create(&job),
        OnRefusal::Relay,
        Some(&audit_of(job.id)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(relayed.delivery, Delivery::Relayed);
    assert_eq!(traces(&env, job.id).await, (1, 1, 0, 1));
    proxy.restore().await;
    assert_eq!(env.ready_messages("deployguard.scan").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_publishes_nothing_when_its_change_was_not_needed() {
    use deployguard::jobs::maintenance::{Requeue, Stuck};
    use deployguard::queue::{OnRefusal, enqueue};
    use deployguard::tasks::{JobRef, JobTask};

    let env = TestEnv::new().await;
    let broker = Arc::new(Broker::new(&env.config().broker, "queue-test"));
    deployguard::queue::declare_when_reachable(&broker)
        .await
        .unwrap();
    let publisher = Publisher::new(broker);
    // A stuck job as seen a while ago; it has been updated since.
    let stuck = Stuck {
        id: uuid::Uuid::now_v7(),
        status: deployguard::jobs::JobStatus::Pending,
        owner_id: "user-1".into(),
        priority: 5,
        updated_at: chrono::Utc::now() - chrono::Duration::hours(2),
        requeued: 0,
    };
    let message = JobTask::Scan
        .message(JobRef::new(stuck.id, "user-1"), 5)
        .unwrap();
    let nothing = enqueue(
        &env.db,
        &publisher,
        &message,
        &Requeue(&stuck),
        OnRefusal::Relay,
        None,
    )
    .await
    .unwrap();
    assert!(nothing.is_none());
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(staged, 0);
    assert_eq!(env.ready_messages("deployguard.scan").await, 0);
}
