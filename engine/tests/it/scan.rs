//! The scanner over real repositories built by the test: exact findings, attributions
//! and counts.

use std::sync::atomic::AtomicBool;

use deployguard_engine::scan::{
    FileKind, OccurrenceKind, Report, Revisions, ScanError, ScanRun, Scanner, Secret, Settings,
    SkipReason, Target,
};
use deployguard_testkit::TestRepo;
use deployguard_testkit::fixtures::pkcs12_file;

const GITHUB: &str = "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";
const GITHUB_2: &str = "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";
const AWS: &str = "AKIAM6COX6AQXF6LI3U3";
const SLACK: &str = "xoxb-319895298309-5514929746018-Gj7tMzkv1HvLOGDQfpzE0F4y";
const STRIPE: &str = "sk_live_YqDRV8SKN8qU577SGwdUoxkr";
const GITLAB: &str = "glpat--DEXXBhR-5KCo6_pkzdB";
const SENDGRID: &str = "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";

fn scanner() -> Scanner {
    Scanner::new(&Settings::default()).unwrap()
}

fn scan_with(scanner: &Scanner, target: Target) -> Report {
    scanner.scan(&target, &ScanRun::default()).unwrap()
}

fn history(repo: &TestRepo) -> Report {
    scan_with(
        &scanner(),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    )
}

fn secret<'a>(report: &'a Report, value: &str) -> &'a Secret {
    report
        .secrets
        .iter()
        .find(|s| s.value.as_bytes() == value.as_bytes())
        .unwrap_or_else(|| panic!("{value} not found in {:#?}", report.secrets))
}

fn values(report: &Report) -> Vec<String> {
    let mut values: Vec<String> = report.secrets.iter().map(|s| s.value.to_text()).collect();
    values.sort_unstable();
    values
}

fn sorted<'a>(values: &[&'a str]) -> Vec<&'a str> {
    let mut values = values.to_vec();
    values.sort_unstable();
    values
}

#[test]
fn whole_history_scan_attributes_each_secret_to_its_earliest_commit_and_path() {
    let mut repo = TestRepo::new();
    repo.write("README.md", "# demo\n");
    repo.commit("initial");
    repo.write(
        "config/app.env",
        format!("DEBUG=1\nAWS_ACCESS_KEY_ID={AWS}\n"),
    );
    let added_config = repo.commit("add config");
    repo.checkout("feature");
    repo.write("deploy/slack.yml", format!("notify:\n  token: {SLACK}\n"));
    let added_slack = repo.commit("notify on deploy");
    repo.checkout("main");
    repo.write("README.md", "# demo\n\nUsage.\n");
    repo.commit("docs");
    repo.merge("feature", "merge feature");
    repo.remove("config/app.env");
    repo.commit("remove leaked config");
    repo.rename("deploy/slack.yml", "ops/slack.yml");
    repo.commit("move notifications");

    let report = history(&repo);

    assert_eq!(values(&report), sorted(&[AWS, SLACK]));
    let aws = secret(&report, AWS);
    assert_eq!(aws.rule_id, "aws-access-key-id");
    assert_eq!(aws.occurrences.len(), 1, "{aws:#?}");
    let at = &aws.occurrences[0];
    assert_eq!(
        (at.path.as_deref(), at.line, at.column),
        (Some("config/app.env"), 2, 19)
    );
    assert_eq!(at.commit.as_deref(), Some(added_config.as_str()));
    assert_eq!(at.kind, OccurrenceKind::File);

    let slack = secret(&report, SLACK);
    assert_eq!(
        slack.occurrences.len(),
        1,
        "a rename reuses the blob: {slack:#?}"
    );
    let at = &slack.occurrences[0];
    assert_eq!(
        (at.path.as_deref(), at.line, at.column),
        (Some("deploy/slack.yml"), 2, 10)
    );
    assert_eq!(at.commit.as_deref(), Some(added_slack.as_str()));

    assert_eq!(report.stats.commits, 7);
    assert_eq!(report.stats.refs, 2);
    assert_eq!(
        report.stats.blobs_scanned as usize,
        repo.reachable_blob_count()
    );
    assert_eq!(report.stats.blobs_skipped, 0);
    assert_eq!(report.stats.messages_scanned, 7);
}

