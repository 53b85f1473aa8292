//! Configuration of the service binaries, read from the environment once at start.
//!
//! Every setting is validated here so that a missing or malformed value stops a binary
//! before it touches anything, with one line naming the variable. Values that carry
//! credentials (URLs with passwords, keys) are held as [`SecretString`] and never echoed,
//! not even in the error for a malformed value.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// Where settings are read from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment. A variable set to the empty string counts as unset.
pub struct Environment;

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .map(|v| (*v).to_owned())
            .filter(|v| !v.trim().is_empty())
    }
}

/// A setting that is missing or malformed. Its message names the variable and never
/// contains the value of a secret-bearing variable.
#[derive(Debug, thiserror::Error)]
#[error("{var} {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn missing(var: &'static str, example: &str) -> Self {
        Self {
            var,
            problem: format!("is not set (example: {example})"),
        }
    }

    fn malformed(var: &'static str, why: impl fmt::Display) -> Self {
        Self {
            var,
            problem: format!("is malformed: {why}"),
        }
    }
}

/// Everything a service binary (API, worker, beat) needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub broker: BrokerConfig,
    pub storage: StorageConfig,
    /// Base URL of the external credential service; tasks that resolve credentials fail
    /// with a clear error when it is not configured.
    pub auth_service_url: Option<Url>,
    /// GitHub (or GitHub Enterprise) REST API base URL.
    pub github_api_url: Url,
    pub cors_origins: CorsOrigins,
    pub api_addr: SocketAddr,
    /// Upper bound for each dependency check of the readiness probe.
    pub readiness_timeout: Duration,
    /// Run pending migrations at start (under the advisory lock).
    pub run_migrations: bool,
}

impl Config {
    /// Reads the whole service configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            log: LogConfig::from_source(src)?,
            database: DatabaseConfig::from_source(src)?,
            broker: BrokerConfig::from_source(src)?,
            storage: StorageConfig::from_source(src)?,
            auth_service_url: optional_http_url(src, "AUTH_SERVICE_URL")?,
            github_api_url: optional_http_url(src, "GITHUB_API_URL")?.unwrap_or_else(|| {
                Url::parse("https://api.github.com").expect("a constant URL parses")
            }),
            cors_origins: CorsOrigins::from_source(src)?,
            api_addr: parse_or(src, "API_ADDR", "0.0.0.0:8000".parse().ok(), "host:port")?,
            readiness_timeout: Duration::from_millis(parse_or(
                src,
                "READINESS_TIMEOUT_MS",
                Some(2000u64),
                "a number of milliseconds",
            )?),
            run_migrations: parse_bool(src, "RUN_MIGRATIONS", true)?,
        })
    }
}

/// How the API learns who is calling (`AUTH_MODE`).
#[derive(Clone)]
pub enum AuthConfig {
    /// `gateway`: an auth gateway in front has validated the user and sets `X-User-ID`
    /// (and `X-User-Roles`). With `GATEWAY_TOKEN` set, those headers count only on
    /// requests that also carry `X-Gateway-Token` with that value.
    Gateway { token: Option<SecretString> },
    /// `jwt`: the API validates `Authorization: Bearer` itself.
    Jwt(JwtConfig),
}

/// JWT validation: at least one key; `sub` is the user, `JWT_ROLES_CLAIM` the roles.
#[derive(Clone)]
pub struct JwtConfig {
    /// `JWT_HS256_SECRET`: shared secret for HS256 tokens.
    pub hs256_secret: Option<SecretString>,
    /// `JWT_RS256_PUBLIC_KEY` (PEM text) or `JWT_RS256_PUBLIC_KEY_FILE`: RS256 tokens.
    pub rs256_public_key_pem: Option<String>,
    /// `JWT_ISSUER` (checked when set) and `JWT_AUDIENCE` (required).
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `JWT_ROLES_CLAIM` (default `roles`): an array of strings or a space- or
    /// comma-separated string.
    pub roles_claim: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gateway { token } => f
                .debug_struct("Gateway")
                .field("token", &token.as_ref().map(|_| "***"))
                .finish(),
            Self::Jwt(jwt) => f
                .debug_struct("Jwt")
                .field("hs256_secret", &jwt.hs256_secret.as_ref().map(|_| "***"))
                .field("rs256_public_key", &jwt.rs256_public_key_pem.is_some())
                .field("issuer", &jwt.issuer)
                .field("audience", &jwt.audience)
                .field("roles_claim", &jwt.roles_claim)
                .finish(),
        }
    }
}

