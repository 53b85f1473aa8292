//! The job endpoints over HTTP against the real database, broker and object store.

use deployguard::storage::ObjectKey;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Api, job_vars, send};

const SCAN_QUEUE: &str = "deployguard.scan";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_job_is_queued_for_scanning_and_readable_by_its_owner() {
    let api = Api::start().await;
    let response = api
        .call("alice", Method::POST, "/jobs")
        .json(&json!({
            "source_platform": "bitbucket",
            "source_url": "http://127.0.0.1:9/scm/proj/repo.git",
            "source_branch": "main",
            "source_credentials_id": "cred-abc-123",
            "priority": 8
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["progress_percent"], 0);
    assert_eq!(location, format!("/api/v2/jobs/{id}"));
    assert_eq!(api.env.ready_messages(SCAN_QUEUE).await, 1);

    let (status, detail) = send(api.call("alice", Method::GET, &format!("/jobs/{id}"))).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["job"]["source_platform"], "bitbucket");
    assert_eq!(detail["job"]["source_branch"], "main");
    assert_eq!(detail["job"]["priority"], 8);
    assert_eq!(detail["job"]["owner_id"], "alice");
    assert_eq!(detail["secrets"], json!([]));

    // The staged copy in the outbox is marked published: the relay will not resend it.
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&api.db())
            .await
            .unwrap();
    assert_eq!(unpublished, 0);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'job.create' AND actor_id = 'alice'
         AND job_id = $1::uuid AND outcome = 'success'",
    )
    .bind(id)
    .fetch_one(&api.db())
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_newest_first_with_status_filter_and_cursor_pages() {
    let api = Api::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(api.create_job("alice").await);
    }
    api.create_job("bob").await;
    let (_, page) = send(api.call("alice", Method::GET, "/jobs?limit=2")).await;
    let listed: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[4].as_str(), ids[3].as_str()]);
    let mut seen: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let (status, page) =
            send(api.call("alice", Method::GET, &format!("/jobs?limit=2&cursor={c}"))).await;
        assert_eq!(status, 200, "{page}");
        for job in page["jobs"].as_array().unwrap() {
            assert_eq!(job["owner_id"], "alice");
            seen.push(job["id"].as_str().unwrap().to_owned());
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every job once, newest first");

    let (_, pending) = send(api.call("alice", Method::GET, "/jobs?status=pending")).await;
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 5);
    let (_, none) = send(api.call("alice", Method::GET, "/jobs?status=cleaned")).await;
    assert_eq!(none["jobs"], json!([]));
    assert_eq!(none["next_cursor"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_job_is_404_everywhere_and_admins_see_every_job() {
    let api = Api::start().await;
    let id = api.create_job("alice").await;
    for (method, path) in [
        (Method::GET, format!("/jobs/{id}")),
        (Method::GET, format!("/jobs/{id}/secrets")),
        (Method::DELETE, format!("/jobs/{id}")),
        (Method::POST, format!("/jobs/{id}/clean")),
        (Method::GET, format!("/jobs/{id}/download")),
    ] {
        let (status, body) = send(api.call("mallory", method.clone(), &path)).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, _) = send(
        api.call(
            "mallory",
            Method::POST,
            &format!("/jobs/{id}/secrets/select"),
        )
        .json(&json!({"secret_ids": []})),
    )
    .await;
    assert_eq!(status, 404);
    let (_, mine) = send(api.call("mallory", Method::GET, "/jobs")).await;
    assert_eq!(mine["jobs"], json!([]));

    // Admins read any job, list everyone's, filter by user.
    let (status, detail) = send(api.admin(Method::GET, &format!("/jobs/{id}"))).await;
    assert_eq!(status, 200, "{detail}");
    api.create_job("bob").await;
    let (_, all) = send(api.admin(Method::GET, "/admin/jobs")).await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 2);
    let (_, alices) = send(api.admin(Method::GET, "/admin/jobs?user_id=alice")).await;
    assert_eq!(alices["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(alices["jobs"][0]["id"], id.as_str());

    // Everybody else is kept out of the admin endpoints.
    for path in [
        "/admin/jobs",
        "/admin/stats",
        "/admin/queues",
        "/admin/dead-letters",
        "/admin/audit",
    ] {
        let (status, body) = send(api.call("alice", Method::GET, path)).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_identity_are_401() {
    let api = Api::start().await;
    let url = api.app.url("/api/v2/jobs");
    let (status, body) = send(api.app.client.get(&url)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = send(api.app.client.post(&url).json(&json!({"source_url": "x"}))).await;
    assert_eq!(status, 401);
    let (status, _) = send(api.app.client.get(&url).header("X-User-ID", "")).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        api.app
            .client
            .get(&url)
            .header("X-User-ID", "a".repeat(256)),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_headers_count_only_with_the_gateway_token() {
    let env = deployguard_testkit::TestEnv::new().await;
    let mut vars = job_vars(&env);
    vars.insert("GATEWAY_TOKEN".into(), "gateway-shared-token-1".into());
    let api = Api::start_with(env, &vars).await;
    let (status, _) = send(api.call("alice", Method::GET, "/jobs")).await;
    assert_eq!(status, 401, "X-User-ID alone is not believed");
    let (status, _) = send(
        api.call("alice", Method::GET, "/jobs")
            .header("X-Gateway-Token", "gateway-shared-token-2"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = send(
        api.call("alice", Method::GET, "/jobs")
            .header("X-Gateway-Token", "gateway-shared-token-1"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Each case: method, path, body (None: no body), extra header, expected status and code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_json_error_and_creates_nothing() {
    let api = Api::start().await;
    let good = |patch: serde_json::Value| {
        let mut body = json!({"source_url": "http://127.0.0.1:9/org/repo.git"});
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (json!({}), 400, "validation_error"),
        (good(json!({"unexpected": 1})), 400, "validation_error"),
        (
            good(json!({"source_url": "file:///etc/passwd"})),
            400,
            "invalid_url",
        ),
        (
            good(json!({"source_url": "/srv/git/repo"})),
            400,
            "invalid_url",
        ),
        (
            good(json!({"source_url": "ext::sh -c touch% /tmp/pwned"})),
            400,
            "invalid_url",
        ),
        (
            good(json!({"source_url": "ssh://git@127.0.0.1/repo.git"})),
            400,
            "invalid_url",
        ),
        (
            good(json!({"source_url": "--upload-pack=evil"})),
            400,
            "invalid_url",
        ),
        (
            good(json!({"source_url": "http://user:hunter2@127.0.0.1/repo.git"})),
            400,
            "credentials_in_url",
        ),
        (
            good(json!({"source_url": "http://169.254.169.254/latest/meta-data"})),
            400,
            "forbidden_address",
        ),
        (
            good(json!({"source_url": "http://10.1.2.3/repo.git"})),
            400,
            "forbidden_address",
        ),
        (
            good(json!({"source_url": "http://[::1]/repo.git"})),
            400,
            "forbidden_address",
        ),
        (
            good(json!({"source_url": "http://no-such-host.invalid/repo.git"})),
            400,
            "unresolvable_host",
        ),
        (good(json!({"source_url": 42})), 400, "validation_error"),
        (
            good(json!({"source_branch": "a..b"})),
            400,
            "validation_error",
        ),
        (
            good(json!({"source_branch": "-delete"})),
            400,
            "validation_error",
        ),
        (
            good(json!({"source_platform": "sourceforge"})),
            400,
            "validation_error",
        ),
        (good(json!({"priority": 10})), 400, "validation_error"),
        (good(json!({"priority": -1})), 400, "validation_error"),
        (
            good(json!({"source_credentials_id": "../../etc"})),
            400,
            "validation_error",
        ),
        (
            good(json!({"callback_url": "https://ci.example.com/hook"})),
            400,
            "callbacks_disabled",
        ),
        (json!([1, 2]), 400, "validation_error"),
        // Fits the limit as sent, not once percent-encoded.
        (
            good(json!({"source_url": format!("http://127.0.0.1/{}", "<".repeat(2000))})),
            400,
            "validation_error",
        ),
        (
            good(json!({"source_url": format!("http://127.0.0.1/{}", "é".repeat(1500))})),
            400,
            "validation_error",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = send(api.call("alice", Method::POST, "/jobs").json(&body)).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(
            !answer.to_string().contains("hunter2"),
            "a credential was echoed: {answer}"
        );
    }
    // Not JSON, wrong type, too big.
    let (status, body) = send(
        api.call("alice", Method::POST, "/jobs")
            .header("content-type", "application/json")
            .body("{\"source_url\": "),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("validation_error"))
    );
    let (status, body) = send(
        api.call("alice", Method::POST, "/jobs")
            .header("content-type", "text/plain")
            .body("source_url=x"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let huge = json!({"source_url": "http://127.0.0.1/r.git", "pad": "x".repeat(2 << 20)});
    let (status, body) = send(api.call("alice", Method::POST, "/jobs").json(&huge)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Query strings, paths, routes and methods.
    for (method, path, status, code) in [
        (Method::GET, "/jobs?status=bogus", 400, "validation_error"),
        (Method::GET, "/jobs?limit=0", 400, "validation_error"),
        (Method::GET, "/jobs?limit=abc", 400, "validation_error"),
        (
            Method::GET,
            "/jobs?cursor=not-a-cursor",
            400,
            "validation_error",
        ),
        (Method::GET, "/jobs?nonsense=1", 400, "validation_error"),
        (Method::GET, "/jobs/not-a-uuid", 404, "not_found"),
        (
            Method::GET,
            "/jobs/00000000-0000-0000-0000-000000000000",
            404,
            "not_found",
        ),
        (Method::GET, "/nowhere", 404, "not_found"),
        (Method::PUT, "/jobs", 405, "method_not_allowed"),
    ] {
        let (got, answer) = send(api.call("alice", method.clone(), path)).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer}");
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&api.db())
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&api.db())
        .await
        .unwrap();
    assert_eq!(staged, 0);
    let rejected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'job.create' AND outcome = 'rejected'",
    )
    .fetch_one(&api.db())
    .await
    .unwrap();
    assert!(rejected >= 20, "refused creations are audited: {rejected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_is_refused_with_409_in_a_state_that_does_not_allow_it() {
    let api = Api::start().await;
    let id = api.create_job("alice").await;
    let path = |tail: &str| format!("/jobs/{id}{tail}");
    let push_body = json!({"target_platform": "generic", "target_url": "http://127.0.0.1:9/t.git"});

    // Still pending: no select, clean, push or download.
    let (status, body) = send(api.call("alice", Method::POST, &path("/clean"))).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pending"),
        "{body}"
    );
    let (status, _) = send(
        api.call("alice", Method::POST, &path("/secrets/select"))
            .json(&json!({"secret_ids": []})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, body) = send(
        api.call("alice", Method::POST, &path("/push"))
            .json(&push_body),
    )
    .await;
    assert_eq!(status, 409, "push before clean: {body}");
    let (status, _) = send(api.call("alice", Method::GET, &path("/download"))).await;
    assert_eq!(status, 409);

    // The scan found three secrets.
    api.set_status(&id, "awaiting_selection").await;
    let secrets = api.add_secrets(&id, 3).await;
    let (status, body) = send(api.call("alice", Method::POST, &path("/clean"))).await;
    assert_eq!(status, 409, "nothing selected yet: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("select")
    );

    // Ids must belong to the job, and a secret is either cleaned or a false positive.
    let foreign = uuid::Uuid::now_v7().to_string();
    let (status, body) = send(
        api.call("alice", Method::POST, &path("/secrets/select"))
            .json(&json!({"secret_ids": [secrets[0], foreign]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_secret_ids");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&foreign)
    );
    let (status, body) = send(
        api.call("alice", Method::POST, &path("/secrets/select"))
            .json(&json!({"secret_ids": [secrets[0]], "mark_false_positives": [secrets[0]]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(
        api.call("alice", Method::POST, &path("/secrets/select"))
            .json(&json!({"secret_ids": [secrets[0], secrets[1]], "mark_false_positives": [secrets[2]]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["selected"], 2);
    assert_eq!(body["false_positives"], 1);
    let (_, detail) = send(api.call("alice", Method::GET, &path(""))).await;
    assert_eq!(detail["job"]["secrets_selected"], 2);
    let flags: Vec<(bool, bool)> = detail["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["selected_for_cleaning"].as_bool().unwrap(),
                s["false_positive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, vec![(true, false), (true, false), (false, true)]);
    assert_eq!(detail["secrets"][0]["secret_value_preview"], "AKI…XYZ");
    assert_eq!(detail["secrets"][0]["file_path"], "config/0.yml");

    // Clean: queued on the clean queue; then selecting again or cleaning twice is 409.
    let (status, body) = send(api.call("alice", Method::POST, &path("/clean"))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "cleaning");
    assert_eq!(api.env.ready_messages("deployguard.clean").await, 1);
    let (status, body) = send(
        api.call("alice", Method::POST, &path("/secrets/select"))
            .json(&json!({"secret_ids": []})),
    )
    .await;
    assert_eq!(status, 409, "select after clean started: {body}");
    let (status, _) = send(api.call("alice", Method::POST, &path("/clean"))).await;
    assert_eq!(status, 409);

    // Cleaned: push records the target and queues the push; credentials stay ids.
    api.set_status(&id, "cleaned").await;
    let (status, body) = send(
        api.call("alice", Method::POST, &path("/push"))
            .json(&json!({"target_platform": "generic", "target_url": "file:///tmp/x"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(
        api.call("alice", Method::POST, &path("/push"))
            .json(&json!({
                "target_platform": "github",
                "target_url": "http://127.0.0.1:9/org/new-repo.git",
                "target_credentials_id": "cred-xyz-789",
                "force_push": true
            })),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pushing");
    assert_eq!(api.env.ready_messages("deployguard.push").await, 1);
    let (_, detail) = send(api.call("alice", Method::GET, &path(""))).await;
    assert_eq!(detail["job"]["target_platform"], "github");
    assert_eq!(detail["job"]["target_credentials_id"], "cred-xyz-789");
    assert_eq!(detail["job"]["force_push"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_paged_in_the_order_found() {
    let api = Api::start().await;
    let id = api.create_job("alice").await;
    api.set_status(&id, "awaiting_selection").await;
    let ids = api.add_secrets(&id, 5).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/jobs/{id}/secrets?limit=2&cursor={c}"),
            None => format!("/jobs/{id}/secrets?limit=2"),
        };
        let (status, page) = send(api.call("alice", Method::GET, &path)).await;
        assert_eq!(status, 200, "{page}");
        for s in page["secrets"].as_array().unwrap() {
            seen.push(s["id"].as_str().unwrap().to_owned());
            assert!(
                s.get("value").is_none() && s.get("value_hash").is_none(),
                "{s}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_job_deletes_its_artifacts_and_can_be_repeated() {
    let api = Api::start().await;
    let id = api.create_job("alice").await;
    let other = api.create_job("alice").await;
    let storage = api.env.storage();
    let (job, other_job): (uuid::Uuid, uuid::Uuid) = (id.parse().unwrap(), other.parse().unwrap());
    let keys = [
        ObjectKey::SourceBundle(job),
        ObjectKey::EncryptedReport(job),
        ObjectKey::Archive(job),
        ObjectKey::SourceBundle(other_job),
    ];
    for key in keys {
        storage.put_bytes(key, b"data".to_vec()).await.unwrap();
    }
    // Workers hear of it on the notification channel.
    let mut listener = sqlx::postgres::PgListener::connect(&api.env.database_url(None))
        .await
        .unwrap();
    listener.listen("deployguard_job_stopped").await.unwrap();

    let (status, body) = send(api.call("alice", Method::DELETE, &format!("/jobs/{id}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["status"], "cancelled");
    assert_eq!(body["artifacts_deleted"], true);
    let note = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(note.payload(), id);
    for key in &keys[..3] {
        assert!(!storage.exists(*key).await.unwrap(), "{key} survived");
    }
    assert!(
        storage.exists(keys[3]).await.unwrap(),
        "another job's object was deleted"
    );

    let (status, body) = send(api.call("alice", Method::DELETE, &format!("/jobs/{id}"))).await;
    assert_eq!(status, 200, "cancelling twice is harmless: {body}");
    let (status, _) = send(api.call("alice", Method::POST, &format!("/jobs/{id}/clean"))).await;
    assert_eq!(status, 409);
    api.set_status(&other, "expired").await;
    let (status, body) = send(api.call("alice", Method::DELETE, &format!("/jobs/{other}"))).await;
    assert_eq!(status, 409, "{body}");
    let cancels: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'job.cancel' AND job_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&api.db())
    .await
    .unwrap();
    assert_eq!(
        cancels, 1,
        "only the cancel that changed something is a success row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_redirects_to_a_presigned_url_on_the_public_host() {
    let env = deployguard_testkit::TestEnv::new().await;
    let mut vars = job_vars(&env);
    // What users reach: here the same server under another name.
    let public = env.s3_url(None).replace("127.0.0.1", "localhost");
    vars.insert("S3_PUBLIC_ENDPOINT_URL".into(), public.clone());
    let api = Api::start_with(env, &vars).await;
    let id = api.create_job("alice").await;
    api.set_status(&id, "cleaned").await;
    let (status, body) =
        send(api.call("alice", Method::GET, &format!("/jobs/{id}/download"))).await;
    assert_eq!(status, 410, "no archive stored: {body}");
    assert_eq!(body["error"]["code"], "artifact_gone");

    let job: uuid::Uuid = id.parse().unwrap();
    api.env
        .storage()
        .put_bytes(ObjectKey::Archive(job), b"PK-cleaned-archive".to_vec())
        .await
        .unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(api.app.url(&format!("/api/v2/jobs/{id}/download")))
        .header("X-User-ID", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(public.trim_end_matches('/')),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature"), "{location}");
    let fetched = reqwest::get(&location).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        fetched.bytes().await.unwrap().as_ref(),
        b"PK-cleaned-archive"
    );

    let (status, _) = send(api.call(
        "alice",
        Method::GET,
        &format!("/jobs/{id}/download?format=rar"),
    ))
    .await;
    assert_eq!(status, 400);
    // No task writes a tar.gz: the format is not offered, rather than always gone.
    let (status, body) = send(api.call(
        "alice",
        Method::GET,
        &format!("/jobs/{id}/download?format=tar.gz"),
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    // The bundle is a format the clean writes; this job has none stored.
    let (status, body) = send(api.call(
        "alice",
        Method::GET,
        &format!("/jobs/{id}/download?format=bundle"),
    ))
    .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"]["code"], "artifact_gone");
}
