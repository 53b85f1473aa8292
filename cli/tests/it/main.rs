//! The `deployguard` command as people and pipelines run it: flags, files, output
//! formats and exit codes, over real repositories.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod clean;
mod scan;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `deployguard` binary in `cwd` with `env` on top of an environment that has
/// no git configuration, no colours and no credentials of the person running the tests.
pub(crate) fn deployguard_with(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployguard"));
    command
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GH_TOKEN")
        .env_remove("DEPLOYGUARD_GIT_TOKEN")
        .env_remove("DEPLOYGUARD_GIT_USERNAME")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// [`deployguard_with`] from async code, off the runtime's threads (so that servers the
/// test runs on the same runtime keep answering).
pub(crate) async fn deployguard_blocking(
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        deployguard_with(&args, &cwd, &env)
    })
    .await
    .unwrap()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