#[test]
fn a_secret_kept_across_many_commits_is_one_secret_with_an_occurrence_per_blob() {
    let mut repo = TestRepo::new();
    let mut commits = Vec::new();
    for version in 0..5 {
        repo.write(
            "settings.py",
            format!("VERSION = {version}\nGITHUB_TOKEN = '{GITHUB}'\n"),
        );
        commits.push(repo.commit(&format!("release {version}")));
    }
    let report = history(&repo);
    assert_eq!(report.secrets.len(), 1);
    let found = &report.secrets[0];
    assert_eq!(found.rule_id, "github-personal-access-token");
    let mut seen: Vec<(String, u32, u32)> = found
        .occurrences
        .iter()
        .map(|o| (o.commit.clone().unwrap(), o.line, o.column))
        .collect();
    seen.sort();
    let mut expected: Vec<(String, u32, u32)> = commits.into_iter().map(|c| (c, 2, 17)).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn identical_files_are_one_blob_scanned_once() {
    let mut repo = TestRepo::new();
    let contents = format!("token={GITLAB}\n");
    repo.write("a/first.env", &contents);
    repo.write("b/second.env", &contents);
    repo.commit("two copies");
    repo.write("c/third.env", &contents);
    repo.commit("a third copy");
    let report = history(&repo);
    assert_eq!(report.stats.blobs_scanned, 1);
    let found = secret(&report, GITLAB);
    assert_eq!(found.occurrences.len(), 1);
    assert_eq!(found.occurrences[0].path.as_deref(), Some("a/first.env"));
}

#[test]
fn messages_tags_notes_stash_orphans_and_blob_refs_are_scanned_but_unreachable_blobs_are_not() {
    let mut repo = TestRepo::new();
    repo.write("app.txt", "hello\n");
    let first = repo.commit(&format!("initial\n\nci token {GITHUB} for the bot"));
    repo.tag_annotated("v1.0", &format!("release\n\nslack {SLACK}"));
    repo.git(&[
        "notes",
        "add",
        "-m",
        &format!("deploy note: {STRIPE}"),
        &first,
    ]);

    repo.write("app.txt", format!("hello\nkey = \"{GITLAB}\"\n"));
    repo.git(&["stash", "-q"]);

    repo.git(&["checkout", "-q", "--orphan", "gh-pages"]);
    repo.git(&["rm", "-rq", "--cached", "."]);
    repo.write(
        "site/config.js",
        format!("const sendgrid = '{SENDGRID}';\n"),
    );
    repo.commit("site");
    repo.git(&["checkout", "-q", "-f", "main"]);

    let blob = repo.git_with_input(
        &["hash-object", "-w", "--stdin"],
        Some(format!("aws={AWS}\n").as_bytes()),
    );
    repo.git(&["tag", "raw-blob", &blob]);
    repo.git_with_input(
        &["hash-object", "-w", "--stdin"],
        Some(format!("dangling {GITHUB_2}\n").as_bytes()),
    );

    let report = history(&repo);
    assert_eq!(
        values(&report),
        sorted(&[GITHUB, SLACK, STRIPE, GITLAB, SENDGRID, AWS])
    );
    let commit_message = &secret(&report, GITHUB).occurrences[0];
    assert_eq!(commit_message.kind, OccurrenceKind::CommitMessage);
    assert_eq!(commit_message.commit.as_deref(), Some(first.as_str()));
    assert_eq!(commit_message.line, 3);
    let tag_message = &secret(&report, SLACK).occurrences[0];
    assert_eq!(tag_message.kind, OccurrenceKind::TagMessage);
    assert_eq!(tag_message.path.as_deref(), Some("refs/tags/v1.0"));
    assert_eq!(
        secret(&report, AWS).occurrences[0].path.as_deref(),
        Some("refs/tags/raw-blob")
    );
    assert_eq!(
        secret(&report, SENDGRID).occurrences[0].path.as_deref(),
        Some("site/config.js")
    );
}

#[test]
fn binary_and_oversized_blobs_are_skipped_and_counted_never_silently() {
    let mut repo = TestRepo::new();
    let mut binary = b"\x89PNG\r\n\x1a\n\0\0\0".to_vec();
    binary.extend_from_slice(format!("tEXt {GITHUB}").as_bytes());
    repo.write("logo.png", &binary);
    repo.write("dump.sql", format!("{}\n-- {AWS}\n", "x".repeat(4096)));
    repo.write("small.env", format!("STRIPE={STRIPE}\n"));
    repo.commit("assets");
    let report = scan_with(
        &scanner().with_max_blob_size(1024),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    );
    assert_eq!(values(&report), [STRIPE]);
    assert_eq!(report.stats.blobs_skipped, 2);
    assert_eq!(report.stats.blobs_scanned, 1);
    let mut skipped: Vec<(Option<&str>, &SkipReason)> = report
        .skipped
        .iter()
        .map(|s| (s.path.as_deref(), &s.reason))
        .collect();
    skipped.sort_by_key(|(p, _)| *p);
    assert_eq!(
        skipped,
        [
            (Some("dump.sql"), &SkipReason::TooLarge),
            (Some("logo.png"), &SkipReason::Binary)
        ]
    );
}

#[test]
fn the_skipped_listing_is_the_same_first_blobs_by_path_whatever_order_threads_meet_them() {
    use deployguard_engine::scan::report::SKIPPED_LISTED;
    let mut repo = TestRepo::new();
    // More binary files than the report lists, of sizes unrelated to their names.
    let count = SKIPPED_LISTED + 50;
    for i in 0..count {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0".to_vec();
        png.resize(16 + (i * 7919) % 3000, b'\0');
        png.extend_from_slice(format!("{i}").as_bytes());
        repo.write(&format!("img/{i:05}.png"), &png);
    }
    repo.commit("images");
    let target = Target::Git {
        repo: repo.path().to_path_buf(),
        revisions: Revisions::All,
    };
    let reports: Vec<Report> = [1, 2, 4]
        .into_iter()
        .map(|threads| scan_with(&scanner().with_threads(threads), target.clone()))
        .collect();
    let listing = |report: &Report| -> Vec<(Option<String>, u64)> {
        report
            .skipped
            .iter()
            .map(|s| (s.path.clone(), s.size))
            .collect()
    };
    for report in &reports {
        assert_eq!(report.stats.blobs_skipped, count as u64);
        assert_eq!(listing(report), listing(&reports[0]));
    }
    let paths: Vec<String> = reports[0]
        .skipped
        .iter()
        .filter_map(|s| s.path.clone())
        .collect();
    let expected: Vec<String> = (0..SKIPPED_LISTED)
        .map(|i| format!("img/{i:05}.png"))
        .collect();
    assert_eq!(paths, expected);
}

#[test]
fn since_and_range_scan_only_blobs_introduced_by_those_commits() {
    let mut repo = TestRepo::new();
    repo.write("old.env", format!("AWS={AWS}\n"));
    repo.commit("old secret");
    repo.checkout("feature");
    repo.write("new.env", format!("GH={GITHUB}\n"));
    repo.commit("new secret");
    let path = repo.path().to_path_buf();
    let scanner = scanner();

    let range = scan_with(
        &scanner,
        Target::Git {
            repo: path.clone(),
            revisions: Revisions::Range("main..feature".into()),
        },
    );
    assert_eq!(values(&range), [GITHUB]);
    assert_eq!(range.stats.commits, 1);

    let since = scan_with(
        &scanner,
        Target::Git {
            repo: path.clone(),
            revisions: Revisions::Since("main".into()),
        },
    );
    assert_eq!(values(&since), [GITHUB]);

    let unknown = scanner.scan(
        &Target::Git {
            repo: path.clone(),
            revisions: Revisions::Since("nope".into()),
        },
        &ScanRun::default(),
    );
    let message = unknown.unwrap_err().to_string();
    assert!(message.contains("nope"), "{message}");

    let bad_range = scanner.scan(
        &Target::Git {
            repo: path.clone(),
            revisions: Revisions::Range("main..nowhere".into()),
        },
        &ScanRun::default(),
    );
    assert!(
        matches!(bad_range, Err(ScanError::Git { .. })),
        "{bad_range:?}"
    );

    let option = scanner.scan(
        &Target::Git {
            repo: path,
            revisions: Revisions::Range("--output=/tmp/x".into()),
        },
        &ScanRun::default(),
    );
    assert!(option.unwrap_err().to_string().contains("invalid revision"));
}

#[test]
fn staged_scan_reads_what_is_staged_and_nothing_else() {
    let mut fresh = TestRepo::new();
    fresh.write("first.env", format!("GH={GITHUB}\n"));
    let report = scan_with(
        &scanner(),
        Target::Staged {
            repo: fresh.path().to_path_buf(),
        },
    );
    assert_eq!(values(&report), [GITHUB], "a repository without commits");

    let mut repo = TestRepo::new();
    repo.write("committed.env", format!("AWS={AWS}\n"));
    repo.commit("committed");
    repo.write("staged.env", format!("GITLAB={GITLAB}\n"));
    std::fs::write(
        repo.path().join("unstaged.env"),
        format!("STRIPE={STRIPE}\n"),
    )
    .unwrap();
    let report = scan_with(
        &scanner(),
        Target::Staged {
            repo: repo.path().to_path_buf(),
        },
    );
    assert_eq!(values(&report), [GITLAB]);
    let at = &report.secrets[0].occurrences[0];
    assert_eq!(
        (at.path.as_deref(), at.commit.as_deref(), at.line),
        (Some("staged.env"), None, 1)
    );
}

#[test]
fn plain_directory_scan_reads_every_file_but_not_git_internals() {
    let mut repo = TestRepo::new();
    repo.write("src/config.rs", format!("const KEY: &str = \"{AWS}\";\n"));
    repo.commit(&format!("message with {GITHUB}"));
    std::fs::create_dir_all(repo.path().join("untracked/deep")).unwrap();
    std::fs::write(
        repo.path().join("untracked/deep/notes.md"),
        format!("\n\n   {STRIPE}\n"),
    )
    .unwrap();

    let report = scan_with(
        &scanner(),
        Target::Files {
            root: repo.path().to_path_buf(),
        },
    );
    assert_eq!(report.source.kind, "directory");
    assert_eq!(values(&report), sorted(&[AWS, STRIPE]));
    let at = &secret(&report, STRIPE).occurrences[0];
    assert_eq!(
        (at.path.as_deref(), at.line, at.column, at.commit.as_deref()),
        (Some("untracked/deep/notes.md"), 3, 4, None)
    );

    let single = scan_with(
        &scanner(),
        Target::Files {
            root: repo.path().join("src/config.rs"),
        },
    );
    assert_eq!(single.source.kind, "file");
    assert_eq!(values(&single), [AWS]);

    let missing = scanner().scan(
        &Target::Files {
            root: repo.path().join("absent"),
        },
        &ScanRun::default(),
    );
    assert!(matches!(missing, Err(ScanError::Io { .. })));
}

#[test]
fn fingerprints_depend_on_rule_and_value_not_on_commits_or_paths() {
    let mut one = TestRepo::new();
    one.write("a.env", format!("T={SLACK}\n"));
    one.commit("one");
    let mut two = TestRepo::new();
    two.write("elsewhere/b.yml", format!("\n\nslack: {SLACK}\n"));
    two.commit("two");
    let (a, b) = (history(&one), history(&two));
    assert_eq!(a.secrets[0].id, b.secrets[0].id);
    assert_eq!(a.secrets[0].hash, b.secrets[0].hash);
    assert_ne!(
        a.secrets[0].occurrences[0].commit,
        b.secrets[0].occurrences[0].commit
    );
}

#[test]
fn a_cancelled_scan_stops_with_cancelled() {
    let mut repo = TestRepo::new();
    repo.write("a.env", format!("T={SLACK}\n"));
    repo.commit("one");
    let cancel = AtomicBool::new(true);
    let result = scanner().scan(
        &Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
        &ScanRun {
            progress: None,
            cancel: Some(&cancel),
        },
    );
    assert!(matches!(result, Err(ScanError::Cancelled)), "{result:?}");
}

#[test]
fn a_directory_that_is_not_a_repository_is_refused_for_history() {
    let dir = tempfile::tempdir().unwrap();
    let result = scanner().scan(
        &Target::Git {
            repo: dir.path().to_path_buf(),
            revisions: Revisions::All,
        },
        &ScanRun::default(),
    );
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("not a git repository")
    );
}

