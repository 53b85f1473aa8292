//! Pushing a cleaned repository to a real git server (smart HTTP behind basic auth):
//! per-ref results, rejections, missing targets and wrong credentials, and no
//! credential left anywhere on disk.

use std::path::{Path, PathBuf};

use deployguard_engine::clean::{self, CleanOptions, CleanRun, Selection};
use deployguard_engine::git::remote::{
    self, Credentials, PushError, PushOptions, PushReport, RefOutcome, RemoteUrl, UrlPolicy,
};
use deployguard_testkit::{GitServer, TestRepo, git_in};

const TOKEN: &str = "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";

fn git(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git_in(dir, args)).into_owned()
}

/// A cleaned repository: the work repository of a clean (branches, tags, a pull ref).
struct Cleaned {
    _source: TestRepo,
    work: tempfile::TempDir,
}

impl Cleaned {
    fn repo(&self) -> PathBuf {
        self.work.path().join("scratch").join("repo.git")
    }
}

fn cleaned() -> Cleaned {
    let mut repo = TestRepo::new();
    repo.write("app.env", format!("TOKEN={TOKEN}\n"));
    repo.commit("add config");
    repo.tag_annotated("v1", "first release");
    repo.checkout("dev");
    repo.write("dev.txt", "dev\n");
    repo.commit("dev work");
    repo.checkout("main");
    let head = repo.head();
    repo.git(&["update-ref", "refs/pull/1/head", &head]);
    let work = tempfile::tempdir().unwrap();
    let scratch = work.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let selection = Selection::from_values([TOKEN], b"***REMOVED***").unwrap();
    clean::clean(
        repo.path(),
        &scratch,
        &selection,
        &CleanOptions::default(),
        &work.path().join("cleaned.bundle"),
        &CleanRun::default(),
    )
    .unwrap();
    Cleaned {
        _source: repo,
        work,
    }
}

fn target(server: &GitServer, name: &str) -> RemoteUrl {
    let policy = UrlPolicy {
        allow_http: true,
        ..UrlPolicy::service()
    };
    RemoteUrl::parse(&server.url(name), policy).unwrap()
}

async fn push(
    repo: PathBuf,
    url: RemoteUrl,
    credentials: Option<Credentials>,
    force: bool,
) -> Result<PushReport, PushError> {
    tokio::task::spawn_blocking(move || {
        remote::push(
            &repo,
            &url,
            &PushOptions {
                force,
                credentials: credentials.as_ref(),
                ..PushOptions::default()
            },
        )
    })
    .await
    .unwrap()
}

/// Pushes `cleaned` to repository `name` with the server's own credentials.
async fn push_as_owner(
    server: &GitServer,
    cleaned: &Cleaned,
    name: &str,
    force: bool,
) -> Result<PushReport, PushError> {
    push(
        cleaned.repo(),
        target(server, name),
        Some(credentials(server)),
        force,
    )
    .await
}

fn credentials(server: &GitServer) -> Credentials {
    Credentials::new(server.username(), server.password())
}

