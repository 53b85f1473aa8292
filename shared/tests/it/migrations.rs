use std::time::Duration;

use deployguard::db::DatabaseConfig;
use deployguard_testkit::TestEnv;
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_apply_each_migration_exactly_once() {
    let env = TestEnv::new().await;
    let url = env.scratch_database().await;
    let config = DatabaseConfig {
        url: SecretString::from(url.clone()),
        max_connections: 2,
        run_migrations: true,
    };
    let wait = Duration::from_secs(10);
    let (a, b, c) = tokio::join!(
        deployguard::db::migrate(&config, wait),
        deployguard::db::migrate(&config, wait),
        deployguard::db::migrate(&config, wait),
    );
    let latest = deployguard::db::latest_known_version();
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (latest, latest, latest)
    );

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, count(*) FROM _sqlx_migrations GROUP BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|(_, n)| *n == 1), "{rows:?}");
    // Running again is a no-op.
    assert_eq!(
        deployguard::db::migrate(&config, wait).await.unwrap(),
        latest
    );
    pool.close().await;
}

#[tokio::test]
async fn migrate_gives_up_with_a_clear_error_when_postgres_is_unreachable() {
    let config = DatabaseConfig {
        // Nothing listens on port 1.
        url: SecretString::from("postgres://u:topsecret@127.0.0.1:1/db".to_owned()),
        max_connections: 1,
        run_migrations: true,
    };
    let err = deployguard::db::migrate(&config, Duration::from_millis(600))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("PostgreSQL is unreachable"), "{msg}");
    assert!(!msg.contains("topsecret"), "{msg}");
}
