//! A test's own slice of the real services: a fresh PostgreSQL database with the schema
//! applied, a RabbitMQ virtual host, and an S3 bucket. Tests running in parallel each
//! get their own, so same-named jobs, queues or objects never meet. Everything is
//! removed when the [`TestEnv`] drops (set `DEPLOYGUARD_TEST_KEEP=1` to keep it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use deployguard::db::DatabaseConfig;
use deployguard::queue::BrokerConfig;
use deployguard::storage::{Storage, StorageConfig};
use secrecy::SecretString;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use url::Url;

/// The settings sections of the service library a test talks to its services with.
#[derive(Debug, Clone)]
pub struct Sections {
    pub database: DatabaseConfig,
    pub broker: BrokerConfig,
    pub storage: StorageConfig,
}

/// Where the shared services of the test machine are. `scripts/test.sh` starts them;
/// each can be pointed elsewhere with the variable named beside it.
#[derive(Debug, Clone)]
pub struct Services {
    /// `DEPLOYGUARD_TEST_PG_URL`: a superuser connection to an existing database.
    pub postgres: Url,
    /// `DEPLOYGUARD_TEST_AMQP_URL`: the broker, without a vhost.
    pub amqp: Url,
    /// `DEPLOYGUARD_TEST_RABBITMQ_API`: the management plugin's HTTP API.
    pub rabbitmq_api: Url,
    /// `DEPLOYGUARD_TEST_S3_URL`, `DEPLOYGUARD_TEST_S3_ACCESS_KEY`, `…_SECRET_KEY`.
    pub s3: Url,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

impl Services {
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let url = |name: &str, default: &str| {
            Url::parse(&var(name, default)).unwrap_or_else(|e| panic!("{name} is not a URL: {e}"))
        };
        Self {
            postgres: url(
                "DEPLOYGUARD_TEST_PG_URL",
                "postgres://deployguard:deployguard@127.0.0.1:5432/deployguard",
            ),
            amqp: url(
                "DEPLOYGUARD_TEST_AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672",
            ),
            rabbitmq_api: url("DEPLOYGUARD_TEST_RABBITMQ_API", "http://127.0.0.1:15672"),
            s3: url("DEPLOYGUARD_TEST_S3_URL", "http://127.0.0.1:9000"),
            s3_access_key: var("DEPLOYGUARD_TEST_S3_ACCESS_KEY", "deployguard-dev"),
            s3_secret_key: var("DEPLOYGUARD_TEST_S3_SECRET_KEY", "deployguard-dev-secret"),
        }
    }

    pub fn postgres_addr(&self) -> SocketAddr {
        socket_addr(&self.postgres, 5432)
    }

    pub fn amqp_addr(&self) -> SocketAddr {
        socket_addr(&self.amqp, 5672)
    }

    pub fn s3_addr(&self) -> SocketAddr {
        socket_addr(&self.s3, 9000)
    }

    fn rabbitmq_credentials(&self) -> (String, String) {
        let user = match self.amqp.username() {
            "" => "guest".to_owned(),
            u => u.to_owned(),
        };
        (user, self.amqp.password().unwrap_or("guest").to_owned())
    }
}

fn socket_addr(url: &Url, default_port: u16) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let host = url.host_str().unwrap_or("127.0.0.1");
    (host, url.port().unwrap_or(default_port))
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(SocketAddr::is_ipv4))
        .unwrap_or_else(|| panic!("cannot resolve {host}"))
}

/// One test's isolated database, vhost and bucket.
pub struct TestEnv {
    /// Short random id shared by the database, vhost and bucket names.
    pub id: String,
    pub services: Services,
    pub database: String,
    pub vhost: String,
    pub bucket: String,
    /// A pool on the test's own database.
    pub db: PgPool,
    http: reqwest::Client,
    scratch: std::sync::Mutex<Vec<String>>,
}

impl TestEnv {
    /// Creates the database (with migrations applied), vhost and bucket. Panics with a
    /// hint when a service is not running: tests are meant to fail loudly here.
    pub async fn new() -> Self {
        let services = Services::from_env();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let database = format!("dg_test_{id}");
        let vhost = format!("dg-test-{id}");
        let bucket = format!("dg-test-{id}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");

        create_database(&services, &database).await;
        let db_config = DatabaseConfig {
            url: SecretString::from(database_url(&services.postgres, &database, None)),
            max_connections: 5,
            run_migrations: true,
        };
        deployguard::db::migrate(&db_config, Duration::from_secs(10))
            .await
            .expect("migrating the test database");
        let db = PgPoolOptions::new()
            .max_connections(5)
            .connect(&database_url(&services.postgres, &database, None))
            .await
            .expect("connecting to the test database");

        let env = Self {
            id,
            services,
            database,
            vhost,
            bucket,
            db,
            http,
            scratch: std::sync::Mutex::default(),
        };
        env.create_vhost().await;
        env.storage()
            .ensure_bucket()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {} ({e}): {HINT}", env.bucket));
        env
    }

