//! What CI pipelines lean on: broker outages, retried requests, callbacks, the audit
//! trail, metrics, JWT identities and the OpenAPI document.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deployguard_testkit::{TcpProxy, TestEnv};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Api, job_vars, send};

async fn count(api: &Api, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&api.db())
        .await
        .unwrap()
}

fn new_job() -> serde_json::Value {
    json!({"source_url": "http://127.0.0.1:9/org/repo.git"})
}

/// With the broker away, creating is refused with 503 `broker_unavailable`, every time.
async fn creation_refused(api: &Api) {
    for _ in 0..3 {
        let (status, answer) =
            send(api.call("alice", Method::POST, "/jobs").json(&new_job())).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "broker_unavailable");
    }
}

/// Creates a job as soon as the API can again (503 until then), within `within`.
async fn created_once_recovered(api: &Api, within: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, answer) =
            send(api.call("alice", Method::POST, "/jobs").json(&new_job())).await;
        if status == 202 {
            return answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery without a restart"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_refuses_new_work_with_503_and_recovers_without_restart() {
    let env = TestEnv::new().await;
    let proxy = TcpProxy::start(env.services.amqp_addr()).await;
    let mut vars = job_vars(&env);
    vars.insert("AMQP_URL".into(), env.amqp_url(Some(proxy.addr())));
    let api = Api::start_with(env, &vars).await;
    let before = api.create_job("alice").await;
    api.set_status(&before, "awaiting_selection").await;
    let secrets = api.add_secrets(&before, 1).await;
    let (status, _) = send(
        api.call(
            "alice",
            Method::POST,
            &format!("/jobs/{before}/secrets/select"),
        )
        .json(&json!({"secret_ids": secrets})),
    )
    .await;
    assert_eq!(status, 200);

    proxy.cut().await;
    creation_refused(&api).await;
    assert_eq!(
        count(&api, "SELECT count(*) FROM jobs").await,
        1,
        "no half-made job"
    );
    let (status, answer) =
        send(api.call("alice", Method::POST, &format!("/jobs/{before}/clean"))).await;
    assert_eq!(status, 503, "{answer}");
    let (_, detail) = send(api.call("alice", Method::GET, &format!("/jobs/{before}"))).await;
    assert_eq!(
        detail["job"]["status"], "awaiting_selection",
        "the clean was undone"
    );
    assert_eq!(
        count(
            &api,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    // Reads keep working.
    let (status, list) = send(api.call("alice", Method::GET, "/jobs")).await;
    assert_eq!(status, 200);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(
        count(
            &api,
            "SELECT count(*) FROM audit_logs WHERE outcome = 'failed'"
        )
        .await,
        4,
        "each refused action is audited as failed"
    );

    proxy.restore().await;
    let created = created_once_recovered(&api, Duration::from_secs(30)).await;
    assert_eq!(created["status"], "pending");
    let (status, _) = send(api.call("alice", Method::POST, &format!("/jobs/{before}/clean"))).await;
    assert_eq!(status, 202);
    assert_eq!(api.env.ready_messages("deployguard.scan").await, 2);
    assert_eq!(api.env.ready_messages("deployguard.clean").await, 1);
    let metrics = api
        .app
        .client
        .get(api.app.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("deployguard_api_broker_publish_failures_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_post_with_the_same_idempotency_key_creates_one_job() {
    let api = Api::start().await;
    let body = json!({"source_url": "http://127.0.0.1:9/org/repo.git"});
    let post = |key: &str, body: &serde_json::Value| {
        api.call("alice", Method::POST, "/jobs")
            .header("Idempotency-Key", key)
            .json(body)
    };
    let first = post("pipeline-42-step-3", &body).send().await.unwrap();
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = post("pipeline-42-step-3", &body).send().await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(again.headers().contains_key("location"));
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(count(&api, "SELECT count(*) FROM jobs").await, 1);
    assert_eq!(api.env.ready_messages("deployguard.scan").await, 1);

    // The same key for another request is refused; another user's same key is theirs.
    let other = json!({"source_url": "http://127.0.0.1:9/org/other.git"});
    let (status, answer) = send(post("pipeline-42-step-3", &other)).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "idempotency_key_reused");
    let (status, _) = send(
        api.call("bob", Method::POST, "/jobs")
            .header("Idempotency-Key", "pipeline-42-step-3")
            .json(&body),
    )
    .await;
    assert_eq!(status, 202);
    // A refused request does not burn its key.
    let bad = json!({"source_url": "file:///x"});
    let (status, _) = send(post("k-2", &bad)).await;
    assert_eq!(status, 400);
    let (status, _) = send(post("k-2", &body)).await;
    assert_eq!(status, 202, "the refused request released its key");
}

/// Deliveries a receiver saw: headers, body, the status it answered.
type Deliveries = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>, u16)>>>;

/// A callback receiver: answers 500 to the first `failures` deliveries, then 200.
async fn receiver(failures: usize) -> (String, Deliveries) {
    let seen: Deliveries = Arc::default();
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let record = Arc::clone(&record);
                async move {
                    let mut seen = record.lock().unwrap();
                    let status = if seen.len() < failures { 500 } else { 200 };
                    seen.push((headers, body.to_vec(), status));
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_jobs_are_posted_to_their_callback_signed_and_retried() {
    let env = TestEnv::new().await;
    let mut vars = job_vars(&env);
    let secret = "callback-signing-secret-1";
    vars.insert("CALLBACK_SECRET".into(), secret.into());
    vars.insert("CALLBACK_RETRY_BASE_SECS".into(), "0.2".into());
    let api = Api::start_with(env, &vars).await;
    let (hook, seen) = receiver(1).await;
    let (status, created) = send(api.call("alice", Method::POST, "/jobs").json(&json!({
        "source_url": "http://127.0.0.1:9/org/repo.git",
        "callback_url": hook,
    })))
    .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    // A worker finishing the scan, then the user cancelling: two settled states.
    api.set_status(id, "awaiting_selection").await;
    let (status, _) = send(api.call("alice", Method::DELETE, &format!("/jobs/{id}"))).await;
    assert_eq!(status, 200);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let delivered = seen.lock().unwrap().iter().filter(|d| d.2 == 200).count();
        if delivered == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries: {:?}",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].2, 500, "the first attempt failed and was retried");
    let mut events = Vec::new();
    for (headers, body, status) in &seen {
        let signature = headers["x-deployguard-signature"].to_str().unwrap();
        let expected = deployguard::jobs::callbacks::sign(&secret.to_owned().into(), body);
        assert_eq!(signature, expected, "signed over the exact body");
        let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["job"]["id"], id);
        if *status == 200 {
            events.push(payload["event"].as_str().unwrap().to_owned());
        }
    }
    events.sort();
    assert_eq!(events, vec!["job.awaiting_selection", "job.cancelled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_name_the_client_behind_a_trusted_proxy() {
    let env = TestEnv::new().await;
    let mut vars = job_vars(&env);
    vars.insert("TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    let api = Api::start_with(env, &vars).await;
    let (status, _) = send(
        api.call("alice", Method::POST, "/jobs")
            .header(
                "X-Forwarded-For",
                "203.0.113.9, 198.51.100.7:40100, 127.0.0.1",
            )
            .header("User-Agent", "ci-runner/1.0")
            .json(&json!({"source_url": "http://127.0.0.1:9/org/repo.git"})),
    )
    .await;
    assert_eq!(status, 202);
    let (status, page) = send(api.admin(Method::GET, "/admin/audit?action=job.create")).await;
    assert_eq!(status, 200, "{page}");
    let entry = &page["entries"][0];
    assert_eq!(entry["actor_id"], "alice");
    assert_eq!(entry["client_ip"], "198.51.100.7");
    assert_eq!(entry["user_agent"], "ci-runner/1.0");
    assert_eq!(entry["outcome"], "success");
    assert!(entry["job_id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_status() {
    let api = Api::start().await;
    let id = api.create_job("alice").await;
    send(api.call("alice", Method::GET, &format!("/jobs/{id}"))).await;
    send(api.call(
        "alice",
        Method::GET,
        "/jobs/00000000-0000-0000-0000-000000000000",
    ))
    .await;
    let text = api
        .app
        .client
        .get(api.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"deployguard_api_http_requests_total{method="POST",route="/api/v2/jobs",status="202"} 1"#,
        r#"deployguard_api_http_requests_total{method="GET",route="/api/v2/jobs/{id}",status="200"} 1"#,
        r#"deployguard_api_http_requests_total{method="GET",route="/api/v2/jobs/{id}",status="404"} 1"#,
        "deployguard_api_jobs_created_total 1",
        "deployguard_api_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
}

fn jwt(
    claims: &serde_json::Value,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_mode_accepts_valid_hs256_and_rs256_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("key.pem");
    let public = dir.path().join("pub.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl could not make a key pair");
    let hs_secret = "a-shared-secret-of-at-least-32-chars!";
    let env = TestEnv::new().await;
    let mut vars = job_vars(&env);
    vars.insert("AUTH_MODE".into(), "jwt".into());
    vars.insert("JWT_HS256_SECRET".into(), hs_secret.into());
    vars.insert(
        "JWT_RS256_PUBLIC_KEY_FILE".into(),
        public.display().to_string(),
    );
    vars.insert("JWT_AUDIENCE".into(), "deployguard".into());
    let api = Api::start_with(env, &vars).await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let hs = jsonwebtoken::EncodingKey::from_secret(hs_secret.as_bytes());
    let rs = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let get = |token: &str, path: &str| {
        api.app
            .client
            .get(api.app.url(&format!("/api/v2{path}")))
            .bearer_auth(token)
    };
    let alice = jwt(
        &json!({"sub": "alice", "exp": exp, "aud": "deployguard"}),
        jsonwebtoken::Algorithm::HS256,
        &hs,
    );
    let (status, body) = send(get(&alice, "/jobs")).await;
    assert_eq!(status, 200, "{body}");
    let admin = jwt(
        &json!({"sub": "ops", "exp": exp, "aud": "deployguard", "roles": ["admin"]}),
        jsonwebtoken::Algorithm::RS256,
        &rs,
    );
    let (status, body) = send(get(&admin, "/admin/stats")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(get(&alice, "/admin/stats")).await;
    assert_eq!(status, 403);
    for bad in [
        jwt(
            &json!({"sub": "alice", "exp": exp - 1200, "aud": "deployguard"}),
            jsonwebtoken::Algorithm::HS256,
            &hs,
        ),
        jwt(
            &json!({"sub": "alice", "exp": exp, "aud": "someone-else"}),
            jsonwebtoken::Algorithm::HS256,
            &hs,
        ),
        jwt(
            &json!({"exp": exp, "aud": "deployguard"}),
            jsonwebtoken::Algorithm::HS256,
            &hs,
        ),
        jwt(
            &json!({"sub": "alice", "exp": exp, "aud": "deployguard"}),
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-at-least-32-chars!"),
        ),
        "not.a.token".to_owned(),
    ] {
        let (status, body) = send(get(&bad, "/jobs")).await;
        assert_eq!(status, 401, "{bad}: {body}");
    }
    // Gateway headers mean nothing in JWT mode.
    let (status, _) = send(api.call("alice", Method::GET, "/jobs")).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_specification_is_in_the_openapi_document_and_answers() {
    let api = Api::start().await;
    let (status, doc) = send(api.app.client.get(api.app.url("/api/v2/openapi.json"))).await;
    assert_eq!(status, 200);
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let path = path.strip_prefix("/api/v2").unwrap_or(path);
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut expected: Vec<String> = [
        "GET /health",
        "GET /health/ready",
        "GET /metrics",
        "POST /jobs",
        "GET /jobs",
        "GET /jobs/{id}",
        "DELETE /jobs/{id}",
        "GET /jobs/{id}/secrets",
        "POST /jobs/{id}/secrets/select",
        "GET /jobs/{id}/files",
        "POST /jobs/{id}/clean",
        "GET /jobs/{id}/clean-report",
        "GET /jobs/{id}/download",
        "POST /jobs/{id}/push",
        "GET /admin/jobs",
        "GET /admin/stats",
        "GET /admin/queues",
        "GET /admin/dead-letters",
        "DELETE /admin/dead-letters",
        "POST /admin/dead-letters/requeue",
        "POST /admin/dead-letters/{task_id}/requeue",
        "GET /admin/audit",
    ]
    .map(str::to_owned)
    .to_vec();
    expected.sort();
    assert_eq!(documented, expected);
    // Each documented operation is a real route: it never answers "no such endpoint".
    let id = uuid::Uuid::now_v7().to_string();
    for op in &documented {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path.replace("{id}", &id).replace("{task_id}", &id);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = api
            .admin(method.clone(), &path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(
            status != 405 && !body.contains("no such endpoint"),
            "{op} is documented but not routed: {status} {body}"
        );
    }
    for extra in deployguard_api::UNDOCUMENTED_ROUTES {
        let status = api
            .app
            .client
            .get(api.app.url(extra))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{extra}");
    }
}

/// Stops the broker itself, so it runs alone: `scripts/test.sh` runs ignored tests one
/// at a time after the parallel pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops RabbitMQ; run alone (scripts/test.sh does)"]
async fn exclusive_stopped_rabbitmq_means_503_and_no_job_then_recovery_without_restart() {
    let api = Api::start().await;
    let before = api.create_job("alice").await;
    deployguard_testkit::rabbitmqctl("stop_app");
    let outcome = async {
        creation_refused(&api).await;
        assert_eq!(
            count(&api, "SELECT count(*) FROM jobs").await,
            1,
            "no job row"
        );
        let (status, detail) =
            send(api.call("alice", Method::GET, &format!("/jobs/{before}"))).await;
        assert_eq!(status, 200, "reads work without the broker: {detail}");
    };
    // Whatever happens above, the broker comes back for the tests that follow.
    let checked =
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    deployguard_testkit::rabbitmqctl("start_app");
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }

    let created = created_once_recovered(&api, Duration::from_secs(60)).await;
    assert_eq!(created["status"], "pending");
    assert_eq!(count(&api, "SELECT count(*) FROM jobs").await, 2);
}
