//! The binary as operators run it: exit codes, messages, signals, subcommands.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deployguard_testkit::TestEnv;

const API: &str = env!("CARGO_BIN_EXE_deployguard-api");

fn run_with(vars: &HashMap<String, String>, args: &[&str]) -> std::process::Output {
    Command::new(API)
        .args(args)
        .env_clear()
        .envs(vars)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn valid_vars() -> HashMap<String, String> {
    [
        (
            "DATABASE_URL",
            "postgresql://dg:pg-topsecret@127.0.0.1:1/deployguard",
        ),
        ("AMQP_URL", "amqp://dg:mq-topsecret@127.0.0.1:1/%2f"),
        ("S3_ACCESS_KEY", "key"),
        ("S3_SECRET_KEY", "s3-topsecret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn assert_config_exit(out: &std::process::Output, variable: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    assert!(stderr.contains(variable), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecret"), "secret leaked: {stderr}");
}

#[test]
fn starting_without_database_url_prints_one_line_and_exits_2() {
    let mut vars = valid_vars();
    vars.remove("DATABASE_URL");
    let out = run_with(&vars, &[]);
    assert_config_exit(&out, "DATABASE_URL");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("deployguard-api: configuration error: DATABASE_URL is not set"));
}

#[test]
fn migrate_without_database_url_exits_2_too() {
    let out = run_with(&HashMap::new(), &["migrate"]);
    assert_config_exit(&out, "DATABASE_URL");
}

#[test]
fn malformed_values_exit_2_naming_the_variable_and_hiding_secrets() {
    for (var, value) in [
        ("AMQP_URL", "http://dg:mq-topsecret@rabbitmq/"),
        ("DATABASE_URL", "mysql://dg:pg-topsecret@db/x"),
        ("LOG_LEVEL", "chatty"),
        ("API_ADDR", "not-an-address"),
        ("AUTH_MODE", "trust-me"),
        ("CALLBACK_SECRET", "short"),
        ("TRUSTED_PROXIES", "proxy.local"),
    ] {
        let mut vars = valid_vars();
        vars.insert(var.to_owned(), value.to_owned());
        assert_config_exit(&run_with(&vars, &[]), var);
    }
}

#[test]
fn jwt_mode_without_an_audience_exits_2() {
    let mut vars = valid_vars();
    vars.insert("AUTH_MODE".into(), "jwt".into());
    vars.insert(
        "JWT_HS256_SECRET".into(),
        "jwt-topsecret-of-at-least-32-characters".into(),
    );
    let out = run_with(&vars, &[]);
    assert_config_exit(&out, "JWT_AUDIENCE");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("jwt-topsecret"));
}

#[test]
fn missing_broker_url_names_both_accepted_variables() {
    let mut vars = valid_vars();
    vars.remove("AMQP_URL");
    let out = run_with(&vars, &[]);
    assert_config_exit(&out, "AMQP_URL");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CELERY_BROKER_URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_subcommand_brings_an_empty_database_to_the_latest_schema() {
    let env = TestEnv::new().await;
    let url = env.scratch_database().await;
    let vars = HashMap::from([("DATABASE_URL".to_owned(), url.clone())]);
    let out = tokio::task::spawn_blocking(move || run_with(&vars, &["migrate"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "audit_logs",
            "beat_runs",
            "idempotency_keys",
            "job_callbacks",
            "jobs",
            "outbox",
            "secrets_found",
            "task_results"
        ]
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_process_becomes_ready_and_stops_cleanly_on_sigterm() {
    let env = TestEnv::new().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut vars = env.vars();
    vars.insert("API_ADDR".into(), format!("127.0.0.1:{port}"));
    vars.insert("LOG_FORMAT".into(), "json".into());
    let mut child = tokio::process::Command::new(API)
        .env_clear()
        .envs(&vars)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let ready = format!("http://127.0.0.1:{port}/api/v2/health/ready");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(&ready).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "API never became ready");
        assert!(child.try_wait().unwrap().is_none(), "API exited early");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("API did not stop within 10 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "SIGTERM received, shutting down")
    );
    assert!(events.iter().any(|e| e["message"] == "stopped"));
    for secret in [
        env.services.s3_secret_key.as_str(),
        "deployguard:deployguard@",
    ] {
        assert!(!stderr.contains(secret), "secret in logs: {stderr}");
    }
}
