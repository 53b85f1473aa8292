//! `deployguard scan` and `deployguard rules`.

use std::path::Path;
use std::process::{Command, Output};

use crate::{deployguard_with, stderr, stdout};

use deployguard_testkit::fixtures::{
    PLANTED_AWS_KEY_ID as AWS, PLANTED_GITHUB_TOKEN as GITHUB, repo_with_secrets,
};
use deployguard_testkit::{GitServer, TestRepo};
use serde_json::Value;

const STRIPE: &str = "sk_live_YqDRV8SKN8qU577SGwdUoxkr";

fn deployguard(args: &[&str], cwd: &Path) -> Output {
    deployguard_with(args, cwd, &[])
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

#[test]
fn exit_status_is_0_when_clean_1_when_secrets_are_found_and_2_on_error() {
    let mut clean = TestRepo::new();
    clean.write("README.md", "nothing to see\n");
    clean.commit("docs");
    let ok = deployguard(&["scan"], clean.path());
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("no secrets found"));

    let repo = repo_with_secrets();
    let found = deployguard(&["scan", "."], repo.path());
    assert_eq!(found.status.code(), Some(1), "{}", stderr(&found));
    let text = stdout(&found);
    assert!(
        text.contains("2 secrets") && text.contains("ci/token.txt:1:1"),
        "{text}"
    );
    assert!(
        !text.contains(GITHUB) && !text.contains(AWS),
        "full values printed without --show-secrets:\n{text}"
    );

    let missing = deployguard(&["scan", "does/not/exist"], repo.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("does/not/exist"),
        "{}",
        stderr(&missing)
    );

    let bad_range = deployguard(&["scan", "--range", "main..nowhere"], repo.path());
    assert_eq!(bad_range.status.code(), Some(2));
    assert!(
        stderr(&bad_range).contains("nowhere"),
        "{}",
        stderr(&bad_range)
    );

    let conflicting = deployguard(&["scan", "--staged", "--since", "main"], repo.path());
    assert_eq!(conflicting.status.code(), Some(2));
}

