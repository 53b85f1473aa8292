//! The common start of every service binary: telemetry, the async runtime, migrations
//! at start, and one way to report failure. Each binary loads its own settings first
//! (or exits 2 with one line naming the variable).

use std::process::ExitCode;

use crate::db::DatabaseConfig;
use crate::telemetry::LogConfig;

/// The sections every service binary's settings hold.
pub trait ServiceSettings {
    fn log(&self) -> &LogConfig;
    fn database(&self) -> &DatabaseConfig;
}

/// Runs `body` as the program's main and turns its outcome into an exit code: 1 for a
/// runtime failure, 0 after a clean shutdown.
pub fn main<S, F, Fut>(program: &'static str, settings: S, body: F) -> ExitCode
where
    S: ServiceSettings,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init(settings.log());
    run(program, async move {
        crate::db::migrate_at_start(settings.database()).await?;
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
