//! The worker's settings: the sections it shares with the other binaries, and its own
//! (queues, concurrency, time limits, scratch space, repository limits, keys).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use deployguard::crypto::KeyRing;
use deployguard::env::{self, ConfigError, Load, Source};
use deployguard::net::OutboundConfig;
use deployguard::queue::WorkQueue;
use deployguard::service::Common;
use deployguard::storage::StorageConfig;
use deployguard_engine::scan::HashKey;
use url::Url;

/// Everything `deployguard-worker` reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    pub storage: StorageConfig,
    pub worker: WorkerConfig,
}

impl Load for Settings {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            common: Common::from_source(src)?,
            storage: StorageConfig::from_source(src)?,
            worker: WorkerConfig::from_source(src)?,
        })
    }
}

impl AsRef<Common> for Settings {
    fn as_ref(&self) -> &Common {
        &self.common
    }
}

/// The worker's own settings; its command line overrides the first two.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `WORKER_QUEUES`: which work queues to serve, in priority order.
    pub queues: Vec<WorkQueue>,
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
    pub work_dir: PathBuf,
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
    pub outbound: OutboundConfig,
    /// `AUTH_SERVICE_URL`: the external credential service; tasks that resolve
    /// credentials fail with a clear error when it is not configured.
    pub auth_service_url: Option<Url>,
    /// `GITHUB_API_URL` (default `https://api.github.com`): where GitHub push targets
    /// are created (GitHub Enterprise: `https://HOST/api/v3`).
    pub github_api_url: Url,
    /// `SECRET_HASH_KEY` (at least 32 characters) and `SECRET_HASH_KEY_ID`: the key of
    /// the keyed hash stored with each secret.
    pub hash_key: HashKey,
    /// `REPORT_KEYS`: `id:base64-of-32-bytes` entries, comma-separated; the first one
    /// encrypts new scan reports, every one can decrypt (keys rotate).
    pub report_keys: KeyRing,
}

impl WorkerConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let queues = match src.get("WORKER_QUEUES") {
            Some(raw) => WorkQueue::parse_list(&raw)
                .map_err(|why| ConfigError::malformed("WORKER_QUEUES", why))?,
            None => WorkQueue::ALL.to_vec(),
        };
        let week = Duration::from_secs(7 * 86_400);
        let concurrency: usize =
            env::parse_or(src, "WORKER_CONCURRENCY", Some(1), "a number of slots")?;
        if !(1..=256).contains(&concurrency) {
            return Err(ConfigError::malformed(
                "WORKER_CONCURRENCY",
                "must be 1 to 256",
            ));
        }
        let config = Self {
            queues,
            concurrency,
            metrics_addr: env::parse_or(
                src,
                "WORKER_METRICS_ADDR",
                "0.0.0.0:9100".parse().ok(),
                "host:port",
            )?,
            soft_time_limit: env::seconds(src, "TASK_SOFT_TIME_LIMIT_SECS", 3300.0, week)?,
            hard_time_limit: env::seconds(src, "TASK_TIME_LIMIT_SECS", 3600.0, week)?,
            lease: env::seconds(src, "TASK_LEASE_SECS", 60.0, week)?,
            shutdown_grace: env::seconds(src, "WORKER_SHUTDOWN_GRACE_SECS", 25.0, week)?,
            diagnostic_tasks: env::parse_bool(src, "WORKER_DIAGNOSTIC_TASKS", false)?,
            work_dir: src
                .get("WORK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("deployguard-work")),
            max_repo_bytes: env::parse_or(
                src,
                "MAX_REPO_BYTES",
                Some(5 << 30),
                "a number of bytes",
            )?,
            max_repo_objects: env::parse_or(
                src,
                "MAX_REPO_OBJECTS",
                Some(10_000_000),
                "a number of objects",
            )?,
            delete_after_push: env::parse_bool(src, "DELETE_AFTER_PUSH", true)?,
            outbound: OutboundConfig::from_source(src)?,
            auth_service_url: env::optional_http_url(src, "AUTH_SERVICE_URL")?,
            github_api_url: env::optional_http_url(src, "GITHUB_API_URL")?.unwrap_or_else(|| {
                Url::parse("https://api.github.com").expect("a constant URL parses")
            }),
            hash_key: hash_key(src)?,
            report_keys: match src.get("REPORT_KEYS") {
                Some(raw) => KeyRing::parse(&raw)
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

fn hash_key(src: &impl Source) -> Result<HashKey, ConfigError> {
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
    Ok(HashKey::new(id, key.into_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("DATABASE_URL", "postgresql://u:p@db:5432/deployguard"),
            ("AMQP_URL", "amqp://u:p@rabbitmq:5672/%2f"),
            ("S3_ACCESS_KEY", "access"),
            ("S3_SECRET_KEY", "secret"),
            ("SECRET_HASH_KEY", "hash-key-0123456789abcdef0123456789"),
            (
                "REPORT_KEYS",
                "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
        ])
    }

    #[test]
    fn defaults_serve_every_queue_one_task_at_a_time() {
        let settings = Settings::from_source(&base()).unwrap();
        let worker = settings.worker;
        assert_eq!(worker.queues, WorkQueue::ALL.to_vec());
        assert_eq!(worker.concurrency, 1);
        assert_eq!(worker.github_api_url.as_str(), "https://api.github.com/");
        assert!(worker.auth_service_url.is_none());
        assert!(worker.work_dir.is_absolute());
        assert!(!format!("{:?}", worker.hash_key).contains("hash-key-0123"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, bad) in [
            ("WORKER_QUEUES", "scan,nope"),
            ("WORKER_CONCURRENCY", "0"),
            ("TASK_LEASE_SECS", "-3"),
            ("TASK_SOFT_TIME_LIMIT_SECS", "7200"),
            ("WORK_DIR", "relative/dir"),
            ("MAX_REPO_BYTES", "0"),
            ("SECRET_HASH_KEY", "short"),
            ("SECRET_HASH_KEY_ID", "bad id!"),
            ("REPORT_KEYS", "k1:not-base64"),
            ("AUTH_SERVICE_URL", "ftp://auth"),
            ("GITHUB_API_URL", "not a url"),
        ] {
            let mut env = base();
            env.insert(var, bad);
            assert_eq!(
                WorkerConfig::from_source(&env).unwrap_err().var,
                var,
                "{bad}"
            );
        }
        let mut env = base();
        env.remove("REPORT_KEYS");
        assert_eq!(
            WorkerConfig::from_source(&env).unwrap_err().var,
            "REPORT_KEYS"
        );
    }
}
