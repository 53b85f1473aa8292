use std::collections::HashMap;
use std::net::SocketAddr;

use deployguard::env::Load;
use deployguard_api::AppState;
use deployguard_api::settings::Settings;
use deployguard_testkit::TestEnv;
use tokio::sync::oneshot;

/// The API on port 0 of this machine, on the test's own services.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    /// Spawns the API with `vars` as its environment.
    pub async fn spawn(vars: &HashMap<String, String>) -> Self {
        let settings = Settings::from_source(vars).expect("API settings");
        let state = AppState::new(&settings).expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(deployguard_api::serve(state, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            served,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.served).await.unwrap().unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.served.abort();
    }
}

/// The API on a test's own services, called as one user or another.
pub struct Api {
    pub env: TestEnv,
    pub app: TestApp,
}

/// The settings every job test uses: repositories on this machine are allowed.
pub fn job_vars(env: &TestEnv) -> HashMap<String, String> {
    let mut vars = env.vars();
    vars.insert("URL_ALLOWLIST".into(), "127.0.0.0/8".into());
    vars.insert("ALLOW_HTTP_URLS".into(), "true".into());
    vars
}

impl Api {
    pub async fn start() -> Self {
        let env = TestEnv::new().await;
        let vars = job_vars(&env);
        Self::start_with(env, &vars).await
    }

    pub async fn start_with(env: TestEnv, vars: &HashMap<String, String>) -> Self {
        let app = TestApp::spawn(vars).await;
        Self { env, app }
    }

    pub fn db(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&self.env.database_url(None))
            .unwrap()
    }

    /// A request as `user` (gateway mode).
    pub fn call(&self, user: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .client
            .request(method, self.app.url(&format!("/api/v2{path}")))
            .header("X-User-ID", user)
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.call("root-admin", method, path)
            .header("X-User-Roles", "viewer, admin")
    }

    /// Creates a job for `user`; returns its id.
    pub async fn create_job(&self, user: &str) -> String {
        let (status, body) = send(
            self.call(user, reqwest::Method::POST, "/jobs")
                .json(&serde_json::json!({"source_url": "http://127.0.0.1:9/org/repo.git"})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Moves a job to `status` as a worker would (workers are not part of these tests).
    pub async fn set_status(&self, id: &str, status: &str) {
        sqlx::query("UPDATE jobs SET status = $2 WHERE id = $1::uuid")
            .bind(id)
            .bind(status)
            .execute(&self.db())
            .await
            .unwrap();
    }

    /// Records secrets found in a job as the scan task would; returns their ids.
    pub async fn add_secrets(&self, id: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let secret_id = uuid::Uuid::now_v7();
            sqlx::query(
                "INSERT INTO secrets_found (id, job_id, rule_id, secret_type, value_preview,
                    value_hash, hash_key_id, locations, confidence)
                 VALUES ($1, $2::uuid, 'aws-access-key', 'AWS access key', 'AKI…XYZ',
                    $3, 'k1', $4, 'high')",
            )
            .bind(secret_id)
            .bind(id)
            .bind(sha2_digest(&format!("{id}-{i}")))
            .bind(serde_json::json!([{"path": format!("config/{i}.yml"), "commit": "abc", "line": 3}]))
            .execute(&self.db())
            .await
            .unwrap();
            ids.push(secret_id.to_string());
        }
        sqlx::query("UPDATE jobs SET total_secrets_found = $2 WHERE id = $1::uuid")
            .bind(id)
            .bind(n as i32)
            .execute(&self.db())
            .await
            .unwrap();
        ids
    }
}

fn sha2_digest(text: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).to_vec()
}

/// Sends a request; returns the status and the JSON body (`null` when there is none).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}
