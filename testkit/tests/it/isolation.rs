use deployguard_testkit::{JobRow, TestEnv};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

async fn insert_job(env: &TestEnv, id: uuid::Uuid, url: &str) {
    JobRow {
        id,
        ..JobRow::new()
    }
    .platform("generic", url)
    .insert(env)
    .await;
}

async fn declare(channel: &lapin::Channel, name: &str) -> u32 {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

#[tokio::test]
async fn same_named_job_queue_and_object_in_two_envs_do_not_meet() {
    let (a, b) = tokio::join!(TestEnv::new(), TestEnv::new());
    assert_ne!(a.database, b.database);

    // The same job id in both databases.
    let job = uuid::Uuid::new_v4();
    insert_job(&a, job, "https://a.example/repo.git").await;
    insert_job(&b, job, "https://b.example/repo.git").await;
    for (env, expected) in [
        (&a, "https://a.example/repo.git"),
        (&b, "https://b.example/repo.git"),
    ] {
        let urls: Vec<String> = sqlx::query_scalar("SELECT source_url FROM jobs")
            .fetch_all(&env.db)
            .await
            .unwrap();
        assert_eq!(urls, vec![expected.to_owned()]);
    }

    // The same queue name in both vhosts; a message published in one stays there.
    let (conn_a, conn_b) = tokio::join!(a.amqp_connection(), b.amqp_connection());
    let (chan_a, chan_b) = (
        conn_a.create_channel().await.unwrap(),
        conn_b.create_channel().await.unwrap(),
    );
    declare(&chan_a, "deployguard.scan").await;
    declare(&chan_b, "deployguard.scan").await;
    chan_a.confirm_select(Default::default()).await.unwrap();
    chan_a
        .basic_publish(
            "".into(),
            "deployguard.scan".into(),
            BasicPublishOptions::default(),
            b"only in a",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(declare(&chan_a, "deployguard.scan").await, 1);
    assert_eq!(declare(&chan_b, "deployguard.scan").await, 0);

    // The same object key in both buckets.
    let key = "repos/job/source.bundle";
    for (env, body) in [(&a, "from a"), (&b, "from b")] {
        let storage = env.storage();
        storage
            .client()
            .put_object()
            .bucket(storage.bucket())
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    for (env, body) in [(&a, "from a"), (&b, "from b")] {
        let storage = env.storage();
        let got = storage
            .client()
            .get_object()
            .bucket(storage.bucket())
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(&got[..], body.as_bytes());
    }
}

#[tokio::test]
async fn dropping_an_env_removes_its_database_vhost_and_bucket() {
    let env = TestEnv::new().await;
    let services = env.services.clone();
    let (database, vhost) = (env.database.clone(), env.vhost.clone());
    let scratch = env.scratch_database().await;
    let storage = env.storage();
    storage
        .client()
        .put_object()
        .bucket(storage.bucket())
        .key("left/behind")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        TestEnv::exists(&services, &database, &vhost).await,
        (true, true)
    );

    drop(env);

    assert_eq!(
        TestEnv::exists(&services, &database, &vhost).await,
        (false, false)
    );
    let scratch_name = scratch.rsplit('/').next().unwrap();
    assert!(!TestEnv::exists(&services, scratch_name, &vhost).await.0);
    assert!(
        matches!(
            storage.check().await,
            Err(deployguard::storage::StorageError::NoSuchBucket(_))
        ),
        "bucket should be gone"
    );
}

#[tokio::test]
async fn env_config_points_at_its_own_parts() {
    let env = TestEnv::new().await;
    let config = env.config();
    assert_eq!(config.storage.bucket, env.bucket);
    use secrecy::ExposeSecret;
    assert!(config.database.url.expose_secret().ends_with(&env.database));
    assert!(config.broker.url.expose_secret().ends_with(&env.vhost));
    let version: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(version, deployguard::db::latest_known_version());
}