/// The REST API's own settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub auth: AuthConfig,
    /// `ADMIN_ROLE` (default `admin`): the role that opens the admin endpoints.
    pub admin_role: String,
    /// `TRUSTED_PROXIES`: networks whose `X-Forwarded-For` is believed (client IP in
    /// the audit log). Unset: the peer address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `URL_ALLOWLIST`: hosts and networks user-given URLs may reach although they are
    /// internal (a self-hosted git server).
    pub url_allowlist: crate::net::AllowList,
    /// `ALLOW_HTTP_URLS`: accept plain http repository and callback URLs.
    pub allow_http_urls: bool,
    /// `MAX_REQUEST_BYTES` (default 1 MiB): larger bodies get 413.
    pub max_request_bytes: usize,
    /// `DOWNLOAD_URL_TTL_SECS` (default 300): lifetime of presigned download URLs.
    pub download_url_ttl: Duration,
    /// `CALLBACK_SECRET`: the HMAC-SHA-256 key callbacks are signed with. Unset: jobs
    /// with a `callback_url` are refused.
    pub callback_secret: Option<SecretString>,
    /// `CALLBACK_RETRY_BASE_SECS` (default 5): the first retry delay of a failed
    /// callback; each later one doubles.
    pub callback_retry_base: Duration,
    /// `CALLBACK_MAX_ATTEMPTS` (default 8).
    pub callback_max_attempts: i32,
    /// `JOB_TTL_HOURS` (default 168): a job expires this long after its creation.
    pub job_ttl: Duration,
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let mode = src
            .get("AUTH_MODE")
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "gateway".into());
        let auth = match mode.as_str() {
            "gateway" => AuthConfig::Gateway {
                token: src.get("GATEWAY_TOKEN").map(SecretString::from),
            },
            "jwt" => {
                let rs256_public_key_pem = match (
                    src.get("JWT_RS256_PUBLIC_KEY"),
                    src.get("JWT_RS256_PUBLIC_KEY_FILE"),
                ) {
                    (Some(pem), _) => Some(pem),
                    (None, Some(path)) => Some(
                        std::fs::read_to_string(path.trim())
                            .map_err(|e| ConfigError::malformed("JWT_RS256_PUBLIC_KEY_FILE", e))?,
                    ),
                    (None, None) => None,
                };
                let jwt = JwtConfig {
                    hs256_secret: src.get("JWT_HS256_SECRET").map(SecretString::from),
                    rs256_public_key_pem,
                    issuer: src.get("JWT_ISSUER"),
                    audience: src.get("JWT_AUDIENCE"),
                    roles_claim: src.get("JWT_ROLES_CLAIM").unwrap_or_else(|| "roles".into()),
                };
                if jwt.audience.is_none() {
                    // Without it, a token the identity provider minted for any other
                    // service would open this one.
                    return Err(ConfigError::missing(
                        "JWT_AUDIENCE",
                        "the audience your identity provider puts in tokens for DeployGuard",
                    ));
                }
                if jwt.hs256_secret.is_none() && jwt.rs256_public_key_pem.is_none() {
                    return Err(ConfigError::missing(
                        "JWT_HS256_SECRET",
                        "a shared secret, or JWT_RS256_PUBLIC_KEY with a PEM public key",
                    ));
                }
                if let Some(secret) = &jwt.hs256_secret
                    && secret.expose_secret().len() < 32
                {
                    return Err(ConfigError::malformed(
                        "JWT_HS256_SECRET",
                        "must be at least 32 characters",
                    ));
                }
                AuthConfig::Jwt(jwt)
            }
            other => {
                return Err(ConfigError::malformed(
                    "AUTH_MODE",
                    format!("{other:?} is neither \"gateway\" nor \"jwt\""),
                ));
            }
        };
        let mut trusted_proxies = Vec::new();
        for item in src
            .get("TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let net = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::malformed(
                        "TRUSTED_PROXIES",
                        format!("{item:?} is not an address or network"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let url_allowlist = url_allowlist(src)?;
        let max_request_bytes: usize =
            parse_or(src, "MAX_REQUEST_BYTES", Some(1 << 20), "a number of bytes")?;
        if !(1024..=64 << 20).contains(&max_request_bytes) {
            return Err(ConfigError::malformed(
                "MAX_REQUEST_BYTES",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        let download_secs: u64 = parse_or(
            src,
            "DOWNLOAD_URL_TTL_SECS",
            Some(300),
            "a number of seconds",
        )?;
        if !(1..=7 * 86_400).contains(&download_secs) {
            return Err(ConfigError::malformed(
                "DOWNLOAD_URL_TTL_SECS",
                "must be between 1 second and 7 days (the longest S3 allows)",
            ));
        }
        let ttl_hours: f64 = parse_or(src, "JOB_TTL_HOURS", Some(168.0), "a number of hours")?;
        if !ttl_hours.is_finite() || ttl_hours <= 0.0 || ttl_hours > 24.0 * 366.0 {
            return Err(ConfigError::malformed(
                "JOB_TTL_HOURS",
                "must be more than 0 and at most a year",
            ));
        }
        let callback_secret = src.get("CALLBACK_SECRET").map(SecretString::from);
        if let Some(secret) = &callback_secret
            && secret.expose_secret().len() < 16
        {
            return Err(ConfigError::malformed(
                "CALLBACK_SECRET",
                "must be at least 16 characters",
            ));
        }
        let retry_base: f64 = parse_or(
            src,
            "CALLBACK_RETRY_BASE_SECS",
            Some(5.0),
            "a number of seconds",
        )?;
        if !retry_base.is_finite() || !(0.01..=3600.0).contains(&retry_base) {
            return Err(ConfigError::malformed(
                "CALLBACK_RETRY_BASE_SECS",
                "must be between 0.01 and 3600",
            ));
        }
        let callback_max_attempts: i32 = parse_or(
            src,
            "CALLBACK_MAX_ATTEMPTS",
            Some(8),
            "a number of attempts",
        )?;
        if !(1..=50).contains(&callback_max_attempts) {
            return Err(ConfigError::malformed(
                "CALLBACK_MAX_ATTEMPTS",
                "must be 1 to 50",
            ));
        }
        Ok(Self {
            auth,
            admin_role: src.get("ADMIN_ROLE").unwrap_or_else(|| "admin".into()),
            trusted_proxies,
            url_allowlist,
            allow_http_urls: parse_bool(src, "ALLOW_HTTP_URLS", false)?,
            max_request_bytes,
            download_url_ttl: Duration::from_secs(download_secs),
            callback_secret,
            callback_retry_base: Duration::from_secs_f64(retry_base),
            callback_max_attempts,
            job_ttl: Duration::from_secs_f64(ttl_hours * 3600.0),
        })
    }
}

/// The worker's settings; its command line overrides the first two.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `WORKER_QUEUES`: which work queues to serve, in priority order.
    pub queues: Vec<crate::queue::WorkQueue>,
    /// `WORKER_CONCURRENCY`: tasks run at once (one prefetched message per slot).
    pub concurrency: usize,
    /// `WORKER_METRICS_ADDR`: the listener for `/metrics` and the health probes.
    pub metrics_addr: SocketAddr,
    /// `TASK_SOFT_TIME_LIMIT_SECS`: the task is asked to stop.
    pub soft_time_limit: Duration,
    /// `TASK_TIME_LIMIT_SECS`: the task and its child processes are killed.
    pub hard_time_limit: Duration,
    /// `TASK_LEASE_SECS`: a started task whose worker has not been heard of for this long
    /// is taken over by the worker its message is redelivered to.
    pub lease: Duration,
    /// `WORKER_SHUTDOWN_GRACE_SECS`: how long SIGTERM waits for running tasks.
    pub shutdown_grace: Duration,
    /// `WORKER_DIAGNOSTIC_TASKS`: also register the diagnostic tasks (no-op, sleep,
    /// fail) used by tests and benchmarks.
    pub diagnostic_tasks: bool,
    /// `WORK_DIR`: where tasks clone and rewrite (an `emptyDir` in Kubernetes). Each
    /// worker process works in a directory of its own below it.
    pub work_dir: std::path::PathBuf,
    /// `MAX_REPO_BYTES` (default 5 GiB): a repository whose clone grows past this fails
    /// its job instead of filling the disk.
    pub max_repo_bytes: u64,
    /// `MAX_REPO_OBJECTS` (default 10 million): the same for the object count.
    pub max_repo_objects: u64,
    /// `DELETE_AFTER_PUSH` (default true): once a job is pushed, its stored repository
    /// data (bundles, archive, reports) is deleted.
    pub delete_after_push: bool,
    /// `URL_ALLOWLIST` and `ALLOW_HTTP_URLS`, as the API reads them: the worker checks
    /// every address again before it connects.
    pub url_allowlist: crate::net::AllowList,
    pub allow_http_urls: bool,
    /// `SECRET_HASH_KEY` (at least 32 characters) and `SECRET_HASH_KEY_ID`: the key of
    /// the keyed hash stored with each secret.
    pub hash_key: deployguard_engine::scan::HashKey,
    /// `REPORT_KEYS`: `id:base64-of-32-bytes` entries, comma-separated; the first one
    /// encrypts new scan reports, every one can decrypt (keys rotate).
    pub report_keys: crate::crypto::KeyRing,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let queues = match src.get("WORKER_QUEUES") {
            Some(raw) => crate::queue::WorkQueue::parse_list(&raw)
                .map_err(|why| ConfigError::malformed("WORKER_QUEUES", why))?,
            None => crate::queue::WorkQueue::ALL.to_vec(),
        };
        let secs = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            let value: f64 = parse_or(src, var, Some(default as f64), "a number of seconds")?;
            if !value.is_finite() || value <= 0.0 || value > 86_400.0 * 7.0 {
                return Err(ConfigError::malformed(var, "must be between 0 and a week"));
            }
            Ok(Duration::from_secs_f64(value))
        };
        let concurrency: usize = parse_or(src, "WORKER_CONCURRENCY", Some(1), "a number of slots")?;
        if !(1..=256).contains(&concurrency) {
            return Err(ConfigError::malformed(
                "WORKER_CONCURRENCY",
                "must be 1 to 256",
            ));
        }
        let config = Self {
            queues,
            concurrency,
            metrics_addr: parse_or(
                src,
                "WORKER_METRICS_ADDR",
                "0.0.0.0:9100".parse().ok(),
                "host:port",
            )?,
            soft_time_limit: secs("TASK_SOFT_TIME_LIMIT_SECS", 3300)?,
            hard_time_limit: secs("TASK_TIME_LIMIT_SECS", 3600)?,
            lease: secs("TASK_LEASE_SECS", 60)?,
            shutdown_grace: secs("WORKER_SHUTDOWN_GRACE_SECS", 25)?,
            diagnostic_tasks: parse_bool(src, "WORKER_DIAGNOSTIC_TASKS", false)?,
            work_dir: src
                .get("WORK_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("deployguard-work")),
            max_repo_bytes: parse_or(src, "MAX_REPO_BYTES", Some(5 << 30), "a number of bytes")?,
            max_repo_objects: parse_or(
                src,
                "MAX_REPO_OBJECTS",
                Some(10_000_000),
                "a number of objects",
            )?,
            delete_after_push: parse_bool(src, "DELETE_AFTER_PUSH", true)?,
            url_allowlist: url_allowlist(src)?,
            allow_http_urls: parse_bool(src, "ALLOW_HTTP_URLS", false)?,
            hash_key: hash_key(src)?,
            report_keys: match src.get("REPORT_KEYS") {
                Some(raw) => crate::crypto::KeyRing::parse(&raw)
                    .map_err(|why| ConfigError::malformed("REPORT_KEYS", why))?,
                None => {
                    return Err(ConfigError::missing(
                        "REPORT_KEYS",
                        "k1:$(openssl rand -base64 32)",
                    ));
                }
            },
        };
        if !config.work_dir.is_absolute() {
            return Err(ConfigError::malformed(
                "WORK_DIR",
                "must be an absolute path",
            ));
        }
        if config.max_repo_bytes == 0 || config.max_repo_objects == 0 {
            return Err(ConfigError::malformed(
                "MAX_REPO_BYTES",
                "the repository limits must be above 0",
            ));
        }
        if config.soft_time_limit > config.hard_time_limit {
            return Err(ConfigError::malformed(
                "TASK_SOFT_TIME_LIMIT_SECS",
                "must not exceed TASK_TIME_LIMIT_SECS",
            ));
        }
        Ok(config)
    }
}

/// One periodic task and when beat publishes it.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The task's registered name.
    pub task: &'static str,
    /// The variable that set it.
    pub var: &'static str,
    /// A cron expression with seconds (`sec min hour day month weekday`).
    pub cron: croner::Cron,
}