#[test]
fn look_alikes_of_secrets_are_not_reported() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lookalikes");
    let report = scan_with(&scanner(), Target::Files { root: fixtures });
    assert!(report.stats.blobs_scanned >= 10, "{:?}", report.stats);
    let found: Vec<String> = report
        .secrets
        .iter()
        .map(|s| {
            format!(
                "{} {} at {:?}",
                s.rule_id,
                s.value.to_text(),
                s.occurrences[0].path
            )
        })
        .collect();
    assert!(found.is_empty(), "false alarms:\n{}", found.join("\n"));
}

#[test]
fn a_tag_of_a_tag_has_both_messages_scanned() {
    let mut repo = TestRepo::new();
    repo.write("a.txt", "a\n");
    repo.commit("one");
    repo.tag_annotated("inner", &format!("inner tag\n\n{GITHUB}"));
    repo.git(&[
        "tag",
        "-a",
        "outer",
        "-m",
        &format!("outer tag\n\n{AWS}"),
        "inner",
    ]);
    repo.git(&["tag", "-d", "inner"]);
    let report = history(&repo);
    assert_eq!(values(&report), sorted(&[GITHUB, AWS]));
    for secret in &report.secrets {
        assert_eq!(secret.occurrences[0].kind, OccurrenceKind::TagMessage);
    }
}