/// Every file under `dir`, read whole.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_sends_every_branch_and_tag_and_the_clone_matches_the_cleaned_history() {
    let server = GitServer::start().await;
    let bare = server.create_bare("cleaned");
    let cleaned = cleaned();
    let report = push_as_owner(&server, &cleaned, "cleaned", false)
        .await
        .unwrap();

    let mut outcomes: Vec<(String, RefOutcome)> = report
        .refs
        .iter()
        .map(|r| (r.refname.clone(), r.outcome))
        .collect();
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        outcomes,
        vec![
            ("refs/heads/dev".to_owned(), RefOutcome::Created),
            ("refs/heads/main".to_owned(), RefOutcome::Created),
            ("refs/tags/v1".to_owned(), RefOutcome::Created),
        ]
    );
    assert_eq!(report.not_pushed, vec!["refs/pull/1/head".to_owned()]);

    // Clone back over HTTP: the same branches and tags at the same ids.
    let back = tempfile::tempdir().unwrap();
    let header = format!("http.extraHeader=Authorization: {}", server.authorization());
    git(
        back.path(),
        &[
            "-c",
            &header,
            "clone",
            "-q",
            "--mirror",
            &server.url("cleaned"),
            "back.git",
        ],
    );
    let ids = |dir: &Path| {
        git(
            dir,
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/heads",
                "refs/tags",
            ],
        )
    };
    assert_eq!(ids(&back.path().join("back.git")), ids(&cleaned.repo()));
    assert_eq!(ids(&bare), ids(&cleaned.repo()));

    // The password is nowhere on disk: not in the pushed repository's config, not in
    // any file the push left in the work directory.
    assert_eq!(
        files_containing(cleaned.work.path(), server.password()),
        Vec::<PathBuf>::new()
    );

    // Pushing again changes nothing.
    let again = push_as_owner(&server, &cleaned, "cleaned", false)
        .await
        .unwrap();
    assert!(
        again.refs.iter().all(|r| r.outcome == RefOutcome::UpToDate),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_target_rejects_without_force_naming_each_ref_and_accepts_with_it() {
    let server = GitServer::start().await;
    let bare = server.create_bare("diverged");
    // The target already has its own main.
    let mut other = TestRepo::new();
    other.write("other.txt", "other\n");
    other.commit("unrelated history");
    other.git(&["push", "-q", &bare.to_string_lossy(), "main"]);

    let cleaned = cleaned();
    let err = push_as_owner(&server, &cleaned, "diverged", false)
        .await
        .unwrap_err();
    let PushError::Rejected {
        count,
        summary,
        report,
    } = &err
    else {
        panic!("expected a rejection, got {err}");
    };
    assert_eq!(*count, 1);
    assert!(summary.contains("refs/heads/main"), "{summary}");
    let main = report
        .refs
        .iter()
        .find(|r| r.refname == "refs/heads/main")
        .unwrap();
    assert_eq!(main.outcome, RefOutcome::Rejected);
    assert!(
        main.reason
            .as_deref()
            .is_some_and(|r| r.contains("fetch first") || r.contains("non-fast-forward")),
        "{main:?}"
    );
    assert!(err.to_string().contains("refs/heads/main"));

    let forced = push_as_owner(&server, &cleaned, "diverged", true)
        .await
        .unwrap();
    let main = forced
        .refs
        .iter()
        .find(|r| r.refname == "refs/heads/main")
        .unwrap();
    assert_eq!(main.outcome, RefOutcome::Forced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_declines_is_reported_with_the_ref_and_the_reason() {
    let server = GitServer::start().await;
    let bare = server.create_bare("guarded");
    let hook = bare.join("hooks").join("pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'policy: no pushes today' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let cleaned = cleaned();
    let err = push_as_owner(&server, &cleaned, "guarded", false)
        .await
        .unwrap_err();
    let PushError::Rejected { report, .. } = &err else {
        panic!("expected a rejection, got {err}");
    };
    assert_eq!(report.rejected().count(), 3, "{report:?}");
    assert!(
        report
            .rejected()
            .all(|r| r.reason.as_deref() == Some("pre-receive hook declined")),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_and_wrong_credentials_are_distinct_clear_errors() {
    let server = GitServer::start().await;
    server.create_bare("exists");
    let cleaned = cleaned();

    let missing = push_as_owner(&server, &cleaned, "missing", false)
        .await
        .unwrap_err();
    assert!(matches!(missing, PushError::NotFound { .. }), "{missing}");
    assert!(
        missing.to_string().contains(&server.url("missing")),
        "{missing}"
    );

    let wrong = Credentials::new(server.username(), "wrong-password-4f1c");
    let denied = push(
        cleaned.repo(),
        target(&server, "exists"),
        Some(wrong),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(denied, PushError::Authentication { .. }),
        "{denied}"
    );
    assert!(!denied.to_string().contains("wrong-password-4f1c"));

    let anonymous = push(cleaned.repo(), target(&server, "exists"), None, false)
        .await
        .unwrap_err();
    assert!(
        matches!(anonymous, PushError::Authentication { .. }),
        "{anonymous}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_written_into_the_url_are_used_but_never_stored() {
    let server = GitServer::start().await;
    server.create_bare("inline");
    let cleaned = cleaned();
    let with_userinfo = server.url("inline").replacen(
        "http://",
        &format!("http://{}:{}@", server.username(), server.password()),
        1,
    );
    let policy = UrlPolicy {
        allow_http: true,
        ..UrlPolicy::service()
    };
    let url = RemoteUrl::parse(&with_userinfo, policy).unwrap();
    assert!(!url.as_str().contains(server.password()));
    let report = push(cleaned.repo(), url, None, false).await.unwrap();
    assert_eq!(report.refs.len(), 3);
    assert!(!report.url.contains(server.password()));
    assert_eq!(
        files_containing(cleaned.work.path(), server.password()),
        Vec::<PathBuf>::new()
    );
}