/// Beat's settings.
#[derive(Debug, Clone)]
pub struct BeatConfig {
    /// `BEAT_CLEANUP_EXPIRED_JOBS_CRON` (default `0 0 * * * *`, hourly),
    /// `BEAT_STORAGE_CLEANUP_CRON` (default `0 30 3 * * *`, daily at 03:30 UTC) and
    /// `BEAT_REQUEUE_STUCK_JOBS_CRON` (default `0 */5 * * * *`, every five minutes).
    pub schedules: Vec<Schedule>,
    /// `BEAT_METRICS_ADDR` (default `0.0.0.0:9101`): `/metrics` and the health probes.
    pub metrics_addr: SocketAddr,
}

impl BeatConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build();
        let mut schedules = Vec::new();
        for (task, var, default) in [
            (
                crate::jobs::CLEANUP_EXPIRED_TASK,
                "BEAT_CLEANUP_EXPIRED_JOBS_CRON",
                "0 0 * * * *",
            ),
            (
                crate::jobs::STORAGE_CLEANUP_TASK,
                "BEAT_STORAGE_CLEANUP_CRON",
                "0 30 3 * * *",
            ),
            (
                crate::jobs::REQUEUE_STUCK_TASK,
                "BEAT_REQUEUE_STUCK_JOBS_CRON",
                "0 */5 * * * *",
            ),
        ] {
            let raw = src.get(var).unwrap_or_else(|| default.to_owned());
            let cron = parser.parse(raw.trim()).map_err(|e| {
                ConfigError::malformed(
                    var,
                    format!("{raw:?} is not a cron expression with seconds: {e}"),
                )
            })?;
            schedules.push(Schedule { task, var, cron });
        }
        Ok(Self {
            schedules,
            metrics_addr: parse_or(
                src,
                "BEAT_METRICS_ADDR",
                Some(SocketAddr::from(([0, 0, 0, 0], 9101))),
                "an address like 0.0.0.0:9101",
            )?,
        })
    }
}

