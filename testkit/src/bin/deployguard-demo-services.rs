//! The two outside services `scripts/up.sh` needs for its demo job: a git smart-HTTP
//! server with basic auth (holding the demo's source and target repositories) and a
//! stand-in credential service that hands the demo user that server's credentials.
//! Writes what the script needs to know to the file given as the first argument (mode
//! 0600, it holds the server's password), then serves until killed. `DEMO_GIT_ROOT` is
//! the directory the server serves: a repository created there with `http.receivepack`
//! set takes pushes (bench/service.sh makes empty push targets so).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use deployguard_testkit::{FakeCredentialService, GitServer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: deployguard-demo-services OUT_FILE");
        return std::process::ExitCode::from(2);
    };
    let git = GitServer::start().await;
    let credentials = FakeCredentialService::start().await;
    credentials.add("demo-git", "demo", git.username(), git.password());
    git.create_bare("demo");
    git.create_bare("demo-clean");
    let facts = format!(
        "DEMO_GIT_BASE={}\nDEMO_GIT_ROOT={}\nDEMO_GIT_USER={}\nDEMO_GIT_PASSWORD={}\n\
         DEMO_AUTH_SERVICE_URL={}\n",
        git.url("").trim_end_matches(".git").trim_end_matches('/'),
        git.path("demo")
            .parent()
            .unwrap_or(std::path::Path::new(""))
            .display(),
        git.username(),
        git.password(),
        credentials.url().as_str().trim_end_matches('/'),
    );
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&out)
        .and_then(|mut f| f.write_all(facts.as_bytes()));
    if let Err(e) = written {
        eprintln!("{out}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
