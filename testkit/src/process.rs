//! A service binary started by a test the way operators start it: its environment only
//! (no inherited variables but `PATH`), its own scratch directory (`WORK_DIR` there
//! unless the test names one), its output in a log file the test can read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

pub struct Process {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    /// Its log and, unless the test named one, its `WORK_DIR`; removed with it.
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `program` with `args` and exactly `vars` (plus `PATH`); killed on drop.
    pub fn start(program: &str, args: &[&str], vars: &HashMap<String, String>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dg-process-")
            .tempdir()
            .expect("process directory");
        let log = dir.path().join("output.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        // Processes of parallel tests never share scratch space by accident.
        if !vars.contains_key("WORK_DIR") {
            command.env("WORK_DIR", dir.path().join("work"));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Self {
            pid: child.id().expect("a running child has a pid"),
            child,
            log,
            _dir: dir,
        }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends signal `name` (`TERM`, `KILL`, `STOP` …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {}", self.pid);
    }

    /// Waits for the process to exit; `None` if it still runs after `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .map(|status| status.expect("waiting for the process"))
    }

    /// Polls the log until it contains `text`; false after `within`.
    pub async fn wait_for_log(&self, text: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.log().contains(text) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A local address nothing listens on right now, for a process's listener.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local address")
}