    /// The environment a service binary of this test would be started with.
    pub fn vars(&self) -> HashMap<String, String> {
        HashMap::from(
            [
                (
                    "DATABASE_URL",
                    database_url(&self.services.postgres, &self.database, None),
                ),
                ("AMQP_URL", self.amqp_url(None)),
                ("S3_ENDPOINT_URL", self.services.s3.to_string()),
                ("S3_ACCESS_KEY", self.services.s3_access_key.clone()),
                ("S3_SECRET_KEY", self.services.s3_secret_key.clone()),
                ("S3_BUCKET", self.bucket.clone()),
                ("API_ADDR", "127.0.0.1:0".to_owned()),
                ("READINESS_TIMEOUT_MS", "1500".to_owned()),
                ("LOG_LEVEL", "info".to_owned()),
                // Test keys: the keyed hash of secrets and the report encryption key.
                (
                    "SECRET_HASH_KEY",
                    "test-only secret hash key, 32+ characters".to_owned(),
                ),
                (
                    "REPORT_KEYS",
                    "test:dGVzdC1vbmx5IHJlcG9ydCBrZXksIDMyIGJ5dGVzISE=".to_owned(),
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        )
    }

    /// The service library's settings for this test, loaded through the same
    /// validation as the binaries use.
    pub fn config(&self) -> Sections {
        Self::config_from(&self.vars())
    }

    pub fn config_from(vars: &HashMap<String, String>) -> Sections {
        Sections {
            database: DatabaseConfig::from_source(vars).expect("test database settings"),
            broker: BrokerConfig::from_source(vars).expect("test broker settings"),
            storage: StorageConfig::from_source(vars).expect("test storage settings"),
        }
    }

    /// Creates another, empty database (no schema) that is dropped with this env;
    /// returns its URL.
    pub async fn scratch_database(&self) -> String {
        let name = {
            let mut names = self.scratch.lock().expect("scratch lock");
            let name = format!("{}_s{}", self.database, names.len());
            names.push(name.clone());
            name
        };
        create_database(&self.services, &name).await;
        database_url(&self.services.postgres, &name, None)
    }

    /// The database URL, optionally through another address (a [`crate::TcpProxy`]).
    pub fn database_url(&self, via: Option<SocketAddr>) -> String {
        database_url(&self.services.postgres, &self.database, via)
    }

    /// The broker URL of this test's vhost, optionally through another address.
    pub fn amqp_url(&self, via: Option<SocketAddr>) -> String {
        let mut url = self.services.amqp.clone();
        if let Some(addr) = via {
            set_addr(&mut url, addr);
        }
        url.set_path(&format!("/{}", self.vhost));
        url.to_string()
    }

    /// The object store URL, optionally through another address.
    pub fn s3_url(&self, via: Option<SocketAddr>) -> String {
        let mut url = self.services.s3.clone();
        if let Some(addr) = via {
            set_addr(&mut url, addr);
        }
        url.to_string()
    }

    /// A client for this test's bucket.
    pub fn storage(&self) -> Storage {
        Storage::new(&self.config().storage)
    }

    /// Stores `bytes` under any `key`, in or outside the service's layout (orphans,
    /// foreign objects), straight through the S3 client.
    pub async fn put_object(&self, key: &str, bytes: &[u8]) {
        let storage = self.storage();
        storage
            .client()
            .put_object()
            .bucket(storage.bucket())
            .key(key)
            .body(bytes.to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("storing {key}: {e}"));
    }

    /// Whether an object exists under any `key`.
    pub async fn object_exists(&self, key: &str) -> bool {
        let storage = self.storage();
        storage
            .client()
            .head_object()
            .bucket(storage.bucket())
            .key(key)
            .send()
            .await
            .is_ok()
    }

    /// A fresh AMQP connection to this test's vhost.
    pub async fn amqp_connection(&self) -> lapin::Connection {
        let uri = deployguard::queue::parse_amqp_uri(&self.amqp_url(None)).expect("AMQP URL");
        lapin::Connection::connect_uri(uri, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connecting to vhost {} ({e}): {HINT}", self.vhost))
    }

    fn management(&self, path: &str) -> Url {
        self.services
            .rabbitmq_api
            .join(path)
            .expect("management API URL")
    }

    async fn create_vhost(&self) {
        let (user, password) = self.services.rabbitmq_credentials();
        let vhost = urlencode(&self.vhost);
        let put = |url: Url, body: serde_json::Value| {
            self.http
                .put(url)
                .basic_auth(&user, Some(&password))
                .json(&body)
                .send()
        };
        let created = put(
            self.management(&format!("api/vhosts/{vhost}")),
            serde_json::json!({"description": "DeployGuard test"}),
        )
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ management API unreachable ({e}): {HINT}"));
        assert!(
            created.status().is_success(),
            "creating vhost {}: {}",
            self.vhost,
            created.status()
        );
        let granted = put(
            self.management(&format!("api/permissions/{vhost}/{}", urlencode(&user))),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await
        .expect("granting vhost permissions");
        assert!(granted.status().is_success(), "granting permissions");
    }

    /// A job's status, straight from this test's database.
    pub async fn job_status(&self, id: uuid::Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.db)
            .await
            .unwrap_or_else(|e| panic!("status of job {id}: {e}"))
    }

    /// Ready messages in a queue of this test's vhost, straight from the broker (a
    /// passive declare). Exact at once, unlike the management API's sampled counts.
    pub async fn ready_messages(&self, queue: &str) -> u32 {
        let conn = self.amqp_connection().await;
        let channel = conn.create_channel().await.expect("AMQP channel");
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..lapin::options::QueueDeclareOptions::default()
        };
        let count = channel
            .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("queue {queue} in vhost {}: {e}", self.vhost))
            .message_count();
        let _ = conn.close(200, "done".into()).await;
        count
    }

    /// Queues of this test's vhost as the management API reports them (name → messages).
    pub async fn queue_depths(&self) -> HashMap<String, u64> {
        let (user, password) = self.services.rabbitmq_credentials();
        let url = self.management(&format!("api/queues/{}", urlencode(&self.vhost)));
        let queues: Vec<serde_json::Value> = self
            .http
            .get(url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("listing queues")
            .json()
            .await
            .expect("queue list JSON");
        queues
            .iter()
            .filter_map(|q| {
                Some((
                    q.get("name")?.as_str()?.to_owned(),
                    q.get("messages")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Whether the named parts still exist on the services (for cleanup tests).
    pub async fn exists(services: &Services, database: &str, vhost: &str) -> (bool, bool) {
        let mut admin = admin_connection(services).await;
        let db: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&mut admin)
                .await
                .expect("pg_database");
        let (user, password) = services.rabbitmq_credentials();
        let status = reqwest::Client::new()
            .get(
                services
                    .rabbitmq_api
                    .join(&format!("api/vhosts/{}", urlencode(vhost)))
                    .expect("URL"),
            )
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("management API")
            .status();
        (db, status.is_success())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::env::var_os("DEPLOYGUARD_TEST_KEEP").is_some() {
            eprintln!(
                "keeping database {}, vhost {}, bucket {}",
                self.database, self.vhost, self.bucket
            );
            return;
        }
        let services = self.services.clone();
        let (database, vhost) = (self.database.clone(), self.vhost.clone());
        let scratch = std::mem::take(&mut *self.scratch.lock().unwrap_or_else(|e| e.into_inner()));
        let storage_config = self.config().storage;
        // Drop cannot await, and the test's runtime may be single-threaded and blocked
        // right here: clean up on a thread with its own runtime and fresh clients (the
        // test's pooled connections are driven by the blocked runtime).
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                drop_database(&services, &database).await;
                for name in scratch {
                    drop_database(&services, &name).await;
                }
                delete_vhost(&services, &vhost).await;
                delete_bucket(&Storage::new(&storage_config)).await;
            });
        });
        let _ = cleanup.join();
    }
}

const HINT: &str = "are the test services running? `scripts/test.sh` starts them \
                    (or run `scripts/services.sh start`)";

fn database_url(base: &Url, database: &str, via: Option<SocketAddr>) -> String {
    let mut url = base.clone();
    if let Some(addr) = via {
        set_addr(&mut url, addr);
    }
    url.set_path(&format!("/{database}"));
    url.to_string()
}

fn set_addr(url: &mut Url, addr: SocketAddr) {
    url.set_ip_host(addr.ip()).expect("URL takes a host");
    url.set_port(Some(addr.port())).expect("URL takes a port");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn admin_connection(services: &Services) -> PgConnection {
    PgConnection::connect(services.postgres.as_str())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL unreachable ({e}): {HINT}"))
}

async fn create_database(services: &Services, name: &str) {
    let mut admin = admin_connection(services).await;
    // `name` is generated from hex digits, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
}

async fn drop_database(services: &Services, name: &str) {
    let mut admin = admin_connection(services).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

async fn delete_vhost(services: &Services, vhost: &str) {
    let (user, password) = services.rabbitmq_credentials();
    if let Ok(url) = services
        .rabbitmq_api
        .join(&format!("api/vhosts/{}", urlencode(vhost)))
    {
        let _ = reqwest::Client::new()
            .delete(url)
            .basic_auth(user, Some(password))
            .send()
            .await;
    }
}

async fn delete_bucket(storage: &Storage) {
    let client = storage.client();
    let bucket = storage.bucket();
    loop {
        let Ok(listing) = client.list_objects_v2().bucket(bucket).send().await else {
            return;
        };
        let keys: Vec<String> = listing
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        if keys.is_empty() {
            break;
        }
        for key in keys {
            let _ = client.delete_object().bucket(bucket).key(key).send().await;
        }
    }
    let _ = client.delete_bucket().bucket(bucket).send().await;
}