fn url_allowlist(src: &impl Source) -> Result<crate::net::AllowList, ConfigError> {
    crate::net::AllowList::parse(&src.get("URL_ALLOWLIST").unwrap_or_default())
        .map_err(|why| ConfigError::malformed("URL_ALLOWLIST", why))
}

fn hash_key(src: &impl Source) -> Result<deployguard_engine::scan::HashKey, ConfigError> {
    let Some(key) = src.get("SECRET_HASH_KEY") else {
        return Err(ConfigError::missing(
            "SECRET_HASH_KEY",
            "$(openssl rand -base64 32)",
        ));
    };
    if key.len() < 32 {
        return Err(ConfigError::malformed(
            "SECRET_HASH_KEY",
            "must be at least 32 characters",
        ));
    }
    let id = src.get("SECRET_HASH_KEY_ID").unwrap_or_else(|| "k1".into());
    if id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::malformed(
            "SECRET_HASH_KEY_ID",
            "must be up to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(deployguard_engine::scan::HashKey::new(id, key.into_bytes()))
}

/// Logging: `LOG_LEVEL` (a level such as `INFO`, or filter directives such as
/// `info,sqlx=warn`) and `LOG_FORMAT` (`text` or `json`).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let filter = src.get("LOG_LEVEL").unwrap_or_else(|| "info".into());
        let filter = crate::telemetry::validate_filter(&filter)
            .map_err(|why| ConfigError::malformed("LOG_LEVEL", why))?;
        let format = match src
            .get("LOG_FORMAT")
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => LogFormat::Text,
            Some(f) if f == "text" || f == "pretty" => LogFormat::Text,
            Some(f) if f == "json" => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::malformed(
                    "LOG_FORMAT",
                    format!("{other:?} is neither \"text\" nor \"json\""),
                ));
            }
        };
        Ok(Self { filter, format })
    }
}

