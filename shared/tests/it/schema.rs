use deployguard_testkit::{JobRow, TestEnv};
use uuid::Uuid;

async fn job(env: &TestEnv) -> Uuid {
    JobRow::new()
        .owner("u")
        .platform("github", "https://github.com/o/r.git")
        .insert(env)
        .await
}

fn is_check_violation(err: sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "23514")
}

#[tokio::test]
async fn secrets_table_cannot_hold_a_full_value() {
    let env = TestEnv::new().await;
    let job = job(&env).await;
    let insert = |preview: &'static str| {
        sqlx::query(
            "INSERT INTO secrets_found
               (id, job_id, rule_id, secret_type, value_preview, value_hash, hash_key_id, confidence)
             VALUES ($1, $2, 'aws-access-key', 'aws', $3, $4, 'k1', 'high')",
        )
        .bind(Uuid::new_v4())
        .bind(job)
        .bind(preview)
        .bind(vec![7u8; 32])
        .execute(&env.db)
    };
    insert("AKI...XYZ").await.unwrap();
    let full = insert("AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMI")
        .await
        .unwrap_err();
    assert!(is_check_violation(full), "a full value was accepted");
}

#[tokio::test]
async fn job_rows_only_take_known_states_and_failures_carry_a_reason() {
    let env = TestEnv::new().await;
    let id = job(&env).await;
    let set = |status: &'static str, error: Option<&'static str>| {
        sqlx::query("UPDATE jobs SET status = $2, error = $3 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(error)
            .execute(&env.db)
    };
    assert!(is_check_violation(set("exploded", None).await.unwrap_err()));
    assert!(is_check_violation(set("failed", None).await.unwrap_err()));
    set("failed", Some("clone failed: repository not found"))
        .await
        .unwrap();
    let bad_progress = sqlx::query("UPDATE jobs SET progress_percent = 101 WHERE id = $1")
        .bind(id)
        .execute(&env.db)
        .await
        .unwrap_err();
    assert!(is_check_violation(bad_progress));
}

#[tokio::test]
async fn updated_at_moves_on_every_update() {
    let env = TestEnv::new().await;
    let id = job(&env).await;
    let before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT updated_at FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("UPDATE jobs SET stage = 'cloning' WHERE id = $1 RETURNING updated_at")
            .bind(id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert!(after > before);
}

#[tokio::test]
async fn audit_log_is_append_only() {
    let env = TestEnv::new().await;
    sqlx::query(
        "INSERT INTO audit_logs (actor_id, action, details) VALUES ('u', 'job.create', '{}')",
    )
    .execute(&env.db)
    .await
    .unwrap();
    for statement in [
        "UPDATE audit_logs SET action = 'job.tampered'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ] {
        let err = sqlx::query(statement).execute(&env.db).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_beat_tick_can_be_claimed_only_once() {
    let env = TestEnv::new().await;
    let claim = |instance: &'static str| {
        sqlx::query(
            "INSERT INTO beat_runs (task_name, scheduled_for, instance)
             VALUES ('cleanup_expired_jobs', '2026-11-24T10:00:00Z', $1)
             ON CONFLICT (task_name, scheduled_for) DO NOTHING",
        )
        .bind(instance)
        .execute(&env.db)
    };
    let (a, b) = tokio::join!(claim("beat-a"), claim("beat-b"));
    assert_eq!(a.unwrap().rows_affected() + b.unwrap().rows_affected(), 1);
}
