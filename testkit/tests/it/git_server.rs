use std::path::Path;
use std::process::{Command, Output};

use deployguard_testkit::{GitServer, run_git};

/// git with an isolated configuration and, optionally, an Authorization header.
fn git(dir: &Path, auth: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false");
    if let Some(auth) = auth {
        cmd.args(["-c", &format!("http.extraHeader=Authorization: {auth}")]);
    }
    cmd.args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// git runs blocking on one worker thread while the server answers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_clone_work_with_credentials_and_fail_without() {
    let server = GitServer::start().await;
    server.create_bare("demo");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    run_git(&["init", "--quiet", "--initial-branch=main"], None, &src);
    std::fs::write(src.join("config.env"), "API_KEY=example\n").unwrap();
    ok(git(&src, None, &["add", "."]));
    ok(git(
        &src,
        None,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "first",
        ],
    ));
    let auth = server.authorization();
    let url = server.url("demo");

    let pushed = git(&src, Some(&auth), &["push", "--quiet", &url, "main"]);
    ok(pushed);

    let denied = git(work.path(), None, &["clone", "--quiet", &url, "denied"]);
    assert!(
        !denied.status.success(),
        "clone without credentials succeeded"
    );
    let wrong = "Basic d3Jvbmc6d3Jvbmc="; // wrong:wrong
    let denied = git(
        work.path(),
        Some(wrong),
        &["clone", "--quiet", &url, "wrong"],
    );
    assert!(
        !denied.status.success(),
        "clone with wrong credentials succeeded"
    );

    ok(git(
        work.path(),
        Some(&auth),
        &["clone", "--quiet", "--mirror", &url, "copy.git"],
    ));
    let log = ok(git(
        &work.path().join("copy.git"),
        None,
        &["log", "--format=%s", "main"],
    ));
    assert_eq!(log.trim(), "first");
    assert!(!url.contains(server.password()), "credentials in the URL");
}