/// PostgreSQL: `DATABASE_URL` (required) and `DATABASE_MAX_CONNECTIONS`.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }

    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        const VAR: &str = "DATABASE_URL";
        let raw = src.get(VAR).ok_or_else(|| {
            ConfigError::missing(VAR, "postgresql://user:password@host:5432/deployguard")
        })?;
        let url = parse_secret_url(VAR, &raw, &["postgres", "postgresql"])?;
        if url.host_str().is_none_or(str::is_empty) && !url.query_pairs().any(|(k, _)| k == "host")
        {
            return Err(ConfigError::malformed(VAR, "the URL names no host"));
        }
        let max_connections = parse_or(
            src,
            "DATABASE_MAX_CONNECTIONS",
            Some(10u32),
            "a positive number",
        )?;
        if max_connections == 0 {
            return Err(ConfigError::malformed(
                "DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(Self {
            url: SecretString::from(raw),
            max_connections,
        })
    }

    /// The URL with its password masked, for log lines.
    pub fn display_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.display_url())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// RabbitMQ: `AMQP_URL`, or the specification's `CELERY_BROKER_URL`.
#[derive(Clone)]
pub struct BrokerConfig {
    pub url: SecretString,
}

impl BrokerConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let (var, raw) = match (src.get("AMQP_URL"), src.get("CELERY_BROKER_URL")) {
            (Some(v), _) => ("AMQP_URL", v),
            (None, Some(v)) => ("CELERY_BROKER_URL", v),
            (None, None) => {
                return Err(ConfigError::missing(
                    "AMQP_URL",
                    "amqp://user:password@rabbitmq:5672/%2f; CELERY_BROKER_URL is accepted too",
                ));
            }
        };
        crate::queue::parse_amqp_uri(&raw).map_err(|why| ConfigError::malformed(var, why))?;
        Ok(Self {
            url: SecretString::from(raw),
        })
    }

    pub fn display_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &self.display_url())
            .finish()
    }
}

