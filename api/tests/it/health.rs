use std::time::Duration;

use deployguard_testkit::{TcpProxy, TestEnv};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_answers_without_touching_dependencies() {
    let env = TestEnv::new().await;
    let mut vars = env.vars();
    // Every dependency unreachable: liveness must not care.
    vars.insert("DATABASE_URL".into(), "postgres://u@127.0.0.1:1/x".into());
    vars.insert("AMQP_URL".into(), "amqp://u:p@127.0.0.1:1/%2f".into());
    let app = TestApp::spawn(&vars).await;
    let (status, body) = app.get_json("/api/v2/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "deployguard-api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_200_when_every_service_answers() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env.vars()).await;
    let (status, body) = app.get_json("/api/v2/health/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "services": {"database": true, "rabbitmq": true, "storage": true}})
    );
    app.stop().await;
}

/// Polls readiness until `pred` holds, returning the last answer.
async fn ready_until(
    app: &TestApp,
    within: Duration,
    pred: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = app.get_json("/api/v2/health/ready").await;
        if pred(status, &body) || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Takes one service away through a proxy and checks readiness names it, then brings
/// it back and checks the same API process recovers.
async fn outage_is_reported_and_recovered(service: &str) {
    let env = TestEnv::new().await;
    let mut vars = env.vars();
    let proxy = match service {
        "rabbitmq" => {
            let p = TcpProxy::start(env.services.amqp_addr()).await;
            vars.insert("AMQP_URL".into(), env.amqp_url(Some(p.addr())));
            p
        }
        "database" => {
            let p = TcpProxy::start(env.services.postgres_addr()).await;
            vars.insert("DATABASE_URL".into(), env.database_url(Some(p.addr())));
            p
        }
        "storage" => {
            let p = TcpProxy::start(env.services.s3_addr()).await;
            vars.insert("S3_ENDPOINT_URL".into(), env.s3_url(Some(p.addr())));
            p
        }
        other => panic!("unknown service {other}"),
    };
    let app = TestApp::spawn(&vars).await;
    let (status, body) = ready_until(&app, Duration::from_secs(10), |s, _| s == 200).await;
    assert_eq!(status, 200, "{body}");

    proxy.cut().await;
    let (status, body) = ready_until(&app, Duration::from_secs(15), |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["services"][service], false, "{body}");
    for other in ["database", "rabbitmq", "storage"]
        .iter()
        .filter(|s| **s != service)
    {
        assert_eq!(body["services"][other], true, "{body}");
    }
    assert!(
        body["message"].as_str().unwrap().contains(service),
        "{body}"
    );

    proxy.restore().await;
    let (status, body) = ready_until(&app, Duration::from_secs(30), |s, _| s == 200).await;
    assert_eq!(status, 200, "no recovery without restart: {body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_rabbitmq_down_and_recovers_without_restart() {
    outage_is_reported_and_recovered("rabbitmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_database_down_and_recovers_without_restart() {
    outage_is_reported_and_recovered("database").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_storage_down_and_recovers_without_restart() {
    outage_is_reported_and_recovered("storage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_in_bounded_time_when_a_service_hangs() {
    let env = TestEnv::new().await;
    // A listener that accepts and never answers: the worst kind of outage.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let mut vars = env.vars();
    vars.insert("S3_ENDPOINT_URL".into(), env.s3_url(Some(addr)));
    vars.insert("READINESS_TIMEOUT_MS".into(), "800".into());
    let app = TestApp::spawn(&vars).await;
    let started = std::time::Instant::now();
    let (status, body) = app.get_json("/api/v2/health/ready").await;
    assert_eq!(status, 503);
    assert_eq!(body["services"]["storage"], false);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
