//! The common start of every service binary: telemetry, the async runtime, migrations
//! at start, and one way to report failure. Each binary loads its own settings first
//! (or exits 2 with one line naming the variable).

use std::process::ExitCode;

use crate::db::DatabaseConfig;
use crate::env::{ConfigError, Source};
use crate::queue::BrokerConfig;
use crate::telemetry::LogConfig;

/// The settings every service binary reads: logging, the database, the broker. Each
/// binary's own settings hold these beside their own sections.
#[derive(Debug, Clone)]
pub struct Common {
    pub log: LogConfig,
    pub database: DatabaseConfig,
    pub broker: BrokerConfig,
}

impl Common {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            log: LogConfig::from_source(src)?,
            database: DatabaseConfig::from_source(src)?,
            broker: BrokerConfig::from_source(src)?,
        })
    }
}

/// Runs `body` as the program's main and turns its outcome into an exit code: 1 for a
/// runtime failure, 0 after a clean shutdown.
pub fn main<S, F, Fut>(program: &'static str, settings: S, body: F) -> ExitCode
where
    S: AsRef<Common>,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init(&settings.as_ref().log);
    run(program, async move {
        crate::db::migrate_at_start(&settings.as_ref().database).await?;
        body(settings).await
    })
}

/// Runs a future on a new multi-threaded runtime and reports its error the same way
/// for every binary: one `error` event and one line on stderr.
pub fn run(program: &'static str, body: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{program}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{program} stopped");
            eprintln!("{program}: {err:#}");
            ExitCode::FAILURE
        }
    }
}