/// S3 or an S3-compatible store such as MinIO.
#[derive(Clone)]
pub struct StorageConfig {
    /// `S3_ENDPOINT_URL`; unset means AWS S3 itself.
    pub endpoint: Option<Url>,
    /// `S3_PUBLIC_ENDPOINT_URL`: the host put into presigned URLs handed to users, when the
    /// store is reachable under another name from outside (MinIO inside a cluster).
    pub public_endpoint: Option<Url>,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: SecretString,
    /// Path-style addressing (`host/bucket/key`); the default whenever an endpoint is set.
    pub force_path_style: bool,
    /// `S3_CREATE_BUCKET`: create the bucket at start if it does not exist.
    pub create_bucket: bool,
}

impl StorageConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let endpoint = optional_http_url(src, "S3_ENDPOINT_URL")?;
        let public_endpoint = optional_http_url(src, "S3_PUBLIC_ENDPOINT_URL")?;
        let bucket = src.get("S3_BUCKET").unwrap_or_else(|| "deployguard".into());
        validate_bucket_name(&bucket).map_err(|why| ConfigError::malformed("S3_BUCKET", why))?;
        let access_key = src
            .get("S3_ACCESS_KEY")
            .ok_or_else(|| ConfigError::missing("S3_ACCESS_KEY", "minioadmin"))?;
        let secret_key = src
            .get("S3_SECRET_KEY")
            .ok_or_else(|| ConfigError::missing("S3_SECRET_KEY", "a secret from your store"))?;
        let force_path_style = parse_bool(src, "S3_FORCE_PATH_STYLE", endpoint.is_some())?;
        Ok(Self {
            endpoint,
            public_endpoint,
            region: src.get("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            bucket,
            access_key,
            secret_key: SecretString::from(secret_key),
            force_path_style,
            create_bucket: parse_bool(src, "S3_CREATE_BUCKET", false)?,
        })
    }
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field(
                "public_endpoint",
                &self.public_endpoint.as_ref().map(Url::as_str),
            )
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .field("force_path_style", &self.force_path_style)
            .field("create_bucket", &self.create_bucket)
            .finish()
    }
}

/// S3 bucket naming rules (the subset every S3-compatible store enforces).
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let edges_ok = name
        .bytes()
        .next()
        .zip(name.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if !(3..=63).contains(&name.len()) || !ok_chars || !edges_ok || name.contains("..") {
        return Err(format!(
            "{name:?} is not a valid bucket name (3-63 lowercase letters, digits, '-' or '.')"
        ));
    }
    Ok(())
}

/// `CORS_ORIGINS`: `*`, or a comma-separated list of origins such as
/// `https://admin.example.com`. Unset means no cross-origin access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

impl CorsOrigins {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let Some(raw) = src.get("CORS_ORIGINS") else {
            return Ok(Self::List(Vec::new()));
        };
        if raw.trim() == "*" {
            return Ok(Self::Any);
        }
        let mut origins = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let url = Url::parse(item).map_err(|_| {
                ConfigError::malformed("CORS_ORIGINS", format!("{item:?} is not an origin URL"))
            })?;
            let is_origin = matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && !item.ends_with('/')
                && url.query().is_none();
            if !is_origin {
                return Err(ConfigError::malformed(
                    "CORS_ORIGINS",
                    format!("{item:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
            origins.push(item.to_owned());
        }
        Ok(Self::List(origins))
    }
}

fn parse_secret_url(var: &'static str, raw: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
    // The value may hold a password: report what is wrong, never the value.
    let url = Url::parse(raw).map_err(|e| ConfigError::malformed(var, e))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::malformed(
            var,
            format!("the scheme must be one of {}", schemes.join(", ")),
        ));
    }
    Ok(url)
}

fn optional_http_url(src: &impl Source, var: &'static str) -> Result<Option<Url>, ConfigError> {
    let Some(raw) = src.get(var) else {
        return Ok(None);
    };
    let url = Url::parse(raw.trim()).map_err(|e| ConfigError::malformed(var, e))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::malformed(
            var,
            "expected an http:// or https:// URL",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::malformed(
            var,
            "credentials do not belong in this URL",
        ));
    }
    Ok(Some(url))
}