#[test]
fn a_blob_first_seen_at_an_allowlisted_path_is_scanned_where_it_appears_next() {
    let mut repo = TestRepo::new();
    repo.write("tests/fixtures/creds.env", format!("TOKEN={GITHUB}\n"));
    repo.commit("fixture");
    repo.rename("tests/fixtures/creds.env", "deploy/prod.env");
    let moved = repo.commit("promote the fixture to production");
    let settings =
        Settings::parse(".deployguard.toml", "[allowlist]\npaths = ['^tests/']\n").unwrap();
    let report = scan_with(
        &Scanner::new(&settings).unwrap(),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    );
    assert_eq!(values(&report), [GITHUB]);
    let at = &report.secrets[0].occurrences[0];
    assert_eq!(
        (at.path.as_deref(), at.commit.as_deref()),
        (Some("deploy/prod.env"), Some(moved.as_str()))
    );
}

#[test]
fn secrets_on_consecutive_lines_are_all_found() {
    let first = "fo1_GtFh5yV0fKQ4w3mJbN8xZsR2pLqT7cUeA9dWk1o_Xr6";
    let second = "fo1_Lw9-Pq2Zr7sXk4VnB1mT8yGcJ5hD0fQeR3aUo6iWz_E";
    let mut repo = TestRepo::new();
    let mut text = format!("{first}\n{second}\n");
    text.push_str(&"filler line to make the buffer large enough for windows\n".repeat(200));
    text.push_str(&format!("{first}\n{second}\n"));
    repo.write("tokens.txt", text);
    repo.commit("tokens");
    let report = history(&repo);
    assert_eq!(values(&report), sorted(&[first, second]));
    for secret in &report.secrets {
        let lines: Vec<u32> = secret.occurrences.iter().map(|o| o.line).collect();
        assert_eq!(lines.len(), 2, "{secret:#?}");
    }
}