#[test]
fn json_report_has_the_documented_shape_and_full_values_only_on_request() {
    let repo = repo_with_secrets();
    let output = deployguard(&["scan", "--format", "json"], repo.path());
    assert_eq!(output.status.code(), Some(1));
    let raw = stdout(&output);
    assert!(!raw.contains(GITHUB) && !raw.contains(AWS));
    let report = json(&output);
    assert_eq!(report["version"], 2);
    assert_eq!(report["source"]["kind"], "git");
    for stat in [
        "commits",
        "refs",
        "blobs_scanned",
        "bytes_scanned",
        "blobs_skipped",
        "duration_ms",
    ] {
        assert!(
            report["stats"][stat].is_u64(),
            "stats.{stat} missing: {report}"
        );
    }
    assert_eq!(report["stats"]["commits"], 3);
    let secrets = report["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    let github = secrets
        .iter()
        .find(|s| s["rule_id"] == "github-personal-access-token")
        .unwrap();
    assert_eq!(github["preview"], "ghp…olZ");
    assert_eq!(github["id"].as_str().unwrap().len(), 32);
    assert_eq!(github["hash"].as_str().unwrap().len(), 64);
    assert_eq!(github["confidence"], "high");
    let occurrence = &github["occurrences"][0];
    assert_eq!(occurrence["path"], "ci/token.txt");
    assert_eq!(
        (occurrence["line"].as_u64(), occurrence["column"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(occurrence["commit"].as_str().unwrap().len(), 40);

    let shown = deployguard(&["scan", "--format", "json", "--show-secrets"], repo.path());
    assert!(stdout(&shown).contains(GITHUB));
}

#[test]
fn secrets_file_is_private_and_holds_the_full_values_for_the_clean_step() {
    use std::os::unix::fs::PermissionsExt;
    let repo = repo_with_secrets();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("secrets.json");
    std::fs::write(&file, "old contents").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = deployguard(
        &["scan", "--secrets-out", file.to_str().unwrap()],
        repo.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secrets: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut values: Vec<&str> = secrets["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, [AWS, GITHUB]);
}

/// What the SARIF 2.1.0 schema finds wrong with `sarif`.
fn sarif_errors(sarif: &Value) -> Vec<String> {
    // The published schema's `run.language` pattern has a stray `]` that strict
    // validators refuse to compile; use the pattern it clearly means.
    let schema = include_str!("../data/sarif-schema-2.1.0.json").replace(
        r"^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$",
        r"^[a-zA-Z]{2}(-[a-zA-Z]{2})?$",
    );
    let schema: Value = serde_json::from_str(&schema).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(sarif)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let mut repo = repo_with_secrets();
    repo.commit(&format!("message that leaks {STRIPE}"));
    let output = deployguard(&["scan", "--format", "sarif"], repo.path());
    assert_eq!(output.status.code(), Some(1));
    let sarif = json(&output);
    let errors = sarif_errors(&sarif);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(!stdout(&output).contains(GITHUB));
    let rule_ids: Vec<&str> = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rule_ids[index], result["ruleId"].as_str().unwrap());
    }
}

#[test]
fn baseline_reports_only_secrets_that_are_new() {
    let mut repo = repo_with_secrets();
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.json");
    let first = deployguard(
        &["scan", "--format", "json", "-o", baseline.to_str().unwrap()],
        repo.path(),
    );
    assert_eq!(first.status.code(), Some(1));

    let same = deployguard(
        &["scan", "--baseline", baseline.to_str().unwrap()],
        repo.path(),
    );
    assert_eq!(same.status.code(), Some(0), "{}", stdout(&same));

    repo.write("billing.env", format!("STRIPE={STRIPE}\n"));
    repo.commit("billing");
    let newer = deployguard(
        &[
            "scan",
            "--format",
            "json",
            "--baseline",
            baseline.to_str().unwrap(),
        ],
        repo.path(),
    );
    assert_eq!(newer.status.code(), Some(1));
    let report = json(&newer);
    assert_eq!(report["secrets"].as_array().unwrap().len(), 1);
    assert_eq!(report["secrets"][0]["rule_id"], "stripe-live-secret-key");
    assert_eq!(report["stats"]["secrets_suppressed"], 2);

    std::fs::write(dir.path().join("garbage.json"), "[1, 2").unwrap();
    let garbage = deployguard(
        &[
            "scan",
            "--baseline",
            dir.path().join("garbage.json").to_str().unwrap(),
        ],
        repo.path(),
    );
    assert_eq!(garbage.status.code(), Some(2));
    assert!(
        stderr(&garbage).contains("garbage.json"),
        "{}",
        stderr(&garbage)
    );
}

#[test]
fn ignore_file_and_inline_allow_suppress_findings() {
    let mut repo = TestRepo::new();
    repo.write(
        "test/fixture.py",
        format!("TOKEN = \"{GITHUB}\"  # deployguard:allow test fixture\n"),
    );
    repo.write("config.env", format!("AWS={AWS}\n"));
    repo.commit("fixtures");
    let report = json(&deployguard(&["scan", "--format", "json"], repo.path()));
    let secrets = report["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1, "{report}");
    let id = secrets[0]["id"].as_str().unwrap().to_owned();

    repo.write(
        ".deployguardignore",
        format!("# reviewed: rotated key\n{id}\n"),
    );
    repo.commit("ignore the rotated key");
    let output = deployguard(&["scan"], repo.path());
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("1 suppressed"),
        "{}",
        stdout(&output)
    );

    std::fs::write(
        repo.path().join(".deployguardignore"),
        "not-a-fingerprint\n",
    )
    .unwrap();
    let bad = deployguard(&["scan"], repo.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains(".deployguardignore:1"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn settings_file_adds_and_disables_rules_and_allowlists_paths_and_values() {
    let mut repo = TestRepo::new();
    repo.write("internal.cfg", "acme_key = ACME-7f3k9q2m5x8v1b4n\n");
    repo.write("vendor/lib/keys.js", format!("const k = '{GITHUB}';\n"));
    repo.write("aws.env", format!("AWS={AWS}\n"));
    repo.write("stripe.env", format!("STRIPE={STRIPE}\n"));
    repo.write(
        ".deployguard.toml",
        format!(
            r#"
[scan]
disable_rules = ["aws-access-key-id"]

[allowlist]
paths = ['^vendor/']
values = ["{STRIPE}"]

[[rules]]
id = "acme-internal-key"
name = "ACME internal key"
keywords = ["acme-"]
pattern = '''\b(?P<secret>ACME-[a-z0-9]{{16}})\b'''
"#
        ),
    );
    repo.commit("settings");
    let report = json(&deployguard(&["scan", "--format", "json"], repo.path()));
    let rules: Vec<&str> = report["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["acme-internal-key"], "{report}");
    let on_disk = json(&deployguard(
        &["scan", "--no-git", "--format", "json"],
        repo.path(),
    ));
    let rules: Vec<&str> = on_disk["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["acme-internal-key"], "{on_disk}");

    // From a bare clone (no work tree) the settings come from HEAD.
    let bare = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["clone", "-q", "--mirror"])
        .arg(repo.path())
        .arg(bare.path().join("r.git"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .unwrap();
    assert!(status.success());
    let from_bare = json(&deployguard(
        &["scan", "--format", "json", "r.git"],
        bare.path(),
    ));
    assert_eq!(
        from_bare["secrets"].as_array().unwrap().len(),
        1,
        "{from_bare}"
    );

    std::fs::write(
        repo.path().join(".deployguard.toml"),
        "[scan]\nmax_file_size = \"big\"\n",
    )
    .unwrap();
    let bad = deployguard(&["scan"], repo.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains(".deployguard.toml"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn staged_flag_scans_only_the_index_for_pre_commit_hooks() {
    let mut repo = repo_with_secrets();
    let clean = deployguard(&["scan", "--staged"], repo.path());
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    repo.write("new.env", format!("STRIPE={STRIPE}\n"));
    let dirty = deployguard(&["scan", "--staged", "--format", "json"], repo.path());
    assert_eq!(dirty.status.code(), Some(1));
    assert_eq!(json(&dirty)["source"]["kind"], "staged");
}

#[test]
fn no_git_scans_the_files_on_disk() {
    let mut repo = repo_with_secrets();
    repo.commit("keep going");
    let report = json(&deployguard(
        &["scan", "--no-git", "--format", "json"],
        repo.path(),
    ));
    assert_eq!(report["source"]["kind"], "directory");
    let secrets = report["secrets"].as_array().unwrap();
    assert_eq!(
        secrets.len(),
        1,
        "the deleted token is only in history: {report}"
    );
    assert_eq!(secrets[0]["occurrences"][0]["path"], "config/app.env");
}

#[tokio::test(flavor = "multi_thread")]
async fn scanning_a_url_clones_every_ref_and_never_shows_the_credentials() {
    let server = GitServer::start().await;
    let bare = server.create_bare("leaky");
    let mut repo = repo_with_secrets();
    repo.checkout("side");
    repo.write("side.env", format!("STRIPE={STRIPE}\n"));
    repo.commit("side branch");
    repo.git(&["push", "-q", "--all", bare.to_str().unwrap()]);
    let url = server.url("leaky").replace(
        "http://",
        &format!("http://{}:{}@", server.username(), server.password()),
    );

    let dir = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        let cwd = dir.path().to_owned();
        move || deployguard(&["scan", "--format", "json", &url], &cwd)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(!stdout(&output).contains(server.password()));
    let report = json(&output);
    assert_eq!(report["secrets"].as_array().unwrap().len(), 3, "{report}");
    assert!(
        report["source"]["location"]
            .as_str()
            .unwrap()
            .contains("***@")
    );

    let wrong = url.replace(server.password(), "wrong-password-123");
    let denied = tokio::task::spawn_blocking({
        let cwd = dir.path().to_owned();
        move || deployguard(&["scan", &wrong], &cwd)
    })
    .await
    .unwrap();
    assert_eq!(denied.status.code(), Some(2));
    assert!(
        !stderr(&denied).contains("wrong-password-123"),
        "{}",
        stderr(&denied)
    );
}

#[test]
fn rules_test_checks_a_user_rule_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        r#"category = "custom"
[[rules]]
id = "acme-key"
name = "ACME key"
keywords = ["acme-"]
pattern = '''\b(?P<secret>ACME-[a-z0-9]{16})\b'''
examples = ["k = ACME-7f3k9q2m5x8v1b4n", "ACME-q8w3e5r7t9y2u4i6"]
negatives = ["ACME-short", "ACME-7f3k9q2m5x8v1b4nzz"]
"#,
    )
    .unwrap();
    let output = deployguard(&["rules", "test", good.to_str().unwrap()], dir.path());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("ACME-short", "ACME-9k2m4n6b8v1c3x5z"),
    )
    .unwrap();
    let output = deployguard(&["rules", "test", bad.to_str().unwrap()], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("acme-key: negative reported"),
        "{}",
        stderr(&output)
    );

    let listed = deployguard(&["rules", "list"], dir.path());
    assert!(stdout(&listed).lines().count() > 150);
}

#[test]
fn staged_scan_in_a_hook_reads_the_index_git_names() {
    // `git commit -a` runs hooks with GIT_INDEX_FILE pointing at a temporary index.
    let mut repo = repo_with_secrets();
    std::fs::write(repo.path().join("late.env"), format!("STRIPE={STRIPE}\n")).unwrap();
    let index = repo.path().join(".git/next-index");
    std::fs::copy(repo.path().join(".git/index"), &index).unwrap();
    let status = Command::new("git")
        .args(["add", "late.env"])
        .current_dir(repo.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_INDEX_FILE", &index)
        .status()
        .unwrap();
    assert!(status.success());
    repo.git(&["status", "--short"]);
    let plain = deployguard(&["scan", "--staged"], repo.path());
    assert_eq!(plain.status.code(), Some(0), "{}", stdout(&plain));
    let hooked = Command::new(env!("CARGO_BIN_EXE_deployguard"))
        .args(["scan", "--staged"])
        .current_dir(repo.path())
        .env("GIT_INDEX_FILE", ".git/next-index")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(
        hooked.status.code(),
        Some(1),
        "{}{}",
        stdout(&hooked),
        stderr(&hooked)
    );
}

#[test]
fn a_closed_standard_output_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deployguard"))
        .args(["rules", "list"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"));
}

#[test]
fn min_confidence_leaves_out_less_sure_findings_and_decides_the_exit_status() {
    let mut repo = TestRepo::new();
    // A provider format (high) and a value recognised by its name only (medium).
    repo.write(
        "app.env",
        format!("GITHUB_TOKEN={GITHUB}\nDB_PASSWORD=Vq8rT2mLx9Kd4P\n"),
    );
    repo.commit("config");
    let rules_of = |output: &Output| -> Vec<String> {
        let mut rules: Vec<String> = json(output)["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["rule_id"].as_str().unwrap().to_owned())
            .collect();
        rules.sort();
        rules
    };
    let all = deployguard(&["scan", "--format", "json"], repo.path());
    assert_eq!(
        rules_of(&all),
        ["generic-secret-assignment", "github-personal-access-token"]
    );
    let high = deployguard(
        &["scan", "--format", "json", "--min-confidence", "high"],
        repo.path(),
    );
    assert_eq!(high.status.code(), Some(1));
    assert_eq!(rules_of(&high), ["github-personal-access-token"]);

    let mut medium_only = TestRepo::new();
    medium_only.write("app.env", "DB_PASSWORD=Vq8rT2mLx9Kd4P\n");
    medium_only.commit("config");
    let quiet = deployguard(&["scan", "--min-confidence", "high"], medium_only.path());
    assert_eq!(quiet.status.code(), Some(0), "{}", stdout(&quiet));
    let bad = deployguard(&["scan", "--min-confidence", "certain"], medium_only.path());
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn fail_on_skipped_says_a_partial_clone_was_not_read_whole() {
    let mut origin = TestRepo::new();
    origin.write("old.txt", "nothing secret\n");
    origin.commit("first");
    origin.remove("old.txt");
    origin.write("README.md", "hello\n");
    origin.commit("second");
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial.git");
    origin.partial_clone(&partial);
    let partial = partial.to_str().unwrap();

    let lenient = deployguard(&["scan", partial, "--format", "json"], dir.path());
    assert_eq!(lenient.status.code(), Some(0), "{}", stderr(&lenient));
    let report = json(&lenient);
    assert!(report["stats"]["blobs_unread"].as_u64().unwrap() >= 1);
    assert!(
        report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["reason"] == "missing" && s["path"] == "old.txt"),
        "{report}"
    );
    let strict = deployguard(&["scan", partial, "--fail-on-skipped"], dir.path());
    assert_eq!(strict.status.code(), Some(3), "{}", stdout(&strict));
    assert!(stdout(&strict).contains("not read"), "{}", stdout(&strict));

    // Binary files are skipped in every scan; they do not make it incomplete.
    let mut binary = TestRepo::new();
    binary.write("logo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".as_slice());
    binary.commit("logo");
    let whole = deployguard(&["scan", "--fail-on-skipped"], binary.path());
    assert_eq!(whole.status.code(), Some(0), "{}", stdout(&whole));
}

/// A repository with a filled-in `.env` (holding a GitHub token) and a 2 MiB binary
/// blob; returns it with the `.env`'s blob id and the binary's.
fn repo_with_env_and_a_large_blob() -> (TestRepo, String, String) {
    let mut repo = TestRepo::new();
    repo.write("README.md", "# service\n");
    repo.commit("initial commit");
    let env = format!("GITHUB_TOKEN={GITHUB}\nPORT=8080\n");
    repo.write("deploy/.env", &env);
    repo.write("deploy/.env.example", "GITHUB_TOKEN=\nPORT=8080\n");
    // Bytes that compress badly, with a NUL: binary, and 2 MiB in the pack too.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let image: Vec<u8> = (0..2 << 20)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i == 0 { 0 } else { state as u8 }
        })
        .collect();
    repo.write("assets/video.bin", &image);
    repo.commit("deploy");
    let env_blob = repo.blob_id(env.as_bytes());
    let image_blob = repo.blob_id(&image);
    (repo, env_blob, image_blob)
}

#[test]
fn file_findings_reach_json_text_and_the_secrets_file_which_the_clean_still_reads() {
    let (repo, env_blob, _) = repo_with_env_and_a_large_blob();
    let dir = tempfile::tempdir().unwrap();
    let secrets_file = dir.path().join("secrets.json");
    let output = deployguard(
        &[
            "scan",
            "--format",
            "json",
            "--secrets-out",
            secrets_file.to_str().unwrap(),
        ],
        repo.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = json(&output);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{report}");
    assert_eq!(files[0]["kind"], "env_file");
    assert_eq!(files[0]["path"], "deploy/.env");
    assert_eq!(files[0]["blob"], env_blob.as_str());

    // The secrets file names the file to remove, and the clean still reads it.
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string(&secrets_file).unwrap()).unwrap();
    assert_eq!(secrets["version"], 2);
    assert_eq!(secrets["secrets"][0]["value"], GITHUB);
    let listed = &secrets["files"][0];
    assert_eq!(listed["path"], "deploy/.env");
    assert_eq!(listed["blob"], env_blob.as_str());
    assert_eq!(listed["kind"], "env_file");
    assert_eq!(listed["id"], files[0]["id"]);
    let cleaned = deployguard(
        &[
            "clean",
            &repo.path().to_string_lossy(),
            "--secrets",
            secrets_file.to_str().unwrap(),
            "--all",
            "-o",
            "cleaned.bundle",
        ],
        dir.path(),
    );
    assert_eq!(cleaned.status.code(), Some(0), "{}", stderr(&cleaned));

    let text = stdout(&deployguard(&["scan"], repo.path()));
    assert!(text.contains(".env file with values"), "{text}");
    assert!(text.contains(&format!("blob {env_blob}")), "{text}");
}

#[test]
fn the_largest_blobs_are_listed_in_json_and_text_unless_0_are_asked_for() {
    let (repo, _, image_blob) = repo_with_env_and_a_large_blob();
    let report = json(&deployguard(&["scan", "--format", "json"], repo.path()));
    let largest = &report["largest_blobs"][0];
    assert_eq!(largest["blob"], image_blob.as_str());
    assert_eq!(largest["size"], 2 << 20);
    assert_eq!(largest["path"], "assets/video.bin");
    assert_eq!(largest["commit"].as_str().unwrap().len(), 40);

    let text = stdout(&deployguard(&["scan"], repo.path()));
    assert!(text.contains("largest blobs in history"), "{text}");
    assert!(
        text.contains(&format!("2.0 MiB  {image_blob}  assets/video.bin")),
        "{text}"
    );

    let none = json(&deployguard(
        &["scan", "--format", "json", "--largest-blobs", "0"],
        repo.path(),
    ));
    assert!(none.get("largest_blobs").is_none(), "{none}");
    let one = json(&deployguard(
        &["scan", "--format", "json", "--largest-blobs", "1"],
        repo.path(),
    ));
    assert_eq!(one["largest_blobs"].as_array().unwrap().len(), 1);
    let on_disk = stdout(&deployguard(&["scan", "--no-git"], repo.path()));
    assert!(!on_disk.contains("largest blobs"), "{on_disk}");
}

#[test]
fn file_findings_in_sarif_validate_against_the_schema() {
    let (repo, env_blob, _) = repo_with_env_and_a_large_blob();
    let output = deployguard(&["scan", "--format", "sarif"], repo.path());
    assert_eq!(output.status.code(), Some(1));
    let sarif = json(&output);
    let errors = sarif_errors(&sarif);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    let file = results
        .iter()
        .find(|r| r["ruleId"] == "file-env-file")
        .unwrap_or_else(|| panic!("{sarif}"));
    assert_eq!(file["properties"]["blob"], env_blob.as_str());
    assert_eq!(
        file["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "deploy/.env"
    );
    assert!(!stdout(&output).contains(GITHUB));
}
