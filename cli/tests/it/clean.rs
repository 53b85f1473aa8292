//! `deployguard clean` and `deployguard push` as a person runs them: scan, pick, clean,
//! push to a real git server or a (fake) GitHub, with exit codes and messages.

use std::path::Path;
use std::process::Output;

use crate::{deployguard_blocking, deployguard_with as deployguard, stderr, stdout};

use deployguard_testkit::fixtures::{
    PLANTED_AWS_KEY_ID as AWS, PLANTED_GITHUB_TOKEN as GITHUB, repo_with_secrets,
};
use deployguard_testkit::{FakeGitHub, GitServer, TestRepo, git_in};
use serde_json::Value;

fn git(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git_in(dir, args)).into_owned()
}

/// A mirror clone of `bundle` (in `dir`) at `dir/clone.git`.
fn mirror_of(dir: &Path, bundle: &str) -> std::path::PathBuf {
    let clone = dir.join("clone.git");
    git(
        dir,
        &["clone", "-q", "--mirror", bundle, &clone.to_string_lossy()],
    );
    clone
}

/// `deployguard clean REPO --secrets FILE --all -o cleaned.bundle` in `dir`, which must
/// succeed.
fn clean_all(repo: &Path, secrets: &str, dir: &Path) -> Output {
    let out = deployguard(
        &[
            "clean",
            &repo.to_string_lossy(),
            "--secrets",
            secrets,
            "--all",
            "-o",
            "cleaned.bundle",
        ],
        dir,
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    out
}

/// Scans `repo` and returns (the secrets file, the id of the GitHub token).
fn scan(repo: &TestRepo, dir: &Path) -> (String, String) {
    let secrets = dir.join("secrets.json");
    let report = dir.join("report.json");
    let out = deployguard(
        &[
            "scan",
            &repo.path().to_string_lossy(),
            "--format",
            "json",
            "-o",
            &report.to_string_lossy(),
            "--secrets-out",
            &secrets.to_string_lossy(),
        ],
        dir,
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let id = report["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rule_id"].as_str().unwrap_or("").contains("github"))
        .and_then(|s| s["id"].as_str())
        .unwrap()
        .to_owned();
    (secrets.to_string_lossy().into_owned(), id)
}

#[test]
fn a_secret_that_is_not_utf8_goes_from_scan_to_clean_as_bytes() {
    let password: &[u8] = b"Z\xe4hler-Kennwort-81QpXv";
    let mut repo = TestRepo::new();
    let mut env = b"DB_PASSWORD='".to_vec();
    env.extend_from_slice(password);
    env.extend_from_slice(b"'\n");
    repo.write("deploy/latin1.env", env);
    repo.commit("deployment settings");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    let out = deployguard(
        &[
            "scan",
            &repo.path().to_string_lossy(),
            "--secrets-out",
            &secrets.to_string_lossy(),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let file: Value = serde_json::from_slice(&std::fs::read(&secrets).unwrap()).unwrap();
    assert!(
        file["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["value_base64"].is_string()),
        "{file}"
    );
    clean_all(repo.path(), &secrets.to_string_lossy(), dir.path());
    let clone = mirror_of(dir.path(), "cleaned.bundle");
    let objects = git_in(&clone, &["cat-file", "--batch-all-objects", "--batch"]);
    assert!(!objects.windows(password.len()).any(|w| w == password));
    assert!(objects.windows(13).any(|w| w == b"***REMOVED***"));
}

#[test]
fn scan_select_clean_removes_only_the_chosen_secret() {
    let repo = repo_with_secrets();
    let dir = tempfile::tempdir().unwrap();
    let (secrets, id) = scan(&repo, dir.path());
    let out = deployguard(
        &[
            "clean",
            &repo.path().to_string_lossy(),
            "--secrets",
            &secrets,
            "--select",
            &id[..10],
            "-o",
            "cleaned.bundle",
            "--commit-map",
            "map.txt",
            "--report",
            "clean.json",
            "--archive",
            "cleaned.zip",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = stderr(&out);
    assert!(summary.contains("rewrote 2 of 3 commits"), "{summary}");
    assert!(summary.contains("verified: none of the"), "{summary}");
    assert!(!summary.contains(GITHUB));

    let clone = mirror_of(dir.path(), "cleaned.bundle");
    let log = git(&clone, &["log", "--all", "-p"]);
    assert!(!log.contains(GITHUB));
    assert!(log.contains(AWS), "the unselected secret stays");
    let map = std::fs::read_to_string(dir.path().join("map.txt")).unwrap();
    assert_eq!(map.lines().count(), 3, "{map}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("clean.json")).unwrap()).unwrap();
    assert_eq!(report["commits_rewritten"], 2);
    assert!(dir.path().join("cleaned.zip").exists());
    // The source repository is untouched.
    assert!(git(repo.path(), &["log", "--all", "-p"]).contains(GITHUB));
}

#[test]
fn replace_text_expressions_clean_like_git_filter_repo() {
    let repo = repo_with_secrets();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("expressions.txt"),
        format!("literal:{GITHUB}==>GH_TOKEN_REMOVED\nregex:AKIA[0-9A-Z]{{16}}==>AWS_KEY\n"),
    )
    .unwrap();
    let out = deployguard(
        &[
            "clean",
            &repo.path().to_string_lossy(),
            "--replace-text",
            "expressions.txt",
            "-o",
            "out.bundle",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let clone = dir.path().join("clone.git");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            "out.bundle",
            &clone.to_string_lossy(),
        ],
    );
    assert_eq!(
        git(&clone, &["show", "main:config/app.env"]),
        "AWS_ACCESS_KEY_ID=AWS_KEY\n"
    );
    assert_eq!(
        git(&clone, &["show", "main~1:ci/token.txt"]),
        "GH_TOKEN_REMOVED\n"
    );
}

#[test]
fn bad_input_is_exit_2_with_a_clear_message_and_no_output() {
    let repo = repo_with_secrets();
    let dir = tempfile::tempdir().unwrap();
    let path = repo.path().to_string_lossy().into_owned();
    std::fs::write(
        dir.path().join("broken.json"),
        format!("{{\"version\":1,\"secrets\":[{{\"id\":\"a\",\"value\":{GITHUB}}}]}}"),
    )
    .unwrap();
    for (args, expected) in [
        (
            vec![
                "clean",
                &path,
                "--secrets",
                "missing.json",
                "--all",
                "-o",
                "o.bundle",
            ],
            "missing.json",
        ),
        (
            vec![
                "clean",
                &path,
                "--secrets",
                "broken.json",
                "--all",
                "-o",
                "o.bundle",
            ],
            "not valid",
        ),
        (
            vec![
                "clean",
                "/nonexistent",
                "--replace-text",
                "broken.json",
                "-o",
                "o.bundle",
            ],
            "no such file",
        ),
        (
            vec![
                "clean",
                &path,
                "--replace-text",
                "broken.json",
                "-o",
                "o.bundle",
                "--archive",
                "o.rar",
            ],
            ".zip, .tar.gz",
        ),
    ] {
        let out = deployguard(&args, dir.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains(GITHUB),
            "a value leaked into: {}",
            stderr(&out)
        );
    }
    assert!(!dir.path().join("o.bundle").exists());
}

fn clean_bundle(dir: &Path) -> TestRepo {
    let repo = repo_with_secrets();
    std::fs::write(dir.join("expr.txt"), format!("{GITHUB}\n{AWS}\n")).unwrap();
    let out = deployguard(
        &[
            "clean",
            &repo.path().to_string_lossy(),
            "--replace-text",
            "expr.txt",
            "-o",
            "cleaned.bundle",
        ],
        dir,
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_takes_credentials_from_the_environment_and_reports_each_ref() {
    let server = GitServer::start().await;
    let bare = server.create_bare("target");
    let dir = tempfile::tempdir().unwrap();
    let _repo = clean_bundle(dir.path());
    let url = server.url("target");
    let out = deployguard_blocking(
        &[
            "push",
            "cleaned.bundle",
            "--target-url",
            &url,
            "--allow-http",
            "--format",
            "json",
        ],
        dir.path(),
        &[
            ("DEPLOYGUARD_GIT_USERNAME", server.username()),
            ("DEPLOYGUARD_GIT_TOKEN", server.password()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let refs: Vec<(&str, &str)> = report["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["refname"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        vec![("refs/heads/main", "created"), ("refs/tags/v1", "created")]
    );
    assert!(!git(&bare, &["log", "--all", "-p"]).contains(GITHUB));
    assert!(!stdout(&out).contains(server.password()) && !stderr(&out).contains(server.password()));

    // Without credentials: exit 2, and the message says what went wrong.
    let url = server.url("target");
    let denied = deployguard_blocking(
        &[
            "push",
            "cleaned.bundle",
            "--target-url",
            &url,
            "--allow-http",
        ],
        dir.path(),
        &[],
    )
    .await;
    assert_eq!(denied.status.code(), Some(2));
    assert!(
        stderr(&denied).contains("authentication"),
        "{}",
        stderr(&denied)
    );

    // Plain http needs --allow-http; ext:: never works.
    let refused = deployguard(
        &[
            "push",
            "cleaned.bundle",
            "--target-url",
            &server.url("target"),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("http"), "{}", stderr(&refused));
    let ext = deployguard(
        &["push", "cleaned.bundle", "--target-url", "ext::sh"],
        dir.path(),
        &[],
    );
    assert_eq!(ext.status.code(), Some(2));
}

/// `deployguard push --platform github` against the fake GitHub API, pushing to the
/// test git server with `token` as the password of the server's user.
async fn push_to_github(dir: &Path, server: &GitServer, api: &str, token: &str) -> Output {
    let url = server.url("octo/cleaned");
    deployguard_blocking(
        &[
            "push",
            "cleaned.bundle",
            "--target-url",
            &url,
            "--allow-http",
            "--platform",
            "github",
            "--github-api-url",
            api,
        ],
        dir,
        &[
            ("DEPLOYGUARD_GIT_USERNAME", server.username()),
            ("DEPLOYGUARD_GIT_TOKEN", token),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_target_is_created_private_through_the_api_then_pushed() {
    let server = GitServer::start().await;
    // One token for the API and for git, as on GitHub.
    let github = FakeGitHub::start(server.password(), "octo").await;
    // Where GitHub would keep the new repository's git data.
    let bare = server.create_bare("octo/cleaned");
    let dir = tempfile::tempdir().unwrap();
    let _repo = clean_bundle(dir.path());
    let api = github.url().to_string();

    let out = push_to_github(dir.path(), &server, &api, server.password()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("created private repository octo/cleaned"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        github.requests(),
        vec!["GET /repos/octo/cleaned", "GET /user", "POST /user/repos"]
    );
    assert!(
        github
            .repos()
            .iter()
            .any(|r| r.owner == "octo" && r.name == "cleaned" && r.private)
    );
    let pushed = git(&bare, &["rev-parse", "refs/heads/main"]);
    let heads = git(dir.path(), &["bundle", "list-heads", "cleaned.bundle"]);
    assert!(
        heads.contains(&format!("{} refs/heads/main", pushed.trim())),
        "{heads}"
    );

    // A second push finds the repository and creates nothing.
    let again = push_to_github(dir.path(), &server, &api, server.password()).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        github
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST"))
            .count(),
        1
    );

    // A token the API refuses: exit 2, a GitHub error, nothing pushed.
    let refused = push_to_github(dir.path(), &server, &api, "wrong-token-77").await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("GitHub"), "{}", stderr(&refused));
    assert!(!stderr(&refused).contains("wrong-token-77"));
}

#[test]
fn cleaning_a_secret_found_inside_an_archive_warns_that_the_archive_still_holds_it() {
    let mut repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("config.env");
    std::fs::write(&plain, format!("GITHUB_TOKEN={GITHUB}\n")).unwrap();
    let gzip = std::process::Command::new("gzip")
        .args(["-k", "-n"])
        .arg(&plain)
        .status()
        .expect("gzip");
    assert!(gzip.success());
    repo.write("config.env", std::fs::read(&plain).unwrap());
    repo.write(
        "backup/config.env.gz",
        std::fs::read(dir.path().join("config.env.gz")).unwrap(),
    );
    repo.commit("add config and its backup");

    let (secrets, id) = scan(&repo, dir.path());
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&secrets).unwrap()).unwrap();
    assert_eq!(file["secrets"][0]["archives"][0], "backup/config.env.gz");
    let out = clean_all(repo.path(), &secrets, dir.path());
    let summary = stderr(&out);
    assert!(
        summary.contains(&format!(
            "warning: secret {} was found inside backup/config.env.gz",
            &id[..12]
        )),
        "{summary}"
    );
    assert!(!summary.contains(GITHUB), "{summary}");
}

#[test]
fn delete_path_removes_a_dotenv_from_every_branch_and_prints_what_is_left_to_do() {
    let mut repo = TestRepo::new();
    repo.write("README.md", "app\n")
        .write(".env", "DB_PASSWORD=first\n")
        .commit("add env");
    repo.write(".env", "DB_PASSWORD=second\n")
        .commit("change env");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.rename(".env", "api/.env").commit("move env");
    repo.git(&["checkout", "-q", "main"]);
    repo.remove(".env").commit("delete env");
    let dir = tempfile::tempdir().unwrap();
    let out = deployguard(
        &[
            "clean",
            &repo.path().to_string_lossy(),
            "--delete-path",
            "**/.env",
            "--report",
            "report.json",
            "-o",
            "cleaned.bundle",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    // Three .env entries, and api/ that held only one.
    assert!(
        err.contains(
            "removed 4 tree entries (the files, and directories they left empty) and 2 \
             distinct blobs"
        ),
        "{err}"
    );
    assert!(
        err.contains("what is left to do:") && err.contains("Rotate"),
        "{err}"
    );
    let clone = mirror_of(dir.path(), "cleaned.bundle");
    for commit in git(&clone, &["rev-list", "--all"]).lines() {
        let paths = git(&clone, &["ls-tree", "-r", "--name-only", commit]);
        assert!(
            !paths.lines().any(|p| p.ends_with(".env")),
            "{commit}: {paths}"
        );
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["files"]["blobs_removed"], 2, "{report}");
    assert_eq!(
        report["commit_map"].as_array().unwrap().len(),
        4,
        "{report}"
    );
}

#[test]
fn bad_file_selections_exit_2_and_write_nothing() {
    let mut repo = TestRepo::new();
    repo.write(".env", "A=1\n").commit("env");
    let dir = tempfile::tempdir().unwrap();
    let source = repo.path().to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 5] = [
        (&["--delete-path", ""], "empty path pattern"),
        (&["--strip-blobs-bigger-than", "0"], "size above 0"),
        (
            &["--strip-blobs-bigger-than", "lots"],
            "--strip-blobs-bigger-than",
        ),
        (&["--delete-blob", "abc123"], "not a full object id"),
        (
            &["--delete-path", ".env", "--protect-ref", "no-such-branch"],
            "no such ref",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["clean", source.as_str(), "-o", "cleaned.bundle"];
        args.extend_from_slice(flags);
        let out = deployguard(&args, dir.path(), &[]);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{flags:?}: {}",
            stderr(&out)
        );
        assert!(!dir.path().join("cleaned.bundle").exists(), "{flags:?}");
    }
    // A pattern that matches nothing is a warning; the clean still succeeds.
    let out = deployguard(
        &[
            "clean",
            &source,
            "--delete-path",
            "*.p12",
            "--delete-path",
            ".env",
            "-o",
            "cleaned.bundle",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: *.p12 matched nothing"),
        "{}",
        stderr(&out)
    );
}