#[test]
fn repository_configuration_cannot_make_a_scan_run_programs() {
    let mut repo = TestRepo::new();
    repo.write("a.txt", "a\n");
    repo.commit("one");
    let marker = repo.path().join("ran");
    let script = repo.path().join("evil.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A commit carrying a signature header, and configuration that would verify it with
    // the repository's own "gpg".
    let tree = repo.git(&["rev-parse", "HEAD^{tree}"]);
    let parent = repo.head();
    let commit = format!(
        "tree {tree}\nparent {parent}\nauthor A <a@example.test> 1700000000 +0000\ncommitter A <a@example.test> 1700000000 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n -----END PGP SIGNATURE-----\n\nsigned\n"
    );
    let signed = repo.git_with_input(
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        Some(commit.as_bytes()),
    );
    repo.git(&["update-ref", "refs/heads/main", &signed]);
    repo.git(&["config", "log.showSignature", "true"]);
    repo.git(&["config", "gpg.program", script.to_str().unwrap()]);
    let report = history(&repo);
    assert_eq!(report.stats.commits, 2);
    assert!(
        !marker.exists(),
        "the repository's gpg.program ran during a scan"
    );
}

/// Reads `git verify-pack -v`'s chain histogram: the longest delta chain in the packs.
fn longest_delta_chain(repo: &mut TestRepo) -> usize {
    let packs = std::fs::read_dir(repo.path().join(".git/objects/pack")).unwrap();
    packs
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .map(|idx| {
            let listing = repo.git(&["verify-pack", "-v", idx.to_str().unwrap()]);
            listing
                .lines()
                .filter_map(|l| l.strip_prefix("chain length = "))
                .filter_map(|l| l.split(':').next()?.trim().parse::<usize>().ok())
                .max()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn history_in_deep_delta_chains_behind_64_bit_offsets_and_in_loose_objects_is_read_whole() {
    let mut repo = TestRepo::new();
    // Each version changes one line of its own: only the previous version is a close
    // base, so git chains the deltas one after another.
    let mut lines: Vec<String> = (0..400).map(|n| format!("filler line {n}")).collect();
    let mut introduced = String::new();
    for i in 0..90 {
        lines[i * 4] = format!("setting_{i} = {}", i * 13);
        if i == 30 {
            lines[i * 4 + 1] = format!("GITHUB_TOKEN = '{GITHUB}'");
        }
        repo.write("settings.conf", lines.join("\n") + "\n");
        let commit = repo.commit(&format!("v{i}"));
        if i == 30 {
            introduced = commit;
        }
    }
    repo.git(&[
        "repack",
        "-q",
        "-a",
        "-d",
        "-f",
        "--depth=250",
        "--window=250",
    ]);
    assert!(longest_delta_chain(&mut repo) > 50, "the chain is not deep");
    // Every offset but the first moved to the index's 64-bit table, as in a pack over
    // 2 GiB (git refuses an index whose every offset is there).
    let pack_dir = repo.path().join(".git/objects/pack");
    let pack = std::fs::read_dir(&pack_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    let idx = pack.with_extension("idx");
    let wide = pack_dir.join("wide.idx");
    repo.git(&[
        "index-pack",
        "--index-version=2,12",
        "-o",
        wide.to_str().unwrap(),
        pack.to_str().unwrap(),
    ]);
    std::fs::rename(&wide, &idx).unwrap();
    // Loose objects beside the pack.
    repo.write("late.env", format!("AWS_ACCESS_KEY_ID={AWS}\n"));
    let late = repo.commit("late");

    let report = history(&repo);
    assert_eq!(values(&report), sorted(&[GITHUB, AWS]));
    let github = secret(&report, GITHUB);
    assert_eq!(github.occurrences.len(), 60, "one per version holding it");
    let first = github
        .occurrences
        .iter()
        .map(|o| o.commit.clone())
        .min_by_key(|c| {
            repo.git(&["rev-list", "--count", c.as_deref().unwrap()])
                .parse::<u32>()
                .unwrap()
        });
    assert_eq!(first.flatten().as_deref(), Some(introduced.as_str()));
    assert_eq!(
        secret(&report, AWS).occurrences[0].commit.as_deref(),
        Some(late.as_str())
    );
    assert_eq!(
        report.stats.blobs_scanned as usize,
        repo.reachable_blob_count()
    );
    assert_eq!(report.stats.commits, 91);
}

#[test]
fn history_fetched_as_a_thin_pack_is_read_whole() {
    let mut origin = TestRepo::new();
    let mut text = "base line\n".repeat(200);
    origin.write("app.cfg", &text);
    origin.commit("base");
    let mut clone = TestRepo::new();
    let url = origin.path().to_str().unwrap().to_owned();
    clone.git(&["fetch", "-q", &url, "main:refs/heads/upstream"]);
    text.push_str(&format!("slack = {SLACK}\n"));
    origin.write("app.cfg", &text);
    let added = origin.commit("notify");
    // Kept as the pack it arrived as: a thin pack, its bases appended by index-pack.
    clone.git(&[
        "-c",
        "fetch.unpackLimit=1",
        "fetch",
        "-q",
        &url,
        "+main:refs/heads/upstream",
    ]);
    let packs = std::fs::read_dir(clone.path().join(".git/objects/pack")).unwrap();
    assert_eq!(
        packs
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "pack"))
            .count(),
        1,
        "the fetch was not kept as a pack"
    );
    let report = history(&clone);
    assert_eq!(values(&report), [SLACK]);
    assert_eq!(
        secret(&report, SLACK).occurrences[0].commit.as_deref(),
        Some(added.as_str())
    );
    assert_eq!(
        report.stats.blobs_scanned as usize,
        clone.reachable_blob_count()
    );
}

#[test]
fn a_partial_clone_is_scanned_with_its_missing_blobs_reported_as_skipped() {
    let mut origin = TestRepo::new();
    origin.write("old.env", format!("STRIPE={STRIPE}\n"));
    origin.commit(&format!("first\n\nbot token {GITHUB}"));
    origin.remove("old.env");
    origin.write("README.md", "hello\n");
    origin.commit("second");
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial");
    origin.partial_clone(&partial);

    let report = scan_with(
        &scanner(),
        Target::Git {
            repo: partial,
            revisions: Revisions::All,
        },
    );
    // The messages are there; the blobs of the first commit were never fetched.
    assert_eq!(values(&report), [GITHUB]);
    let missing: Vec<&str> = report
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::Missing)
        .filter_map(|s| s.path.as_deref())
        .collect();
    assert!(missing.contains(&"old.env"), "{:?}", report.skipped);
}

#[test]
fn each_occurrence_names_its_commits_author_and_date_through_the_mailmap() {
    let mut repo = TestRepo::new();
    repo.write(
        ".mailmap",
        "Ada Lovelace <ada@example.test> <ada@old.example.test>\n",
    );
    repo.commit("mailmap");
    repo.write("config.env", format!("GITHUB_TOKEN={GITHUB}\n"));
    repo.git(&[
        "commit",
        "-q",
        "--author",
        "ada <ada@old.example.test>",
        "--date",
        "2024-03-01T09:30:00+01:00",
        "-m",
        &format!("add config, key {AWS}"),
    ]);
    let by_ada = repo.head();
    repo.write("later.env", format!("# moved\nGITHUB_TOKEN={GITHUB}\n"));
    let by_test = repo.commit("copy");
    let mut staged = TestRepo::new();
    staged.write("new.env", format!("GITHUB_TOKEN={GITHUB}\n"));

    for revisions in [
        Revisions::All,
        Revisions::Range(format!("{by_ada}~1..HEAD")),
    ] {
        let report = scan_with(
            &scanner(),
            Target::Git {
                repo: repo.path().to_path_buf(),
                revisions,
            },
        );
        let occurrences = &secret(&report, GITHUB).occurrences;
        assert_eq!(occurrences.len(), 2, "{occurrences:#?}");
        for occurrence in occurrences {
            let author = occurrence.author.as_ref().expect("an author");
            if occurrence.commit.as_deref() == Some(by_ada.as_str()) {
                assert_eq!(author.name, "Ada Lovelace");
                assert_eq!(author.email, "ada@example.test");
                assert_eq!(author.date, "2024-03-01T09:30:00+01:00");
            } else {
                assert_eq!(occurrence.commit.as_deref(), Some(by_test.as_str()));
                assert_eq!(author.name, "Test Author");
                assert_eq!(author.email, "author@example.test");
            }
        }
        let message = &secret(&report, AWS).occurrences[0];
        assert_eq!(message.kind, OccurrenceKind::CommitMessage);
        assert_eq!(
            message.author.as_ref().map(|a| a.name.as_str()),
            Some("Ada Lovelace")
        );

        let text = report.to_text(false);
        assert!(
            text.contains("Ada Lovelace <ada@example.test> 2024-03-01"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        let first = &json["secrets"][0]["occurrences"][0]["author"];
        assert!(
            first["email"].is_string() && first["date"].is_string(),
            "{json}"
        );
    }

    let report = scan_with(
        &scanner(),
        Target::Staged {
            repo: staged.path().to_path_buf(),
        },
    );
    assert_eq!(secret(&report, GITHUB).occurrences[0].author, None);
}

#[test]
fn secrets_inside_archives_and_committed_key_stores_are_reported_with_member_and_commit() {
    use std::io::Write;
    let zip = |members: &[(&str, &[u8])]| -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        for (name, data) in members {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap();
        out.into_inner()
    };
    let gzip = |data: &[u8]| -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    };
    let properties = format!("spring.application.name=billing\ngithub.token={GITHUB}\n");
    let inner_jar = zip(&[
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"),
        ("application.properties", properties.as_bytes()),
    ]);
    let p12 = pkcs12_file();
    let app = zip(&[
        ("BOOT-INF/lib/billing-config.jar", &inner_jar),
        ("BOOT-INF/classes/keystore.p12", &p12),
        (
            "BOOT-INF/classes/logo.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        ),
    ]);
    let dump =
        gzip(format!("-- dump\nINSERT INTO settings VALUES ('slack', '{SLACK}');\n").as_bytes());
    // A JKS: magic, version 2, no entries.
    let jks = [0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2, 0, 0, 0, 0];
    let bomb = zip(&[("zeros.bin", &vec![0u8; 24 << 20])]);

    let mut repo = TestRepo::new();
    repo.write("README.md", "# billing\n");
    repo.commit("initial commit");
    repo.write("dist/billing.jar", &app);
    repo.write("backup/settings.sql.gz", &dump);
    repo.write("certs/truststore", jks);
    repo.write("fixtures/huge.zip", &bomb);
    let added = repo.commit("add the build");

    let report = history(&repo);
    let token = &secret(&report, GITHUB).occurrences;
    assert_eq!(token.len(), 1);
    assert_eq!(token[0].path.as_deref(), Some("dist/billing.jar"));
    assert_eq!(
        token[0].member.as_deref(),
        Some("BOOT-INF/lib/billing-config.jar!/application.properties")
    );
    assert_eq!((token[0].line, token[0].column), (2, 14));
    assert_eq!(token[0].commit.as_deref(), Some(added.as_str()));
    let slack = &secret(&report, SLACK).occurrences[0];
    assert_eq!(
        (slack.path.as_deref(), slack.member.as_deref()),
        (Some("backup/settings.sql.gz"), Some("settings.sql"))
    );

    let files: Vec<_> = report
        .files
        .iter()
        .map(|f| {
            (
                f.path.as_deref(),
                f.member.as_deref(),
                f.kind,
                f.commit.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            (
                Some("certs/truststore"),
                None,
                FileKind::Jks,
                Some(added.as_str())
            ),
            (
                Some("dist/billing.jar"),
                Some("BOOT-INF/classes/keystore.p12"),
                FileKind::Pkcs12,
                Some(added.as_str())
            ),
        ]
    );
    assert!(report.files.iter().all(|f| f.author.is_some()));

    // The bomb is listed as not read, and the scan says it was incomplete.
    let bomb = report
        .skipped
        .iter()
        .find(|s| {
            s.path
                .as_deref()
                .is_some_and(|p| p.starts_with("fixtures/huge.zip"))
        })
        .expect("the bomb is listed");
    assert_eq!(bomb.reason, SkipReason::ArchiveBomb);
    assert!(report.stats.blobs_unread >= 1);
    // The image in the jar is no news; no other secret is found.
    assert_eq!(report.secrets.len(), 2, "{:#?}", report.secrets);
    // A test key store is suppressed by its fingerprint, as a secret is.
    let jks_id = report.files[0].id.clone();
    let quieter = scan_with(
        &scanner().suppress([jks_id]),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    );
    assert_eq!(quieter.files.len(), 1);
    assert_eq!(quieter.stats.secrets_suppressed, 1);
    let text = report.to_text(false);
    assert!(
        text.contains(
            "dist/billing.jar!/BOOT-INF/lib/billing-config.jar!/application.properties:2:14"
        ),
        "{text}"
    );
    assert!(
        text.contains("PKCS#12 key store  (its presence is the leak)"),
        "{text}"
    );
}

#[test]
fn a_generic_value_decoded_in_a_lock_file_stays_unreported_as_it_does_undecoded() {
    let dir = tempfile::tempdir().unwrap();
    let line = "    \"token\": \"Zq8vLm2Rz9Kw4pXy%2Bz7Qw9Tn\",\n";
    std::fs::write(dir.path().join("package-lock.json"), line).unwrap();
    std::fs::write(dir.path().join("notes.txt"), line).unwrap();
    let report = scan_with(
        &scanner(),
        Target::Files {
            root: dir.path().to_path_buf(),
        },
    );
    let paths: Vec<_> = report
        .secrets
        .iter()
        .flat_map(|s| &s.occurrences)
        .map(|o| (o.path.as_deref(), o.encoding))
        .collect();
    assert_eq!(
        paths,
        [(
            Some("notes.txt"),
            Some(deployguard_engine::scan::Encoding::Percent)
        )],
        "{:#?}",
        report.secrets
    );
}

#[test]
fn a_percent_encoded_key_in_a_query_is_found_beside_a_plain_key_id_at_any_host() {
    let dir = tempfile::tempdir().unwrap();
    let key = "DQvu/aK6mjhP6YdJ4P3nOPtJ7vlwICLduOavv3HY";
    std::fs::write(
        dir.path().join("hook.sh"),
        format!(
            "curl \"https://sync.example.com/hook?aws_access_key_id={AWS}&aws_secret_access_key={}&region=eu\"\n",
            key.replace('/', "%2F")
        ),
    )
    .unwrap();
    let report = scan_with(
        &scanner(),
        Target::Files {
            root: dir.path().to_path_buf(),
        },
    );
    assert_eq!(values(&report), sorted(&[AWS, key]));
    let at = &secret(&report, key).occurrences[0];
    assert_eq!(
        at.encoding,
        Some(deployguard_engine::scan::Encoding::Percent)
    );
}

#[test]
fn a_url_password_with_escapes_stays_the_url_rule_s_while_the_rest_of_the_url_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let key = "siLbzGpvkw+Vx5CwGHMzYMDbNSzRVCAUX0Y3+je4";
    std::fs::write(
        dir.path().join("hook.sh"),
        format!(
            "curl \"https://ci:Tk9%40xQ2zLm4@hooks.acme.io/x?aws_secret_access_key={}\"\n",
            key.replace('+', "%2B")
        ),
    )
    .unwrap();
    // Text that only begins like an archive is still read as text.
    std::fs::write(
        dir.path().join("notes.txt"),
        format!("BZh91AY&SY is how bzip2 starts\nGITHUB_TOKEN={GITHUB}\n"),
    )
    .unwrap();
    let report = scan_with(
        &scanner(),
        Target::Files {
            root: dir.path().to_path_buf(),
        },
    );
    assert_eq!(values(&report), sorted(&[GITHUB, "Tk9%40xQ2zLm4", key]));
}

const OPENSSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBqJ8mZ3w1Vx0yR2k9cP4tL7hN6sQ8fB2dE5gH1jK3mAAAAkJx3b0ecd29H\n-----END OPENSSH PRIVATE KEY-----\n";

/// A KeePass 2 database's opening: its signatures, then a header that holds NULs.
fn kdbx() -> Vec<u8> {
    let mut data = vec![
        0x03, 0xd9, 0xa2, 0x9a, 0x67, 0xfb, 0x4b, 0xb5, 0x01, 0x00, 0x04, 0x00,
    ];
    let mut rng = fastrand::Rng::with_seed(23);
    data.extend(std::iter::repeat_with(|| rng.u8(..)).take(4096));
    data
}

/// (path, contents, kind) of files a person commits by mistake, each one to remove whole.
fn leaked_files() -> Vec<(&'static str, Vec<u8>, FileKind)> {
    let service_account = r#"{
  "type": "service_account",
  "project_id": "billing-prod",
  "private_key_id": "3c2f8e1a9b7d",
  "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n",
  "client_email": "deploy@billing-prod.iam.gserviceaccount.com"
}
"#;
    vec![
        (".ssh/id_ed25519", OPENSSH_KEY.into(), FileKind::PrivateKey),
        (
            "certs/server.key",
            b"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----\n".to_vec(),
            FileKind::PrivateKey,
        ),
        (
            "tools/deploy.ppk",
            b"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: deploy\n".to_vec(),
            FileKind::PrivateKey,
        ),
        // Not PKCS#12 inside, but named so: the name is what a person sees.
        (
            "certs/client.p12",
            b"\x30\x03\x02\x01\x09\0\0\0not what it says".to_vec(),
            FileKind::Pkcs12,
        ),
        ("vault/team.kdbx", kdbx(), FileKind::Keepass),
        (
            "gcp/credentials.json",
            service_account.into(),
            FileKind::CloudCredentials,
        ),
        (
            "ci/.aws/credentials",
            b"[default]\naws_access_key_id = AKIAQ3EGRB5LVDWXHK7N\naws_secret_access_key = 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\n".to_vec(),
            FileKind::CloudCredentials,
        ),
        (
            "web/.npmrc",
            b"//registry.npmjs.org/:_authToken=npm_Rk2mX8vQ4pL9sT1wZ6yB3nC7dF0gH5jK\n".to_vec(),
            FileKind::Npmrc,
        ),
        (
            ".pypirc",
            b"[pypi]\nusername = __token__\npassword = pypi-kW8s2LmQx9\n".to_vec(),
            FileKind::Pypirc,
        ),
        (
            ".netrc",
            b"machine git.example.test login ci password Vx7-qL2m-Rt9w\n".to_vec(),
            FileKind::Netrc,
        ),
        (
            ".env",
            b"DEBUG=false\nDATABASE_URL=postgres://billing:Kq7vR2xM@db:5432/billing\n".to_vec(),
            FileKind::EnvFile,
        ),
        (
            "web/.env.production",
            b"export SESSION_SECRET=Wm4tY8pZ1qR6\n".to_vec(),
            FileKind::EnvFile,
        ),
    ]
}

#[test]
fn files_whose_presence_is_the_leak_are_reported_with_path_commit_and_blob() {
    let leaked = leaked_files();
    let mut repo = TestRepo::new();
    repo.write("README.md", "# billing\n");
    let first = repo.commit("initial commit");
    // Beside them, their harmless cousins.
    repo.write(
        ".ssh/id_ed25519.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGon ci@build\n",
    );
    repo.write(
        ".env.example",
        "DATABASE_URL=postgres://user:password@localhost/app\n",
    );
    repo.write(
        "web/.npmrc",
        "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n",
    );
    let templates = repo.commit("templates");
    for (path, contents, _) in &leaked {
        repo.write(path, contents);
    }
    let added = repo.commit("add the deployment files");
    let mut expected: Vec<(String, FileKind, Option<String>, Option<String>)> = leaked
        .iter()
        .map(|(path, contents, kind)| {
            let blob = repo.blob_id(contents);
            (path.to_string(), *kind, Some(added.clone()), Some(blob))
        })
        .collect();
    expected.sort();

    let found = |report: &Report| {
        let mut files: Vec<_> = (report.files.iter())
            .map(|f| {
                (
                    f.path.clone().unwrap(),
                    f.kind,
                    f.commit.clone(),
                    f.blob.clone(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let report = history(&repo);
    assert_eq!(found(&report), expected);
    assert!(
        report
            .files
            .iter()
            .all(|f| f.member.is_none() && f.author.is_some())
    );
    // Binary as they are, they were recognised rather than skipped.
    assert!(report.skipped.is_empty(), "{:#?}", report.skipped);
    let database = report
        .files
        .iter()
        .find(|f| f.kind == FileKind::Keepass)
        .unwrap();
    assert_eq!(database.size, kdbx().len() as u64);

    // Through git's own commands, a range says the same.
    let range = scan_with(
        &scanner(),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::Range(format!("{templates}..{added}")),
        },
    );
    assert_eq!(found(&range), expected);
    let templates_only = scan_with(
        &scanner(),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::Range(format!("{first}..{templates}")),
        },
    );
    assert!(
        templates_only.files.is_empty(),
        "{:#?}",
        templates_only.files
    );

    // On disk there is no blob, and the same content has the same fingerprint.
    let disk = scan_with(
        &scanner(),
        Target::Files {
            root: repo.path().to_path_buf(),
        },
    );
    assert_eq!(disk.files.len(), leaked.len());
    for file in &disk.files {
        assert_eq!(file.blob, None);
        let in_history = report.files.iter().find(|f| f.path == file.path).unwrap();
        assert_eq!(file.id, in_history.id);
    }

    // Suppressed by fingerprint, as a secret is.
    let env = report
        .files
        .iter()
        .find(|f| f.kind == FileKind::EnvFile)
        .unwrap();
    let quieter = scan_with(
        &scanner().suppress([env.id.clone()]),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    );
    assert_eq!(quieter.files.len(), leaked.len() - 1);

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let kinds: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "private_key",
        "pkcs12",
        "keepass",
        "cloud_credentials",
        "npmrc",
        "pypirc",
        "netrc",
        "env_file",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_eq!(json["files"][0]["blob"].as_str().unwrap().len(), 40);
}

#[test]
fn a_key_file_inside_an_archive_is_reported_as_the_archive_s_blob() {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("home/.ssh/id_rsa", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(OPENSSH_KEY.as_bytes()).unwrap();
    let archive = zip.finish().unwrap().into_inner();
    let mut repo = TestRepo::new();
    repo.write("backup/home.zip", &archive);
    let commit = repo.commit("backup");
    let report = history(&repo);
    let file = &report.files[0];
    assert_eq!(
        (file.path.as_deref(), file.member.as_deref(), file.kind),
        (
            Some("backup/home.zip"),
            Some("home/.ssh/id_rsa"),
            FileKind::PrivateKey
        )
    );
    assert_eq!(file.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(file.blob, Some(repo.blob_id(&archive)));
}

#[test]
fn the_largest_blobs_are_listed_largest_first_with_the_commit_and_path_that_brought_them() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut image: Vec<u8> = std::iter::repeat_with(|| rng.u8(..))
        .take(2 << 20)
        .collect();
    image[0] = 0;
    let notes = "a line of release notes\n".repeat(12_000);
    let mut repo = TestRepo::new();
    repo.write("README.md", "# firmware\n");
    let first = repo.commit("initial commit");
    repo.write("firmware/image.bin", &image);
    let added = repo.commit("add the firmware image");
    // The same blob at a second path, and a smaller text file.
    repo.write("backup/image.bin", &image);
    repo.write("NOTES.md", &notes);
    let last = repo.commit("back up the image");
    let image_id = repo.blob_id(&image);

    // Too large to scan, binary: its size in history is what counts.
    let capped = || scanner().with_max_blob_size(1 << 20);
    let report = scan_with(
        &capped(),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    );
    let listed: Vec<(&str, u64, Option<&str>, Option<&str>)> = (report.largest_blobs.iter())
        .map(|b| {
            (
                b.blob.as_str(),
                b.size,
                b.path.as_deref(),
                b.commit.as_deref(),
            )
        })
        .collect();
    let notes_id = repo.blob_id(notes.as_bytes());
    let readme_id = repo.blob_id(b"# firmware\n");
    assert_eq!(
        listed,
        [
            (
                image_id.as_str(),
                2 << 20,
                Some("firmware/image.bin"),
                Some(added.as_str())
            ),
            (
                notes_id.as_str(),
                notes.len() as u64,
                Some("NOTES.md"),
                Some(last.as_str())
            ),
            (
                readme_id.as_str(),
                11,
                Some("README.md"),
                Some(first.as_str())
            ),
        ]
    );
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.reason == SkipReason::TooLarge)
    );
    // Packed, the image's size comes from its pack header, and the listing is the same.
    repo.git(&["repack", "-adq"]);
    let packed = scan_with(
        &capped(),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    );
    assert_eq!(packed.largest_blobs, report.largest_blobs);

    // Read through git's commands (a range), the same.
    let range = scan_with(
        &capped().with_largest_blobs(1),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::Range(format!("{first}..{last}")),
        },
    );
    assert_eq!(range.largest_blobs.len(), 1);
    assert_eq!(range.largest_blobs[0].blob, image_id);
    assert_eq!(
        range.largest_blobs[0].path.as_deref(),
        Some("firmware/image.bin")
    );
    assert_eq!(
        range.largest_blobs[0].commit.as_deref(),
        Some(added.as_str())
    );

    let none = scan_with(
        &scanner().with_largest_blobs(0),
        Target::Git {
            repo: repo.path().to_path_buf(),
            revisions: Revisions::All,
        },
    );
    assert!(none.largest_blobs.is_empty());
    assert!(!none.to_json().contains("largest_blobs"));
    // A directory is no history.
    let disk = scan_with(
        &scanner(),
        Target::Files {
            root: repo.path().to_path_buf(),
        },
    );
    assert!(disk.largest_blobs.is_empty());
}