fn parse_or<T: FromStr>(
    src: &impl Source,
    var: &'static str,
    default: Option<T>,
    expected: &str,
) -> Result<T, ConfigError> {
    match src.get(var) {
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| ConfigError::malformed(var, format!("{raw:?} is not {expected}"))),
        None => default.ok_or_else(|| ConfigError::missing(var, expected)),
    }
}

fn parse_bool(src: &impl Source, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match src.get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError::malformed(
            var,
            format!("{v:?} is not a boolean (true/false)"),
        )),
    }
}

/// Masks the password of a URL so it can be logged; an unparsable value is hidden whole.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Loads a configuration section or stops the program the way operators expect: one
/// line on stderr naming the variable, exit code 2, no backtrace.
pub fn or_exit<T>(program: &str, loaded: Result<T, ConfigError>) -> T {
    match loaded {
        Ok(value) => value,
        Err(err) => {
            eprintln!("{program}: configuration error: {err}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (
                "DATABASE_URL",
                "postgresql://dg:db-pass-123@db:5432/deployguard",
            ),
            ("AMQP_URL", "amqp://dg:mq-pass-456@rabbitmq:5672/%2f"),
            ("S3_ENDPOINT_URL", "http://minio:9000"),
            ("S3_ACCESS_KEY", "minioadmin"),
            ("S3_SECRET_KEY", "s3-secret-789"),
        ])
    }

    fn load(env: &HashMap<&str, &str>) -> Result<Config, ConfigError> {
        Config::from_source(env)
    }

    #[test]
    fn minimal_environment_gives_documented_defaults() {
        let cfg = load(&base()).unwrap();
        assert_eq!(cfg.storage.bucket, "deployguard");
        assert!(
            cfg.storage.force_path_style,
            "an endpoint implies path style"
        );
        assert_eq!(cfg.api_addr, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(cfg.log.format, LogFormat::Text);
        assert_eq!(cfg.cors_origins, CorsOrigins::List(vec![]));
        assert_eq!(cfg.github_api_url.as_str(), "https://api.github.com/");
        assert!(cfg.run_migrations);
    }

    #[test]
    fn missing_database_url_names_the_variable() {
        let mut env = base();
        env.remove("DATABASE_URL");
        let err = load(&env).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.to_string().starts_with("DATABASE_URL is not set"));
    }

    #[test]
    fn empty_value_counts_as_missing() {
        let mut env = base();
        env.insert("S3_ACCESS_KEY", "  ");
        assert_eq!(load(&env).unwrap_err().var, "S3_ACCESS_KEY");
    }

    #[test]
    fn celery_broker_url_is_accepted_with_kombu_vhost_syntax() {
        let mut env = base();
        env.remove("AMQP_URL");
        env.insert("CELERY_BROKER_URL", "amqp://u:p@rabbitmq:5672//");
        let cfg = load(&env).unwrap();
        let uri = crate::queue::parse_amqp_uri(cfg.broker.url.expose_secret()).unwrap();
        assert_eq!(uri.vhost, "/");
    }

    #[test]
    fn amqp_url_wins_over_celery_broker_url() {
        let mut env = base();
        env.insert("CELERY_BROKER_URL", "amqp://other:5672//");
        let cfg = load(&env).unwrap();
        assert!(cfg.broker.url.expose_secret().contains("rabbitmq"));
    }

    #[test]
    fn malformed_secret_urls_are_reported_without_their_value() {
        for (var, bad) in [
            ("DATABASE_URL", "mysql://root:hunter2-db@db/x"),
            ("DATABASE_URL", "hunter2-db not a url"),
            ("AMQP_URL", "http://u:hunter2-mq@rabbitmq/"),
        ] {
            let mut env = base();
            env.insert(var, bad);
            let err = load(&env).unwrap_err();
            assert_eq!(err.var, var);
            let msg = err.to_string();
            assert!(msg.contains("is malformed"), "{msg}");
            assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
        }
    }

    #[test]
    fn malformed_plain_values_name_the_variable() {
        for (var, bad) in [
            ("LOG_LEVEL", "loud"),
            ("LOG_FORMAT", "xml"),
            ("API_ADDR", "eight-thousand"),
            ("READINESS_TIMEOUT_MS", "-1"),
            ("RUN_MIGRATIONS", "maybe"),
            ("S3_BUCKET", "Bad_Bucket"),
            ("S3_ENDPOINT_URL", "minio:9000"),
            ("AUTH_SERVICE_URL", "ftp://auth"),
            ("CORS_ORIGINS", "https://admin.example.com/path"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
        ] {
            let mut env = base();
            env.insert(var, bad);
            let err = load(&env).unwrap_err();
            assert_eq!(err.var, var, "{bad}");
        }
    }

    #[test]
    fn debug_output_never_contains_secret_values() {
        let cfg = load(&base()).unwrap();
        let shown = format!("{cfg:?}");
        for secret in ["db-pass-123", "mq-pass-456", "s3-secret-789"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("db:5432"), "non-secret parts stay visible");
    }

    #[test]
    fn cors_origins_accepts_star_and_lists() {
        let mut env = base();
        env.insert("CORS_ORIGINS", "*");
        assert_eq!(load(&env).unwrap().cors_origins, CorsOrigins::Any);
        env.insert(
            "CORS_ORIGINS",
            "https://admin.example.com, http://localhost:3000",
        );
        assert_eq!(
            load(&env).unwrap().cors_origins,
            CorsOrigins::List(vec![
                "https://admin.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
    }

    #[test]
    fn log_level_accepts_spec_style_uppercase_and_directives() {
        let mut env = base();
        env.insert("LOG_LEVEL", "INFO");
        assert_eq!(load(&env).unwrap().log.filter, "info");
        env.insert("LOG_LEVEL", "info,sqlx=warn");
        assert_eq!(load(&env).unwrap().log.filter, "info,sqlx=warn");
    }

    #[test]
    fn jwt_mode_needs_an_audience_and_a_key() {
        let mut env = base();
        env.insert("AUTH_MODE", "jwt");
        env.insert("JWT_HS256_SECRET", "a-shared-secret-of-at-least-32-chars!");
        assert_eq!(
            ApiConfig::from_source(&env).unwrap_err().var,
            "JWT_AUDIENCE"
        );
        env.insert("JWT_AUDIENCE", "deployguard");
        assert!(ApiConfig::from_source(&env).is_ok());
        env.insert("JWT_HS256_SECRET", "short");
        assert_eq!(
            ApiConfig::from_source(&env).unwrap_err().var,
            "JWT_HS256_SECRET"
        );
        env.remove("JWT_HS256_SECRET");
        assert_eq!(
            ApiConfig::from_source(&env).unwrap_err().var,
            "JWT_HS256_SECRET"
        );
        env.insert("AUTH_MODE", "magic");
        assert_eq!(ApiConfig::from_source(&env).unwrap_err().var, "AUTH_MODE");
    }

    #[test]
    fn api_settings_are_validated() {
        for (var, bad) in [
            ("TRUSTED_PROXIES", "not-an-ip"),
            ("URL_ALLOWLIST", "bad host!"),
            ("MAX_REQUEST_BYTES", "10"),
            ("DOWNLOAD_URL_TTL_SECS", "0"),
            ("CALLBACK_SECRET", "short"),
            ("CALLBACK_MAX_ATTEMPTS", "0"),
            ("JOB_TTL_HOURS", "-1"),
            ("ALLOW_HTTP_URLS", "sometimes"),
        ] {
            let mut env = base();
            env.insert(var, bad);
            assert_eq!(ApiConfig::from_source(&env).unwrap_err().var, var, "{bad}");
        }
        let api = ApiConfig::from_source(&base()).unwrap();
        assert!(matches!(api.auth, AuthConfig::Gateway { token: None }));
        assert_eq!(api.max_request_bytes, 1 << 20);
    }

    #[test]
    fn beat_schedules_default_to_hourly_and_daily_and_a_bad_one_is_named() {
        let beat = BeatConfig::from_source(&base()).unwrap();
        let patterns: Vec<String> = beat
            .schedules
            .iter()
            .map(|s| s.cron.pattern.to_string())
            .collect();
        assert_eq!(patterns, ["0 0 * * * *", "0 30 3 * * *", "0 */5 * * * *"]);
        let mut vars = base();
        vars.insert("BEAT_STORAGE_CLEANUP_CRON", "every day");
        let err = BeatConfig::from_source(&vars).unwrap_err().to_string();
        assert!(err.contains("BEAT_STORAGE_CLEANUP_CRON"), "{err}");
        // Five fields (no seconds) are refused rather than read as something else.
        let mut vars = base();
        vars.insert("BEAT_CLEANUP_EXPIRED_JOBS_CRON", "0 * * * *");
        assert!(BeatConfig::from_source(&vars).is_err());
    }

    #[test]
    fn redact_url_masks_only_the_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://h/d"), "postgres://h/d");
        assert_eq!(redact_url("not a url secret"), "<unparsable URL>");
    }
}
