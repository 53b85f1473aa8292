//! The common start of every service binary: configuration (or exit 2 with one line),
//! telemetry, the async runtime, migrations at start, and one way to report failure.

use std::process::ExitCode;

use crate::config::{self, Config};

/// Runs `body` as the program's main and turns its outcome into an exit code:
/// 2 for bad configuration, 1 for a runtime failure, 0 after a clean shutdown.
pub fn main<F, Fut>(program: &'static str, body: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = config::or_exit(program, Config::from_env());
    crate::telemetry::init(&config.log);
    run(program, async move {
        crate::db::migrate_at_start(&config).await?;
        body(config).await
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
