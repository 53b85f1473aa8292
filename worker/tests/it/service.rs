//! The service end to end, driven over HTTP only: the API (in this process), the real
//! worker binary, PostgreSQL, RabbitMQ, S3, a git smart-HTTP server with basic auth, and
//! fakes of the two SaaS services (credentials, GitHub).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deployguard::env::Load;
use deployguard::storage::ObjectKey;
use deployguard_testkit::{
    FakeCredentialService, FakeGitHub, GitServer, TestEnv, TestRepo, git_in,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Worker, eventually};

const GITHUB: &str = "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";
const AWS: &str = "AKIAM6COX6AQXF6LI3U3";
const STRIPE: &str = "sk_live_YqDRV8SKN8qU577SGwdUoxkr";
const SLACK: &str = "xoxb-319895298309-5514929746018-Gj7tMzkv1HvLOGDQfpzE0F4y";
const USER: &str = "alice";

/// Everything an end-to-end test drives, started on the test's own services.
struct Stack {
    env: TestEnv,
    api: String,
    client: reqwest::Client,
    worker: Worker,
    git: GitServer,
    credentials: FakeCredentialService,
    work_dir: tempfile::TempDir,
    _served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Stack {
    async fn start(extra: &[(&str, &str)]) -> Self {
        Self::start_on(GitServer::start().await, extra).await
    }

    async fn start_on(git: GitServer, extra: &[(&str, &str)]) -> Self {
        let env = TestEnv::new().await;
        let credentials = FakeCredentialService::start().await;
        credentials.add("source-cred", USER, git.username(), git.password());
        credentials.add("target-cred", USER, git.username(), git.password());
        credentials.add("wrong-cred", USER, git.username(), "not-the-password");
        let work_dir = tempfile::tempdir().unwrap();
        let mut vars: HashMap<String, String> = env.vars();
        let auth = credentials.url().to_string();
        let work = work_dir.path().display().to_string();
        for (k, v) in [
            ("URL_ALLOWLIST", "127.0.0.0/8"),
            ("ALLOW_HTTP_URLS", "true"),
            ("AUTH_SERVICE_URL", auth.as_str()),
            ("WORK_DIR", work.as_str()),
            (
                "LOG_LEVEL",
                "debug,sqlx=warn,lapin=info,hyper=info,aws=info,h2=info,reqwest=info",
            ),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            vars.insert(k.into(), v.into());
        }
        let settings = deployguard_api::settings::Settings::from_source(&vars).unwrap();
        let state = deployguard_api::AppState::new(&settings).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}/api/v2", listener.local_addr().unwrap());
        let served = tokio::spawn(deployguard_api::serve(
            state,
            listener,
            std::future::pending(),
        ));
        let extra: Vec<(&str, &str)> = vars
            .iter()
            .filter(|(k, _)| !env.vars().contains_key(*k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let worker = Worker::start(&env, &[], &extra).await;
        Self {
            env,
            api,
            client: reqwest::Client::new(),
            worker,
            git,
            credentials,
            work_dir,
            _served: served,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.api))
            .header("X-User-ID", USER);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self, source: &str, credential: Option<&str>) -> String {
        let mut body = json!({"source_url": source, "source_platform": "generic"});
        if let Some(id) = credential {
            body["source_credentials_id"] = json!(id);
        }
        let (status, job) = self.call(Method::POST, "/jobs", Some(body)).await;
        assert_eq!(status, 202, "{job}");
        job["id"].as_str().unwrap().to_owned()
    }

    /// Waits for the scan, selects every secret found and starts the clean.
    async fn select_all_and_clean(&self, id: &str) {
        let (job, _) = self.wait_for(id, "awaiting_selection").await;
        let ids: Vec<Value> = job["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].clone())
            .collect();
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/jobs/{id}/secrets/select"),
                Some(json!({"secret_ids": ids})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = self
            .call(Method::POST, &format!("/jobs/{id}/clean"), Some(json!({})))
            .await;
        assert_eq!(status, 202, "{body}");
    }

    async fn job(&self, id: &str) -> Value {
        let (status, detail) = self.call(Method::GET, &format!("/jobs/{id}"), None).await;
        assert_eq!(status, 200, "{detail}");
        // The job, with its secrets beside its fields.
        let mut job = detail["job"].clone();
        job["secrets"] = detail["secrets"].clone();
        job
    }

    /// Polls the job until it reaches `status`; panics with the job and the worker's
    /// log if it settles elsewhere or takes too long. Returns every stage seen.
    async fn wait_for(&self, id: &str, status: &str) -> (Value, Vec<(String, i64)>) {
        let mut seen = Vec::new();
        for _ in 0..1200 {
            let job = self.job(id).await;
            let now = job["status"].as_str().unwrap_or_default().to_owned();
            if let Some(stage) = job["stage"].as_str() {
                let entry = (
                    stage.to_owned(),
                    job["progress_percent"].as_i64().unwrap_or(-1),
                );
                if seen.last() != Some(&entry) {
                    seen.push(entry);
                }
            }
            if now == status {
                return (job, seen);
            }
            let settled = [
                "awaiting_selection",
                "completed",
                "cleaned",
                "pushed",
                "failed",
                "cancelled",
            ];
            assert!(
                !settled.contains(&now.as_str()),
                "job ended {now}, not {status}: {job}\n{}",
                self.worker.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never reached {status}:\n{}", self.worker.log());
    }

    /// A mirror clone of the job's cleaned bundle as stored (in a directory removed
    /// when the first value is dropped).
    async fn cleaned_clone(&self, id: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let bundle = self
            .env
            .storage()
            .get_bytes(ObjectKey::CleanedBundle(id.parse().unwrap()))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cleaned.bundle"), &bundle).unwrap();
        git_in(
            dir.path(),
            &[
                "clone",
                "--quiet",
                "--mirror",
                "cleaned.bundle",
                "clone.git",
            ],
        );
        let clone = dir.path().join("clone.git");
        (dir, clone)
    }

    /// Keys in the bucket under any of the job's prefixes.
    async fn objects(&self, id: &str) -> Vec<String> {
        let storage = self.env.storage();
        let mut keys = Vec::new();
        for prefix in ["repos", "reports", "cleaned"] {
            keys.extend(storage.list_keys(&format!("{prefix}/{id}/")).await.unwrap());
        }
        keys
    }

    /// Files left in the work directory (the worker's lock file aside).
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        walk(self.work_dir.path(), &mut found);
        found.retain(|p| !p.ends_with("/.lock"));
        found
    }
}

fn walk(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir()
            && !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("worker-")
        {
            out.push(format!("{}/", path.display()));
        }
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path.display().to_string());
        }
    }
}

/// Secrets planted where people leave them: a file on main, a branch only, a file that
/// was deleted later, and one that stays (not selected).
fn planted_repository() -> TestRepo {
    let mut repo = TestRepo::new();
    repo.write("README.md", "# payments\n");
    repo.commit("initial commit");
    repo.write(
        "config/app.env",
        format!("AWS_ACCESS_KEY_ID={AWS}\nDEBUG=1\n"),
    );
    repo.commit("add configuration");
    repo.write("deploy/old.env", format!("STRIPE_KEY={STRIPE}\n"));
    repo.commit("deploy settings");
    repo.remove("deploy/old.env");
    repo.commit("remove the deploy settings");
    repo.write("notes/slack.txt", format!("bot token {SLACK}\n"));
    repo.commit("notes");
    repo.checkout("feature");
    repo.write("ci/token.txt", format!("{GITHUB}\n"));
    repo.commit("ci token on a branch");
    repo.checkout("main");
    repo.tag_annotated("v1.0", "first release");
    repo
}

/// Pushes every ref of `repo` to repository `name` on the server.
fn publish(server: &GitServer, repo: &mut TestRepo, name: &str) {
    server.create_bare(name);
    let url = server.url(name).replace(
        "http://",
        &format!("http://{}:{}@", server.username(), server.password()),
    );
    repo.git(&["push", "--quiet", "--mirror", &url]);
}

/// Every blob and message of every ref of a fresh clone of `url`.
fn history_text(url: &str, server: &GitServer) -> String {
    let dir = tempfile::tempdir().unwrap();
    let auth = url.replace(
        "http://",
        &format!("http://{}:{}@", server.username(), server.password()),
    );
    git_in(
        dir.path(),
        &["clone", "--quiet", "--mirror", &auth, "mirror.git"],
    );
    let repo = dir.path().join("mirror.git");
    let mut text =
        String::from_utf8_lossy(&git_in(&repo, &["log", "--all", "-p", "--format=%H %B"]))
            .into_owned();
    text.push_str(&String::from_utf8_lossy(&git_in(&repo, &["for-each-ref"])));
    text
}

/// Log lines, in this process, of the in-process API.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn everything_in_the_database(env: &TestEnv) -> String {
    let mut all = String::new();
    for table in [
        "jobs",
        "secrets_found",
        "task_results",
        "audit_logs",
        "outbox",
        "job_callbacks",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM {table} t"
        )))
        .fetch_all(&env.db)
        .await
        .unwrap();
        all.push_str(&rows.join("\n"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_scanned_cleaned_downloaded_and_pushed_over_the_api() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug,sqlx=warn,hyper=info,h2=info,reqwest=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init();
    let stack = Stack::start(&[]).await;
    let mut repo = planted_repository();
    publish(&stack.git, &mut repo, "payments");

    // Scan: exactly the planted secrets, with real progress on the way.
    let id = stack
        .create(&stack.git.url("payments"), Some("source-cred"))
        .await;
    let (job, stages) = stack.wait_for(&id, "awaiting_selection").await;
    assert_eq!(job["total_secrets_found"], 4, "{job}");
    assert_eq!(job["progress_percent"], 100);
    assert!(
        stages
            .iter()
            .any(|(s, _)| s.starts_with("cloning") || s.starts_with("scanning")),
        "{stages:?}"
    );
    let previews: HashMap<String, (String, String)> = job["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["rule_id"].as_str().unwrap().to_owned(),
                (
                    s["id"].as_str().unwrap().to_owned(),
                    s["file_path"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect();
    let paths: Vec<&str> = previews.values().map(|(_, p)| p.as_str()).collect();
    for path in [
        "config/app.env",
        "deploy/old.env",
        "notes/slack.txt",
        "ci/token.txt",
    ] {
        assert!(paths.contains(&path), "{path} not among {paths:?}");
    }
    let id_at = |path: &str| {
        previews
            .values()
            .find(|(_, p)| p == path)
            .unwrap()
            .0
            .clone()
    };
    let stored: Vec<String> = stack
        .objects(&id)
        .await
        .iter()
        .map(|key| key.replace(&id, "ID"))
        .collect();
    assert_eq!(
        stored,
        [
            "repos/ID/source.bundle",
            "repos/ID/source.idx",
            "reports/ID/report.json.enc",
            "reports/ID/report.sarif",
        ],
        "the bundle with its pack index, the encrypted report and SARIF"
    );
    let sealed = stack
        .env
        .storage()
        .get_bytes(ObjectKey::EncryptedReport(id.parse().unwrap()))
        .await
        .unwrap();
    assert!(sealed.starts_with(b"DGENC1"));
    for value in [AWS, STRIPE, SLACK, GITHUB] {
        assert!(!sealed.windows(value.len()).any(|w| w == value.as_bytes()));
    }

    // Select three, mark the Slack token a false positive, clean.
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/jobs/{id}/secrets/select"),
            Some(json!({
                "secret_ids": [id_at("config/app.env"), id_at("deploy/old.env"), id_at("ci/token.txt")],
                "mark_false_positives": [id_at("notes/slack.txt")],
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack
        .call(Method::POST, &format!("/jobs/{id}/clean"), Some(json!({})))
        .await;
    assert_eq!(status, 202, "{body}");
    let (job, _) = stack.wait_for(&id, "cleaned").await;
    assert_eq!(job["secrets_cleaned"], 3, "{job}");
    assert!(job["commits_rewritten"].as_i64().unwrap() >= 3, "{job}");

    // Download through the presigned URL; the bundle inside the archive is checked by
    // cloning the cleaned bundle object the same way.
    let response = stack
        .client
        .get(format!("{}/jobs/{id}/download", stack.api))
        .header("X-User-ID", USER)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "download: {}",
        response.status()
    );
    let archive = response.bytes().await.unwrap();
    assert!(archive.starts_with(b"PK"), "a zip archive");
    let bundle_dir = tempfile::tempdir().unwrap();
    let zip = bundle_dir.path().join("cleaned.zip");
    std::fs::write(&zip, &archive).unwrap();
    let unzipped = std::process::Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(bundle_dir.path().join("unzipped"))
        .status()
        .unwrap();
    assert!(unzipped.success());
    let checkout = bundle_dir.path().join("unzipped/payments");
    assert_eq!(
        String::from_utf8_lossy(&git_in(&checkout, &["status", "--porcelain"])),
        "",
        "the archive holds a clean checkout"
    );
    let unpacked =
        String::from_utf8_lossy(&git_in(&checkout, &["log", "--all", "-p"])).into_owned();
    for gone in [AWS, STRIPE, GITHUB] {
        assert!(!unpacked.contains(gone), "{gone} is in the archive");
    }
    assert!(unpacked.contains(SLACK));
    let stored: Vec<String> = stack
        .objects(&id)
        .await
        .into_iter()
        .filter(|key| key.starts_with("cleaned/"))
        .map(|key| key.replace(&id, "ID"))
        .collect();
    assert_eq!(
        stored,
        [
            "cleaned/ID/cleaned.bundle",
            "cleaned/ID/cleaned.idx",
            "cleaned/ID/cleaned.zip"
        ]
    );
    let bundle = bundle_dir.path().join("cleaned.bundle");
    stack
        .env
        .storage()
        .get_file(ObjectKey::CleanedBundle(id.parse().unwrap()), &bundle)
        .await
        .unwrap();
    git_in(
        bundle_dir.path(),
        &[
            "clone",
            "--quiet",
            "--mirror",
            &bundle.display().to_string(),
            "clone.git",
        ],
    );
    let cleaned = String::from_utf8_lossy(&git_in(
        &bundle_dir.path().join("clone.git"),
        &["log", "--all", "-p"],
    ))
    .into_owned();
    for gone in [AWS, STRIPE, GITHUB] {
        assert!(!cleaned.contains(gone), "{gone} survived the clean");
    }
    assert!(cleaned.contains(SLACK), "the unselected secret must stay");
    assert!(cleaned.contains("***REMOVED***"));

    // Push (force) to a second repository.
    stack.git.create_bare("payments-clean");
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/jobs/{id}/push"),
            Some(json!({
                "target_platform": "generic",
                "target_url": stack.git.url("payments-clean"),
                "target_credentials_id": "target-cred",
                "force_push": true,
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (job, _) = stack.wait_for(&id, "pushed").await;
    let refs: Vec<&str> = job["push_result"]["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["refname"].as_str().unwrap())
        .collect();
    for name in ["refs/heads/main", "refs/heads/feature", "refs/tags/v1.0"] {
        assert!(refs.contains(&name), "{name} not pushed: {refs:?}");
    }
    let pushed = history_text(&stack.git.url("payments-clean"), &stack.git);
    for gone in [AWS, STRIPE, GITHUB] {
        assert!(!pushed.contains(gone), "{gone} reached the target");
    }
    assert!(pushed.contains(SLACK));
    // The specification's default: a pushed job's stored repository data is deleted.
    assert!(
        eventually(Duration::from_secs(5), || async {
            stack.objects(&id).await.is_empty()
        })
        .await,
        "{:?}",
        stack.objects(&id).await
    );
    assert!(stack.leftovers().is_empty(), "{:?}", stack.leftovers());

    // No secret value or credential in any log, row or published message.
    let requests = stack.credentials.requests();
    assert!(
        requests.iter().all(|r| r.user_id.as_deref() == Some(USER)),
        "{requests:?}"
    );
    let api_log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let worker_log = stack.worker.log();
    assert!(
        worker_log.contains("scan stored"),
        "the worker log is captured"
    );
    let database = everything_in_the_database(&stack.env).await;
    for (name, text) in [
        ("API log", &api_log),
        ("worker log", &worker_log),
        ("database", &database),
    ] {
        for value in [AWS, STRIPE, SLACK, GITHUB, stack.git.password()] {
            assert!(!text.contains(value), "{name} holds {}…", &value[..6]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_target_is_created_through_the_github_api_then_pushed() {
    // The fake GitHub accepts the token the git server takes as its password, so one
    // credential serves both, as a GitHub token does.
    let git = GitServer::start().await;
    let github = FakeGitHub::start(git.password(), USER).await;
    let api = github.url().to_string();
    let stack = Stack::start_on(git, &[("GITHUB_API_URL", api.as_str())]).await;
    let mut repo = planted_repository();
    publish(&stack.git, &mut repo, "app");
    let id = stack
        .create(&stack.git.url("app"), Some("source-cred"))
        .await;
    let (job, _) = stack.wait_for(&id, "awaiting_selection").await;
    let first = job["secrets"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/jobs/{id}/secrets/select"),
            Some(json!({"secret_ids": [first]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    stack
        .call(Method::POST, &format!("/jobs/{id}/clean"), Some(json!({})))
        .await;
    stack.wait_for(&id, "cleaned").await;

    // The git server stands in for GitHub's storage; the repository is "created" in the
    // fake API and its bare repository made beside it.
    stack.git.create_bare(&format!("{USER}/app-clean"));
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/jobs/{id}/push"),
            Some(json!({
                "target_platform": "github",
                "target_url": stack.git.url(&format!("{USER}/app-clean")),
                "target_credentials_id": "target-cred",
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (job, _) = stack.wait_for(&id, "pushed").await;
    let created = github.repos();
    assert!(
        created
            .iter()
            .any(|r| r.owner == USER && r.name == "app-clean" && r.private),
        "{created:?}"
    );
    let requests = github.requests();
    assert!(
        requests.contains(&"POST /user/repos".to_owned()),
        "{requests:?}"
    );
    assert!(
        job["push_result"]["refs"].as_array().unwrap().len() >= 3,
        "{job}"
    );
    let pushed = history_text(&stack.git.url(&format!("{USER}/app-clean")), &stack.git);
    assert!(pushed.contains("# payments"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_repository_without_its_index_is_cleaned_and_a_damaged_one_fails_plainly() {
    let stack = Stack::start(&[]).await;
    let mut repo = planted_repository();
    publish(&stack.git, &mut repo, "stored");
    let storage = stack.env.storage();

    // As a job scanned before indexes were kept: git indexes the bundle instead.
    let id = stack
        .create(&stack.git.url("stored"), Some("source-cred"))
        .await;
    stack.wait_for(&id, "awaiting_selection").await;
    storage
        .delete(&format!("repos/{id}/source.idx"))
        .await
        .unwrap();
    stack.select_all_and_clean(&id).await;
    let (job, _) = stack.wait_for(&id, "cleaned").await;
    assert_eq!(job["secrets_cleaned"], 4, "{job}");

    // A bundle damaged in storage: the clean fails at once, saying so, and leaves no
    // work file behind.
    let id = stack
        .create(&stack.git.url("stored"), Some("source-cred"))
        .await;
    stack.wait_for(&id, "awaiting_selection").await;
    let key = ObjectKey::SourceBundle(id.parse().unwrap());
    // One byte inside the pack: the stored index still names the pack's trailer, so
    // only the checksum over the whole pack tells.
    let mut damaged = storage.get_bytes(key).await.unwrap();
    let middle = damaged.len() - 1000;
    damaged[middle] ^= 0x55;
    storage.put_bytes(key, damaged).await.unwrap();
    stack.select_all_and_clean(&id).await;
    let failed = eventually(Duration::from_secs(60), || async {
        stack.job(&id).await["status"] == "failed"
    })
    .await;
    let job = stack.job(&id).await;
    assert!(failed, "{job}\n{}", stack.worker.log());
    assert_eq!(job["error_code"], "repository_unreadable", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("source.bundle"),
        "{job}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            stack.leftovers().is_empty()
        })
        .await,
        "{:?}",
        stack.leftovers()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_one_branch_scans_cleans_and_pushes_that_branch_only() {
    let stack = Stack::start(&[]).await;
    let mut repo = planted_repository();
    publish(&stack.git, &mut repo, "branchy");
    let (status, job) = stack
        .call(
            Method::POST,
            "/jobs",
            Some(json!({
                "source_url": stack.git.url("branchy"),
                "source_credentials_id": "source-cred",
                "source_branch": "main",
            })),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let (job, _) = stack.wait_for(&id, "awaiting_selection").await;
    let mut paths: Vec<&str> = job["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file_path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    // ci/token.txt lives on the feature branch only.
    assert_eq!(
        paths,
        ["config/app.env", "deploy/old.env", "notes/slack.txt"],
        "{job}"
    );
    stack.select_all_and_clean(&id).await;
    stack.wait_for(&id, "cleaned").await;
    stack.git.create_bare("branchy-clean");
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/jobs/{id}/push"),
            Some(json!({
                "target_platform": "generic",
                "target_url": stack.git.url("branchy-clean"),
                "target_credentials_id": "target-cred",
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (job, _) = stack.wait_for(&id, "pushed").await;
    let refs: Vec<&str> = job["push_result"]["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["refname"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["refs/heads/main"], "{job}");
    let pushed = history_text(&stack.git.url("branchy-clean"), &stack.git);
    for gone in [AWS, STRIPE, SLACK, GITHUB] {
        assert!(!pushed.contains(gone), "{gone} reached the target");
    }
}

/// Starts a job that must fail; returns the settled job.
async fn failing(stack: &Stack, source: &str, credential: Option<&str>, code: &str) -> Value {
    let id = stack.create(source, credential).await;
    let settled = eventually(Duration::from_secs(60), || async {
        stack.job(&id).await["status"] == "failed"
    })
    .await;
    let job = stack.job(&id).await;
    assert!(settled, "{job}\n{}", stack.worker.log());
    assert_eq!(job["error_code"], code, "{job}");
    assert!(
        stack.objects(&id).await.is_empty(),
        "{:?}",
        stack.objects(&id).await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            stack.leftovers().is_empty()
        })
        .await,
        "{:?}",
        stack.leftovers()
    );
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_unreachable_and_oversized_repositories_fail_with_clear_errors() {
    let stack = Stack::start(&[("MAX_REPO_BYTES", "60000")]).await;
    let mut repo = planted_repository();
    publish(&stack.git, &mut repo, "small");

    let job = failing(
        &stack,
        &stack.git.url("small"),
        Some("wrong-cred"),
        "authentication_failed",
    )
    .await;
    assert!(
        job["error"].as_str().unwrap().contains("authentication"),
        "{job}"
    );
    assert!(!job["error"].as_str().unwrap().contains("not-the-password"));

    let job = failing(
        &stack,
        &stack.git.url("small"),
        Some("no-such-cred"),
        "credentials_unavailable",
    )
    .await;
    assert!(
        job["error"].as_str().unwrap().contains("no-such-cred"),
        "{job}"
    );

    // Nothing listens on port 9: retried, then given up with the reason.
    let job = failing(
        &stack,
        "http://127.0.0.1:9/nobody/repo.git",
        None,
        "retries_exhausted",
    )
    .await;
    assert!(
        job["error"].as_str().unwrap().contains("clone_failed"),
        "{job}"
    );

    // A repository over the size limit: 200 incompressible files of 1 KiB.
    let mut big = TestRepo::new();
    for i in 0..200u32 {
        let mut rng = fastrand::Rng::with_seed(u64::from(i));
        let noise: String = (0..1024).map(|_| rng.alphanumeric()).collect();
        big.write(&format!("data/{i}.txt"), noise);
    }
    big.commit("bulk");
    publish(&stack.git, &mut big, "big");
    let job = failing(
        &stack,
        &stack.git.url("big"),
        Some("source-cred"),
        "repository_too_large",
    )
    .await;
    assert!(job["error"].as_str().unwrap().contains("limit"), "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_during_its_scan_stops_and_leaves_nothing_behind() {
    let stack = Stack::start(&[]).await;
    // Enough history that the scan takes a while.
    let mut repo = TestRepo::new();
    let mut import = String::new();
    for i in 0..3000u32 {
        let body: String = (0..4000)
            .map(|n| char::from(b'a' + ((i * 31 + n * 17) % 26) as u8))
            .collect();
        import.push_str(&format!(
            "blob\nmark :{}\ndata {}\n{body}\n",
            i + 1,
            body.len()
        ));
    }
    import.push_str(
        "commit refs/heads/main\ncommitter t <t@example.com> 1700000000 +0000\ndata 4\nbulk\n",
    );
    for i in 0..3000u32 {
        import.push_str(&format!("M 100644 :{} f/{i}.txt\n", i + 1));
    }
    repo.git_with_input(&["fast-import", "--quiet"], Some(import.as_bytes()));
    publish(&stack.git, &mut repo, "large");
    let id = stack
        .create(&stack.git.url("large"), Some("source-cred"))
        .await;
    let scanning = eventually(Duration::from_secs(60), || async {
        stack.job(&id).await["status"] == "scanning"
    })
    .await;
    assert!(scanning, "{}", stack.worker.log());
    let (status, body) = stack
        .call(Method::DELETE, &format!("/jobs/{id}"), None)
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    let revoked = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, String>("SELECT state FROM task_results WHERE job_id = $1::uuid")
            .bind(&id)
            .fetch_optional(&stack.env.db)
            .await
            .unwrap()
            .as_deref()
            == Some("revoked")
    })
    .await;
    assert!(revoked, "{}", stack.worker.log());
    assert_eq!(stack.job(&id).await["status"], "cancelled");
    assert!(
        eventually(Duration::from_secs(5), || async {
            stack.leftovers().is_empty() && stack.objects(&id).await.is_empty()
        })
        .await,
        "{:?} {:?}",
        stack.leftovers(),
        stack.objects(&id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_delivered_again_after_its_job_moved_on_changes_nothing() {
    let stack = Stack::start(&[]).await;
    let mut repo = planted_repository();
    publish(&stack.git, &mut repo, "again");
    let id = stack
        .create(&stack.git.url("again"), Some("source-cred"))
        .await;
    let (before, _) = stack.wait_for(&id, "awaiting_selection").await;

    // A second scan message for the same job, as a duplicate publish would make.
    let job_id: uuid::Uuid = id.parse().unwrap();
    let mut duplicate = crate::task(
        <deployguard::tasks::ScanRepository as deployguard::queue::Task>::NAME,
        deployguard::queue::WorkQueue::Scan,
        json!({}),
    );
    duplicate.body.job_id = Some(job_id);
    duplicate.body.user_id = Some(USER.into());
    crate::publisher(&stack.env)
        .publish(&duplicate)
        .await
        .unwrap();
    assert!(
        crate::wait_state(&stack.env, duplicate.id, "success", Duration::from_secs(20)).await,
        "{}",
        stack.worker.log()
    );
    let result: Value = sqlx::query_scalar("SELECT result FROM task_results WHERE task_id = $1")
        .bind(duplicate.id)
        .fetch_one(&stack.env.db)
        .await
        .unwrap();
    assert!(result["skipped"].is_string(), "{result}");
    let after = stack.job(&id).await;
    assert_eq!(
        after["secrets"], before["secrets"],
        "the secrets are untouched"
    );
    assert_eq!(after["updated_at"], before["updated_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base64_kubernetes_secret_and_a_key_store_are_selected_over_the_api_and_gone_after_the_clean()
 {
    use base64::Engine;
    let stack = Stack::start(&[]).await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(GITHUB);
    let p12 = deployguard_testkit::fixtures::pkcs12_file();
    let mut repo = TestRepo::new();
    repo.write("README.md", "service\n")
        .write(
            "k8s/secret.yaml",
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: deploy\ntype: Opaque\ndata:\n  token: {encoded}\n"
            ),
        )
        .write("certs/server.p12", &p12)
        .commit("deploy config");
    repo.write("README.md", "service, documented\n")
        .commit("docs");
    let p12_blob = repo.blob_id(&p12);
    publish(&stack.git, &mut repo, "k8s");
    let id = stack
        .create(&stack.git.url("k8s"), Some("source-cred"))
        .await;
    let (job, _) = stack.wait_for(&id, "awaiting_selection").await;

    let (status, files) = stack
        .call(Method::GET, &format!("/jobs/{id}/files"), None)
        .await;
    assert_eq!(status, 200, "{files}");
    let store = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "pkcs12")
        .unwrap_or_else(|| panic!("the key store is a file finding: {files}"));
    assert_eq!(store["path"], "certs/server.p12", "{files}");
    assert_eq!(store["blob"], p12_blob.as_str(), "{files}");
    assert!(
        !files["largest_blobs"].as_array().unwrap().is_empty(),
        "{files}"
    );
    let file_id = store["id"].clone();
    let secret_ids: Vec<Value> = job["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert!(!secret_ids.is_empty(), "the base64 token is found: {job}");

    // Bad selections are refused and change nothing.
    let select = format!("/jobs/{id}/secrets/select");
    for bad in [
        json!({"secret_ids": [], "paths": [""]}),
        json!({"secret_ids": [], "file_ids": ["not-a-finding"]}),
        json!({"secret_ids": [], "strip_blobs_bigger_than": 0}),
        json!({"secret_ids": [], "blob_ids": ["abc"]}),
    ] {
        let (status, body) = stack.call(Method::POST, &select, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (_, files) = stack
        .call(Method::GET, &format!("/jobs/{id}/files"), None)
        .await;
    assert!(files["selection"].is_null(), "{files}");

    let (status, body) = stack
        .call(
            Method::POST,
            &select,
            Some(json!({"secret_ids": secret_ids, "file_ids": [file_id]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["files"]["paths"],
        json!(["/certs/server.p12"]),
        "{body}"
    );
    let (status, body) = stack
        .call(Method::POST, &format!("/jobs/{id}/clean"), Some(json!({})))
        .await;
    assert_eq!(status, 202, "{body}");
    stack.wait_for(&id, "cleaned").await;

    let (status, report) = stack
        .call(Method::GET, &format!("/jobs/{id}/clean-report"), None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert!(
        report["files"]["entries_removed"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        !report["next_steps"].as_array().unwrap().is_empty(),
        "{report}"
    );

    // The cleaned bundle, as stored: neither the token, nor its base64 text, nor the key
    // store is in any object.
    let (_dir, clone) = stack.cleaned_clone(&id).await;
    let text = String::from_utf8_lossy(&git_in(&clone, &["log", "--all", "-p", "--format=%H %B"]))
        .into_owned();
    assert!(!text.contains(GITHUB) && !text.contains(&encoded), "{text}");
    let objects =
        String::from_utf8_lossy(&git_in(&clone, &["rev-list", "--objects", "--all"])).into_owned();
    assert!(!objects.contains(&p12_blob), "{objects}");
    assert!(!objects.contains("server.p12"), "{objects}");
    // The first changed commit of main is its root, as rev-list on the result says.
    let first = report["first_changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "refs/heads/main")
        .unwrap_or_else(|| panic!("{report}"));
    let root = String::from_utf8_lossy(&git_in(&clone, &["rev-list", "--max-parents=0", "main"]))
        .trim()
        .to_owned();
    assert_eq!(first["new"], root.as_str(), "{report}");
    let map = report["commit_map"].as_array().unwrap();
    assert_eq!(map.len(), 2, "both commits are rewritten: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_finds_only_a_file_awaits_selection_and_a_files_only_clean_removes_it() {
    let stack = Stack::start(&[]).await;
    let p12 = deployguard_testkit::fixtures::pkcs12_file();
    let mut repo = TestRepo::new();
    repo.write("README.md", "service\n")
        .write("deploy/keystore.p12", &p12)
        .write("deploy/settings.toml", "region = \"eu\"\n")
        .commit("deploy");
    let blob = repo.blob_id(&p12);
    publish(&stack.git, &mut repo, "keystore");
    let id = stack
        .create(&stack.git.url("keystore"), Some("source-cred"))
        .await;
    let (job, _) = stack.wait_for(&id, "awaiting_selection").await;
    assert_eq!(job["total_secrets_found"], 0, "{job}");
    // Nothing selected yet: the clean is refused.
    let (status, body) = stack
        .call(Method::POST, &format!("/jobs/{id}/clean"), Some(json!({})))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/jobs/{id}/secrets/select"),
            Some(json!({"secret_ids": [], "paths": ["*.p12"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack
        .call(Method::POST, &format!("/jobs/{id}/clean"), Some(json!({})))
        .await;
    assert_eq!(status, 202, "{body}");
    stack.wait_for(&id, "cleaned").await;
    let (_dir, clone) = stack.cleaned_clone(&id).await;
    let objects =
        String::from_utf8_lossy(&git_in(&clone, &["rev-list", "--objects", "--all"])).into_owned();
    assert!(!objects.contains(&blob), "{objects}");
    assert!(objects.contains("deploy/settings.toml"), "{objects}");
}
