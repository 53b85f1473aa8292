//! The history rewrite over real repositories built by the test: every selected value
//! gone from every ref, everything else exactly as it was, checked with git itself on a
//! fresh clone of the bundle.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use deployguard_engine::clean::{
    self, ArchiveFormat, CleanError, CleanOptions, CleanReport, CleanRun, FileSelection, Select,
    Selection,
};
use deployguard_engine::scan::{Report, Revisions, ScanRun, Scanner, Settings, Target};
use deployguard_testkit::{TestRepo, git_in as git};

const GITHUB: &str = "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";
const AWS: &str = "AKIAM6COX6AQXF6LI3U3";
const STRIPE: &str = "sk_live_YqDRV8SKN8qU577SGwdUoxkr";
/// Found by the scan but not selected: it must survive.
const SLACK: &str = "xoxb-319895298309-5514929746018-Gj7tMzkv1HvLOGDQfpzE0F4y";
const SELECTED: [&str; 3] = [GITHUB, AWS, STRIPE];

fn text(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git(dir, args)).into_owned()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A history with secrets everywhere a person could put one.
fn leaky_repository() -> TestRepo {
    let mut repo = TestRepo::new();
    repo.write("README.md", "# service\n");
    repo.commit("initial commit");
    repo.git(&["commit", "-q", "--allow-empty", "-m", "an empty commit"]);
    repo.write(
        "config/app.env",
        format!("GITHUB_TOKEN={GITHUB}\nDEBUG=1\n"),
    );
    repo.write(
        "assets/logo.bin",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10".as_slice(),
    );
    repo.commit("add configuration");
    repo.write(
        "config/app.env",
        format!("GITHUB_TOKEN={GITHUB}\nDEBUG=0\n"),
    );
    repo.commit(&format!("switch debug off (token was {STRIPE})"));
    // A binary file holding a value, next to a text one.
    let mut blob = b"\0\x01\x02header".to_vec();
    blob.extend_from_slice(AWS.as_bytes());
    blob.extend_from_slice(b"\0trailer");
    repo.write("assets/cache.bin", blob);
    repo.write("assets/notes.txt", format!("aws {AWS}\n"));
    repo.commit("add assets");
    repo.tag_annotated("v1.0", &format!("release 1.0, deploy key {STRIPE}"));
    repo.tag("light");

    repo.checkout("feature");
    repo.write(
        "deploy/keys.yml",
        format!("aws_key: {AWS}\nslack: {SLACK}\n"),
    );
    repo.commit("feature: deploy keys");
    repo.write("src/lib.rs", "pub fn f() {}\n");
    repo.commit("feature: code");

    repo.checkout("main");
    repo.write("old/secret.txt", format!("stripe={STRIPE}\n"));
    repo.commit("a file later deleted");
    repo.remove("old/secret.txt");
    repo.commit("delete it");
    // A merge whose result holds a value neither parent had.
    repo.git(&["merge", "-q", "--no-ff", "--no-commit", "feature"]);
    repo.write("MERGED.txt", format!("merged with {GITHUB}\n"));
    repo.commit("merge feature");
    repo.write("README.md", "# service\n\nclean now\n");
    repo.commit("docs");
    repo.git(&["notes", "add", "-m", &format!("note mentioning {AWS}")]);
    let head = repo.head();
    repo.git(&["update-ref", "refs/pull/7/head", &head]);
    repo
}

/// The secrets file the scan writes, as `deployguard scan --secrets-out` would.
/// The whole history of `repo`, scanned with the shipped rules.
fn scan_history(repo: &Path) -> Report {
    let scanner = Scanner::new(&Settings::default()).unwrap();
    scanner
        .scan(
            &Target::Git {
                repo: repo.to_path_buf(),
                revisions: Revisions::All,
            },
            &ScanRun::default(),
        )
        .unwrap()
}

fn secrets_file(repo: &TestRepo) -> (String, Vec<String>) {
    let report = scan_history(repo.path());
    let ids = report
        .secrets
        .iter()
        .filter(|s| SELECTED.iter().any(|v| v.as_bytes() == s.value.as_bytes()))
        .map(|s| s.id.clone())
        .collect::<Vec<_>>();
    assert_eq!(
        ids.len(),
        SELECTED.len(),
        "the scan finds every planted value"
    );
    (report.secrets_file(), ids)
}

struct Cleaned {
    _work: tempfile::TempDir,
    bundle: std::path::PathBuf,
    clone: std::path::PathBuf,
    report: CleanReport,
}

fn clean_into(
    source: &Path,
    selection: &Selection,
) -> Result<Cleaned, (CleanError, tempfile::TempDir)> {
    clean_with(source, selection, &CleanOptions::default())
}

fn clean_with(
    source: &Path,
    selection: &Selection,
    options: &CleanOptions,
) -> Result<Cleaned, (CleanError, tempfile::TempDir)> {
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("cleaned.bundle");
    let scratch = work.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    match clean::clean(
        source,
        &scratch,
        selection,
        options,
        &bundle,
        &CleanRun::default(),
    ) {
        Ok(report) => {
            let clone = work.path().join("clone.git");
            git(
                work.path(),
                &[
                    "clone",
                    "-q",
                    "--mirror",
                    &bundle.to_string_lossy(),
                    &clone.to_string_lossy(),
                ],
            );
            Ok(Cleaned {
                _work: work,
                bundle,
                clone,
                report,
            })
        }
        Err(e) => Err((e, work)),
    }
}

fn refs(dir: &Path) -> Vec<String> {
    text(dir, &["for-each-ref", "--format=%(refname)"])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn cleaning_removes_every_selected_value_from_every_ref_and_keeps_everything_else() {
    let repo = leaky_repository();
    let source = repo.path();
    let refs_before = text(
        source,
        &["for-each-ref", "--format=%(objectname) %(refname)"],
    );
    let (file, ids) = secrets_file(&repo);
    let selection =
        Selection::from_secrets(file.as_bytes(), &Select::Ids(ids), b"***REMOVED***").unwrap();
    let cleaned = clean_into(source, &selection).map_err(|(e, _)| e).unwrap();
    let clone = &cleaned.clone;

    // Not one selected value anywhere: history, messages, tags, notes, or any object.
    let log = git(clone, &["log", "--all", "-p", "--format=%H%n%B"]);
    let objects = git(clone, &["cat-file", "--batch-all-objects", "--batch"]);
    let tags = git(
        clone,
        &["for-each-ref", "--format=%(contents)", "refs/tags"],
    );
    for value in SELECTED {
        assert!(!contains(&log, value), "{value} survives in git log -p");
        assert!(!contains(&objects, value), "{value} survives in an object");
        assert!(!contains(&tags, value), "{value} survives in a tag");
    }
    // The unselected secret stays where it was.
    assert!(contains(&objects, SLACK));
    assert!(contains(&log, "***REMOVED***"));

    // The same refs, the same number of commits, the same shape.
    assert_eq!(refs(clone), refs(source));
    let count = |dir: &Path| text(dir, &["rev-list", "--all", "--count"]);
    assert_eq!(count(clone), count(source));
    let shape = |dir: &Path| {
        text(
            dir,
            &[
                "log",
                "--all",
                "--topo-order",
                "--format=%p|%an|%ae|%ad|%cn|%ce|%cd|%s",
            ],
        )
        .lines()
        .map(|l| {
            let (parents, rest) = l.split_once('|').unwrap();
            format!(
                "{}|{rest}",
                parents.split(' ').filter(|p| !p.is_empty()).count()
            )
        })
        .collect::<Vec<_>>()
    };
    let expected: Vec<String> = shape(source)
        .into_iter()
        .map(|l| l.replace(STRIPE, "***REMOVED***"))
        .collect();
    assert_eq!(shape(clone), expected);
    // Paths and modes of every branch tip are as they were.
    for branch in ["main", "feature"] {
        let paths = |dir: &Path| {
            text(
                dir,
                &["ls-tree", "-r", "--format=%(objectmode) %(path)", branch],
            )
        };
        assert_eq!(paths(clone), paths(source), "{branch}");
    }
    // The empty commit is kept, and history before the first secret keeps its ids.
    assert!(text(clone, &["log", "--all", "--format=%s"]).contains("an empty commit"));
    let root = |dir: &Path| text(dir, &["rev-list", "--max-parents=0", "main"]);
    assert_eq!(root(clone), root(source));
    // Values are replaced in place; binary content is masked byte for byte.
    assert_eq!(
        text(clone, &["show", "main:config/app.env"]),
        "GITHUB_TOKEN=***REMOVED***\nDEBUG=0\n"
    );
    let binary = git(clone, &["show", "main:assets/cache.bin"]);
    let original = git(source, &["show", "main:assets/cache.bin"]);
    assert_eq!(binary.len(), original.len());
    assert_eq!(
        git(clone, &["show", "main:assets/logo.bin"]),
        git(source, &["show", "main:assets/logo.bin"])
    );
    assert!(
        text(clone, &["cat-file", "-p", "v1.0"]).contains("release 1.0, deploy key ***REMOVED***")
    );

    // The report: per-ref ids, forge refs apart, the commit map, nothing from before.
    let report = &cleaned.report;
    assert_eq!(report.forge_refs, vec!["refs/pull/7/head".to_owned()]);
    assert!(report.blobs_rewritten >= 5, "{report:?}");
    assert_eq!(report.tags_rewritten, 1);
    // The commit map names exactly the commits that are gone from the new history.
    let ids = |dir: &Path| -> std::collections::BTreeSet<String> {
        text(dir, &["rev-list", "--all"])
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let (before, after) = (ids(source), ids(clone));
    let replaced: Vec<String> = before.difference(&after).cloned().collect();
    let mut mapped: Vec<String> = report
        .commit_map
        .iter()
        .map(|(old, _)| old.to_hex())
        .collect();
    mapped.sort();
    assert_eq!(mapped, replaced);
    assert!(
        report
            .commit_map
            .iter()
            .all(|(_, new)| after.contains(&new.to_hex()))
    );
    for r in &report.refs {
        assert_eq!(
            text(clone, &["rev-parse", &r.name]).trim(),
            r.new,
            "{}",
            r.name
        );
    }
    assert_eq!(
        refs_before,
        text(
            source,
            &["for-each-ref", "--format=%(objectname) %(refname)"]
        )
    );
    assert!(report.objects_verified > 0);
    assert!(std::fs::metadata(&cleaned.bundle).unwrap().len() > 0);
}

#[test]
fn a_bundle_is_cleaned_to_the_same_history_as_its_repository() {
    let repo = leaky_repository();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("source.bundle");
    git(
        repo.path(),
        &["bundle", "create", "-q", &bundle.to_string_lossy(), "--all"],
    );
    let selection = Selection::from_values(SELECTED, b"***REMOVED***").unwrap();
    let from_repo = clean_into(repo.path(), &selection)
        .map_err(|(e, _)| e)
        .unwrap();
    let from_bundle = clean_into(&bundle, &selection).map_err(|(e, _)| e).unwrap();
    let ids = |dir: &Path| {
        text(
            dir,
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/heads",
                "refs/tags",
            ],
        )
    };
    assert_eq!(ids(&from_bundle.clone), ids(&from_repo.clone));
    assert_eq!(
        text(&from_bundle.clone, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
}

/// Writes a commit object by hand (for headers git only makes with a key).
fn write_commit(repo: &mut TestRepo, raw: &str) -> String {
    repo.git_with_input(
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        Some(raw.as_bytes()),
    )
}

#[test]
fn signatures_stay_on_untouched_commits_and_are_dropped_from_rewritten_ones() {
    let mut repo = TestRepo::new();
    repo.write("a.txt", "safe\n");
    repo.commit("first");
    let tree = repo.git(&["rev-parse", "HEAD^{tree}"]);
    let signature = "gpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n -----END PGP SIGNATURE-----\n";
    let who = "A U Thor <a@example.test> 1700000000 +0000";
    let signed = write_commit(
        &mut repo,
        &format!("tree {tree}\nauthor {who}\ncommitter {who}\n{signature}\nsigned and clean\n"),
    );
    repo.git(&["reset", "-q", "--hard", &signed]);
    repo.write("b.txt", format!("token {GITHUB}\n"));
    repo.commit("add b");
    let tree = repo.git(&["rev-parse", "HEAD^{tree}"]);
    let parent = repo.head();
    let signed_dirty = write_commit(
        &mut repo,
        &format!(
            "tree {tree}\nparent {parent}\nauthor {who}\ncommitter {who}\n{signature}\nsigned on top\n"
        ),
    );
    repo.git(&["update-ref", "refs/heads/main", &signed_dirty]);

    let selection = Selection::from_values([GITHUB], b"***REMOVED***").unwrap();
    let cleaned = clean_into(repo.path(), &selection)
        .map_err(|(e, _)| e)
        .unwrap();
    let clone = &cleaned.clone;
    // The signed commit below the secret keeps its id and its signature.
    assert!(text(clone, &["rev-list", "main"]).contains(&signed));
    assert!(text(clone, &["cat-file", "-p", &signed]).contains("gpgsig"));
    // The signed commit above it is rewritten, unsigned, and reported.
    let tip = text(clone, &["cat-file", "-p", "main"]);
    assert!(!tip.contains("gpgsig"), "{tip}");
    assert!(tip.ends_with("signed on top\n"));
    let dropped: Vec<&str> = cleaned
        .report
        .signatures_dropped
        .iter()
        .map(|d| d.old.as_str())
        .collect();
    assert_eq!(dropped, vec![signed_dirty.as_str()]);
}

#[test]
fn a_value_that_cannot_be_removed_fails_verification_and_writes_nothing() {
    let mut repo = TestRepo::new();
    repo.write("a.txt", "first\n");
    let root = repo.commit("first");
    repo.write("a.txt", "second\n");
    repo.commit("second");
    // The start of a commit id: the next commit names it in its `parent` line, which a
    // rewrite must not change.
    let selection = Selection::from_values([&root[..16]], b"***REMOVED***").unwrap();
    let (error, work) = clean_into(repo.path(), &selection)
        .err()
        .expect("verification fails");
    assert!(
        matches!(
            error,
            CleanError::Verification {
                count: 1,
                kind: "commit",
                ..
            }
        ),
        "{error}"
    );
    assert!(!work.path().join("cleaned.bundle").exists());
    assert!(!work.path().join("cleaned.bundle.partial").exists());
}

#[test]
fn a_value_in_a_file_name_is_removed_from_the_name() {
    let mut repo = TestRepo::new();
    repo.write(&format!("keys/{AWS}.pem"), "-- key --\n");
    repo.write("keys/z.txt", "z\n");
    repo.commit("keys named after themselves");
    let selection = Selection::from_values([AWS], b"REMOVED").unwrap();
    let cleaned = clean_into(repo.path(), &selection)
        .map_err(|(e, _)| e)
        .unwrap();
    let paths = text(&cleaned.clone, &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(paths, "keys/REMOVED.pem\nkeys/z.txt\n");
    // git accepts the rebuilt tree.
    git(&cleaned.clone, &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn a_sha256_repository_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    git(
        dir.path(),
        &[
            "init",
            "-q",
            "--object-format=sha256",
            "-b",
            "main",
            &repo.to_string_lossy(),
        ],
    );
    std::fs::write(repo.join("a.env"), format!("KEY={GITHUB}\n")).unwrap();
    commit_all(&repo, "one");
    std::fs::write(repo.join("b.txt"), "b\n").unwrap();
    commit_all(&repo, "two");
    let selection = Selection::from_values([GITHUB], b"***REMOVED***").unwrap();
    let cleaned = clean_into(&repo, &selection).map_err(|(e, _)| e).unwrap();
    assert_eq!(cleaned.report.object_format, "sha256");
    assert_eq!(
        text(&cleaned.clone, &["show", "main:a.env"]),
        "KEY=***REMOVED***\n"
    );
    git(&cleaned.clone, &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn unusable_sources_are_clear_errors() {
    let selection = Selection::from_values([GITHUB], b"X").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out.bundle");
    let attempt = |source: &Path| {
        let scratch = tempfile::tempdir_in(work.path()).unwrap();
        clean::clean(
            source,
            scratch.path(),
            &selection,
            &CleanOptions::default(),
            &out,
            &CleanRun::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    assert!(attempt(dir.path()).contains("not a git repository or bundle"));
    let garbage = dir.path().join("garbage.bundle");
    std::fs::write(&garbage, b"# v2 git bundle\nnot really\n").unwrap();
    assert!(!attempt(&garbage).is_empty());
    let empty = TestRepo::new();
    assert!(attempt(empty.path()).contains("no refs"));

    let mut full = TestRepo::new();
    full.write("a", "1").commit("one");
    full.write("a", "2").commit("two");
    let shallow = dir.path().join("shallow");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--depth=1",
            &format!("file://{}", full.path().display()),
            &shallow.to_string_lossy(),
        ],
    );
    assert!(attempt(&shallow).contains("shallow"));
    assert!(!out.exists());
}

#[test]
fn a_cancelled_clean_stops_and_writes_nothing() {
    let repo = leaky_repository();
    let selection = Selection::from_values(SELECTED, b"X").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out.bundle");
    let cancel = AtomicBool::new(true);
    let result = clean::clean(
        repo.path(),
        work.path(),
        &selection,
        &CleanOptions::default(),
        &out,
        &CleanRun {
            progress: None,
            cancel: Some(&cancel),
        },
    );
    assert!(matches!(result, Err(CleanError::Cancelled)));
    assert!(!out.exists());
}

#[test]
fn the_archive_unpacks_to_a_ready_clone_of_the_cleaned_history() {
    let mut repo = leaky_repository();
    // A forge's ref: cleaned and in the bundle, but not in a person's clone.
    repo.git(&["update-ref", "refs/pull/1/head", "HEAD"]);
    let selection = Selection::from_values(SELECTED, b"***REMOVED***").unwrap();
    let cleaned = clean_into(repo.path(), &selection)
        .map_err(|(e, _)| e)
        .unwrap();
    let kept = cleaned.report.bundle_index.as_deref();
    assert!(
        kept.is_some_and(Path::is_file),
        "the clean keeps its pack's index"
    );
    // With the clean's index (no re-indexing) and without it (git indexes the pack).
    for (file, format, index) in [
        ("repo.zip", ArchiveFormat::Zip, kept),
        ("repo.tar.gz", ArchiveFormat::TarGz, kept),
        ("unindexed.zip", ArchiveFormat::Zip, None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join(file);
        clean::write_archive(
            &cleaned.bundle,
            index,
            &dir.path().join("scratch"),
            "service",
            &archive,
            format,
        )
        .unwrap();
        let unpacked = dir.path().join("unpacked");
        std::fs::create_dir(&unpacked).unwrap();
        let status = match format {
            ArchiveFormat::Zip => Command::new("unzip")
                .args(["-q"])
                .arg(&archive)
                .arg("-d")
                .arg(&unpacked)
                .status(),
            ArchiveFormat::TarGz => Command::new("tar")
                .arg("xzf")
                .arg(&archive)
                .arg("-C")
                .arg(&unpacked)
                .status(),
        }
        .unwrap();
        assert!(status.success(), "{file}");
        let clone = unpacked.join("service");
        assert_eq!(
            text(&clone, &["status", "--porcelain"]),
            "",
            "{file}: a clean work tree"
        );
        text(&clone, &["fsck", "--full", "--strict", "--no-dangling"]);
        assert_eq!(
            text(&clone, &["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/main"
        );
        assert_eq!(
            std::fs::read_to_string(clone.join("config/app.env")).unwrap(),
            "GITHUB_TOKEN=***REMOVED***\nDEBUG=0\n"
        );
        let branches = text(&clone, &["for-each-ref", "--format=%(refname)"]);
        assert_eq!(
            branches,
            "refs/heads/feature\nrefs/heads/main\nrefs/tags/light\nrefs/tags/v1.0\n"
        );
        let all = git(&clone, &["cat-file", "--batch-all-objects", "--batch"]);
        for value in SELECTED {
            assert!(!contains(&all, value), "{file}: {value}");
        }
    }
}

/// Stages everything in `repo` and commits it.
fn commit_all(repo: &Path, message: &str) {
    git(repo, &["add", "."]);
    git(
        repo,
        &[
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@x",
            "commit",
            "-q",
            "-m",
            message,
        ],
    );
}

/// A repository whose history is packed with deep delta chains (bases named by offset,
/// or by id when `ref_deltas`), plus loose objects.
fn packed_repository(format: &str, ref_deltas: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(
        repo,
        &[
            "init",
            "-q",
            &format!("--object-format={format}"),
            "-b",
            "main",
        ],
    );
    let mut text = String::new();
    for i in 0..40 {
        // Each version differs a little from the last: ideal delta material.
        text.push_str(&format!("line {i}: some configuration value {}\n", i * 7));
        if i == 20 {
            text.push_str(&format!("TOKEN={GITHUB}\n"));
        }
        std::fs::write(repo.join("config.txt"), &text).unwrap();
        commit_all(repo, &format!("v{i}"));
    }
    let offsets = format!("repack.useDeltaBaseOffset={}", !ref_deltas);
    let repack = [
        "-c",
        &offsets,
        "repack",
        "-q",
        "-a",
        "-d",
        "-f",
        "--depth=50",
        "--window=50",
    ];
    git(repo, &repack);
    std::fs::write(repo.join("late.txt"), "written after the repack\n").unwrap();
    commit_all(repo, "loose");
    dir
}

#[test]
fn the_pack_reader_yields_every_object_once_with_content_matching_its_id() {
    use deployguard_engine::git::objects::ObjectFormat;
    use deployguard_engine::git::pack::ObjectStore;
    for (name, format, ref_deltas) in [
        ("sha1", ObjectFormat::Sha1, false),
        ("sha1", ObjectFormat::Sha1, true),
        ("sha256", ObjectFormat::Sha256, false),
    ] {
        let dir = packed_repository(name, ref_deltas);
        let listed = text(
            dir.path(),
            &[
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname)",
            ],
        );
        let mut expected: Vec<&str> = listed.lines().collect();
        expected.sort_unstable();
        let deltas = text(dir.path(), &["count-objects", "-v"]);
        assert!(deltas.contains("in-pack: "), "{deltas}");

        // What an interrupted write leaves behind is not an object.
        let fan = dir.path().join(".git/objects/ab");
        std::fs::create_dir_all(&fan).unwrap();
        std::fs::write(fan.join("tmp_obj_Xy12Zq"), b"partial").unwrap();
        let store = ObjectStore::open(dir.path(), format).unwrap();
        let mut seen: Vec<String> = Vec::new();
        store
            .for_each(
                dir.path(),
                2,
                |oid, kind, data| (oid, format.hash(kind, data)),
                |(oid, hashed)| -> Result<(), deployguard_engine::git::GitError> {
                    assert_eq!(
                        oid, hashed,
                        "{name}: content of {oid} does not hash to its id"
                    );
                    seen.push(oid.to_hex());
                    Ok(())
                },
            )
            .unwrap();
        seen.sort_unstable();
        assert_eq!(seen, expected, "{name}");
    }
}

#[test]
fn a_packed_repository_is_cleaned_the_same_as_a_loose_one() {
    let dir = packed_repository("sha1", false);
    let loose = tempfile::tempdir().unwrap();
    // The same history, unpacked into loose objects only.
    let copy = loose.path().join("copy");
    git(
        loose.path(),
        &[
            "clone",
            "-q",
            "--no-local",
            &dir.path().to_string_lossy(),
            &copy.to_string_lossy(),
        ],
    );
    let pack = std::fs::read_dir(copy.join(".git/objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .unwrap();
    let moved = loose.path().join("moved.pack");
    std::fs::rename(&pack, &moved).unwrap();
    std::fs::remove_file(pack.with_extension("idx")).unwrap();
    let out = Command::new("git")
        .arg("-C")
        .arg(&copy)
        .args(["unpack-objects", "-q"])
        .stdin(std::fs::File::open(&moved).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let selection = Selection::from_values([GITHUB], b"***REMOVED***").unwrap();
    let packed = clean_into(dir.path(), &selection)
        .map_err(|(e, _)| e)
        .unwrap();
    let unpacked = clean_into(&copy, &selection).map_err(|(e, _)| e).unwrap();
    let main = |c: &Cleaned| text(&c.clone, &["rev-parse", "refs/heads/main"]);
    assert_eq!(main(&packed), main(&unpacked));
    assert_eq!(packed.report.commits_rewritten, 21);
    assert!(!text(&packed.clone, &["log", "-p", "main"]).contains(GITHUB));
}

/// Each object of the one pack in `objects/pack` under `dir`, with its delta base when
/// it is stored as a delta (`git verify-pack -v`).
fn pack_entries(dir: &Path) -> std::collections::HashMap<String, Option<String>> {
    let idx = std::fs::read_dir(dir.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .unwrap();
    text(dir, &["verify-pack", "-v", &idx.to_string_lossy()])
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let kind = *fields.get(1)?;
            if !["commit", "tree", "blob", "tag"].contains(&kind) {
                return None;
            }
            Some((fields[0].to_owned(), fields.get(6).map(|b| (*b).to_owned())))
        })
        .collect()
}

#[test]
fn the_bundle_keeps_the_source_s_deltas_and_stores_whole_what_was_built_on_a_rewritten_object() {
    for ref_deltas in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.git");
        let original = packed_repository("sha1", ref_deltas);
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--mirror",
                &original.path().to_string_lossy(),
                &source.to_string_lossy(),
            ],
        );
        // One pack holding every object.
        git(&source, &["repack", "-q", "-a", "-d"]);
        let before = pack_entries(&source);
        let selection = Selection::from_values([GITHUB], b"***REMOVED***").unwrap();
        let cleaned = clean_into(&source, &selection).map_err(|(e, _)| e).unwrap();
        git(
            &cleaned.clone,
            &["fsck", "--full", "--strict", "--no-dangling"],
        );
        let bundle = cleaned.bundle.to_string_lossy().into_owned();
        git(&cleaned.clone, &["bundle", "verify", "-q", &bundle]);
        let after = pack_entries(&cleaned.clone);
        let mut kept_deltas = 0;
        let mut made_whole = 0;
        for (oid, base) in &after {
            let Some(source_base) = before.get(oid) else {
                continue; // rewritten
            };
            match source_base {
                Some(b) if after.contains_key(b) => {
                    assert_eq!(base.as_ref(), Some(b), "{oid} keeps its delta base");
                    kept_deltas += 1;
                }
                Some(_) => {
                    assert_eq!(base, &None, "{oid}: its base was rewritten");
                    made_whole += 1;
                }
                None => assert_eq!(base, &None, "{oid} stays whole"),
            }
        }
        // The history's first versions are deltas of later ones that held the token.
        assert!(
            kept_deltas > 0 && made_whole > 0,
            "{kept_deltas} {made_whole}"
        );
        assert!(!text(&cleaned.clone, &["log", "-p", "--all"]).contains(GITHUB));
    }
}

#[test]
fn the_bundle_holds_exactly_what_the_cleaned_refs_reach() {
    let mut repo = TestRepo::new();
    // Two files that differ only in their secret become one blob.
    repo.write("a.env", format!("KEY={GITHUB}\n"));
    repo.write("b.env", format!("KEY={AWS}\n"));
    repo.write("README.md", "# service\n");
    repo.commit("config");
    repo.write("README.md", "# service\n\nmore\n");
    repo.commit("docs");
    // Objects no ref reaches: a blob holding a value and a commit holding it.
    let dangling_blob = repo.git_with_input(
        &["hash-object", "-w", "--stdin"],
        Some(format!("lost {STRIPE}\n").as_bytes()),
    );
    let dangling_blob = dangling_blob.trim().to_owned();
    let tree = repo.git_with_input(
        &["mktree"],
        Some(format!("100644 blob {dangling_blob}\tlost.txt\n").as_bytes()),
    );
    let dangling_commit = repo.git(&["commit-tree", tree.trim(), "-m", "dangling"]);
    let dangling_commit = dangling_commit.trim().to_owned();

    let selection = Selection::from_values([GITHUB, AWS, STRIPE], b"***REMOVED***").unwrap();
    let cleaned = clean_into(repo.path(), &selection)
        .map_err(|(e, _)| e)
        .unwrap();
    let listed = text(&cleaned.clone, &["rev-list", "--objects", "--all"]);
    let mut reached: Vec<&str> = listed
        .lines()
        .map(|line| line.split(' ').next().unwrap())
        .collect();
    reached.sort_unstable();
    let mut packed: Vec<String> = pack_entries(&cleaned.clone).into_keys().collect();
    packed.sort_unstable();
    assert_eq!(
        packed, reached,
        "the pack holds what the refs reach, each once"
    );
    assert_eq!(cleaned.report.objects_verified, reached.len() as u64);
    assert!(!packed.contains(&dangling_blob) && !packed.contains(&dangling_commit));
    let head_tree = text(&cleaned.clone, &["ls-tree", "HEAD"]);
    let blob = |name: &str| {
        head_tree
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_owned()
    };
    assert_eq!(blob("a.env"), blob("b.env"));
}

#[test]
fn a_value_in_a_ref_name_is_refused_without_naming_the_ref() {
    let mut repo = TestRepo::new();
    repo.write("a.txt", format!("{AWS}\n"));
    repo.commit("one");
    repo.tag(&format!("deploy-{AWS}"));
    let selection = Selection::from_values([AWS], b"X").unwrap();
    let (error, work) = clean_into(repo.path(), &selection).err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("1 ref(s) (tags)"), "{message}");
    assert!(!message.contains(AWS), "{message}");
    assert!(!work.path().join("cleaned.bundle").exists());
}

#[test]
fn a_value_that_is_not_utf8_is_found_and_cleaned_as_bytes() {
    // A Latin-1 configuration file: the password holds bytes that are not UTF-8.
    let password: &[u8] = b"Gr\xfc\xdfe-Geheim-9x7Qk2Lm";
    let mut repo = TestRepo::new();
    let mut file = b"DB_PASSWORD=\"".to_vec();
    file.extend_from_slice(password);
    file.extend_from_slice(b"\"\nDB_HOST=db\n");
    repo.write("config/app.env", file);
    repo.commit("add configuration");
    repo.write("config/app.env", "DB_HOST=db\n");
    repo.commit("move the password out");

    let report = scan_history(repo.path());
    let found = report
        .secrets
        .iter()
        .find(|s| s.value.as_bytes() == password)
        .unwrap_or_else(|| panic!("the Latin-1 password is not found: {:#?}", report.secrets));
    // The secrets file carries it as base64; read back, it is the same bytes.
    let file = report.secrets_file();
    assert!(file.contains("value_base64"), "{file}");
    let selection =
        Selection::from_secrets(file.as_bytes(), &Select::Ids(vec![found.id.clone()]), b"X")
            .unwrap();
    let cleaned = clean_into(repo.path(), &selection)
        .map_err(|(e, _)| e)
        .unwrap();
    let objects = git(
        &cleaned.clone,
        &["cat-file", "--batch-all-objects", "--batch"],
    );
    assert!(
        !objects.windows(password.len()).any(|w| w == password),
        "the password survives in an object"
    );
    let first = text(&cleaned.clone, &["log", "--reverse", "--format=%H", "main"]);
    let first = first.lines().next().unwrap();
    assert_eq!(
        git(
            &cleaned.clone,
            &["show", &format!("{first}:config/app.env")]
        ),
        b"DB_PASSWORD=\"X\"\nDB_HOST=db\n"
    );
}

#[test]
fn a_cleaned_history_stays_as_small_as_the_original_and_keeps_thousands_of_refs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    // A large file that does not compress (each line a different pseudo-random word)
    // holding the value in every version, edited a little per commit: whole, the 30
    // rewritten versions would take thirty times what their deltas take. Large enough
    // (700 KB) for the pack reader to hand versions to another thread, so that a
    // version's rewrite may be done before its base's.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut lines: Vec<String> = (0..28000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{state:016x}{:08x}", state.rotate_left(23) as u32)
        })
        .collect();
    lines[3000] = format!("TOKEN={GITHUB}");
    for version in 0..30 {
        lines[version * 900] = format!("edited in version {version}");
        std::fs::write(repo.join("data.txt"), lines.join("\n")).unwrap();
        commit_all(repo, &format!("v{version}"));
    }
    // Thousands of refs, as a forge's pull requests.
    let refs: String = (0..3000)
        .map(|n| format!("create refs/pull/{n}/head HEAD~{}\n", n % 30))
        .collect();
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(refs.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    git(repo, &["repack", "-q", "-a", "-d"]);
    let source_pack: u64 = std::fs::read_dir(repo.join(".git/objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();

    let selection = Selection::from_values([GITHUB], b"***REMOVED***").unwrap();
    let cleaned = clean_into(repo, &selection).map_err(|(e, _)| e).unwrap();
    assert_eq!(cleaned.report.blobs_rewritten, 30);
    let bundle = std::fs::metadata(&cleaned.bundle).unwrap().len();
    assert!(
        bundle < source_pack * 6 / 5 + 256 * 1024,
        "bundle of {bundle} bytes from a pack of {source_pack}"
    );
    assert_eq!(refs_count(&cleaned.clone), 3001);
    let fsck = Command::new("git")
        .arg("-C")
        .arg(&cleaned.clone)
        .args(["fsck", "--strict", "--no-dangling"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert!(!text(&cleaned.clone, &["log", "-p", "--all"]).contains(GITHUB));
}

fn refs_count(dir: &Path) -> usize {
    refs(dir).len()
}

#[test]
fn packs_written_here_are_indexed_exactly_as_git_indexes_them() {
    use deployguard_engine::git::objects::{Kind, ObjectFormat, PackWriter};
    for (name, format) in [
        ("sha1", ObjectFormat::Sha1),
        ("sha256", ObjectFormat::Sha256),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo.git");
        git(
            dir.path(),
            &[
                "init",
                "-q",
                "--bare",
                &format!("--object-format={name}"),
                &repo.to_string_lossy(),
            ],
        );
        let base: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut edited = base.clone();
        edited.splice(5000..5010, *b"replaced!!");
        let mut pack = PackWriter::create(&repo, format).unwrap();
        let first = pack.add(Kind::Blob, &base).unwrap();
        let second = pack
            .add_against(Kind::Blob, &edited, Some((first, &base)))
            .unwrap();
        // Written once however often it is added; a delta never names itself.
        assert_eq!(pack.add(Kind::Blob, &base).unwrap(), first);
        let third = pack
            .add_against(Kind::Blob, b"small", Some((first, &base)))
            .unwrap();
        pack.finish().unwrap();

        let packs = repo.join("objects/pack");
        let files: Vec<_> = std::fs::read_dir(&packs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let pack_file = files
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == "pack"))
            .unwrap();
        let ours = std::fs::read(pack_file.with_extension("idx")).unwrap();
        let theirs = dir.path().join("theirs.idx");
        git(
            &repo,
            &[
                "index-pack",
                "-o",
                &theirs.to_string_lossy(),
                &pack_file.to_string_lossy(),
            ],
        );
        assert_eq!(ours, std::fs::read(&theirs).unwrap(), "{name}");
        let verified = text(&repo, &["verify-pack", "-v", &pack_file.to_string_lossy()]);
        // The edited version is stored as a delta of the first, at depth 1.
        assert!(
            verified.contains(&format!("{second} blob"))
                && verified.contains("chain length = 1: 1 object"),
            "{verified}"
        );
        assert_eq!(git(&repo, &["cat-file", "blob", &second.to_hex()]), edited);
        assert_eq!(git(&repo, &["cat-file", "blob", &third.to_hex()]), b"small");
    }
}

#[test]
fn a_secret_found_inside_base64_is_reported_there_and_its_encoded_text_is_cleaned_away() {
    use base64::Engine as _;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let encoded_token = b64(GITHUB);
    let registry_auth = b64("ci-bot:Hs7kLq2Vx9Pm4Tz");
    let docker_config = b64(&format!(
        r#"{{"auths":{{"registry.acme.io":{{"auth":"{registry_auth}"}}}}}}"#
    ));
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ci\ntype: Opaque\ndata:\n  \
         GITHUB_TOKEN: {encoded_token}\n  .dockerconfigjson: {docker_config}\n  \
         greeting: {}\n",
        b64("hello, this is not a secret at all")
    );
    let mut repo = TestRepo::new();
    repo.write("README.md", "# service\n");
    repo.commit("initial commit");
    repo.write("k8s/secret.yaml", &manifest);
    repo.commit("add the CI secret");
    repo.remove("k8s/secret.yaml");
    repo.commit("remove it");

    let mut report = scan_history(repo.path());
    let github = report
        .secrets
        .iter()
        .find(|s| s.rule_id == "github-personal-access-token")
        .expect("the encoded token is found");
    assert_eq!(github.value.as_bytes(), GITHUB.as_bytes());
    let at = &github.occurrences[0];
    assert_eq!(
        (at.path.as_deref(), at.line, at.column, at.encoding),
        (
            Some("k8s/secret.yaml"),
            7,
            17,
            Some(deployguard_engine::scan::Encoding::Base64)
        ),
        "reported at the encoded text"
    );
    let docker = report
        .secrets
        .iter()
        .find(|s| s.rule_id == "docker-config-auth")
        .expect("the registry credentials two encodings deep are found");
    assert_eq!(docker.value.as_bytes(), registry_auth.as_bytes());
    assert_eq!(docker.occurrences[0].line, 8);
    // Nothing else: the greeting decodes to text that holds no secret.
    assert_eq!(report.secrets.len(), 2, "{:?}", report.secrets);
    // The service keeps the report with its values revealed; it reads back the same.
    report.reveal_values();
    let json = report.to_json();
    assert!(json.contains("\"encoding\": \"base64\""), "{json}");

    let selection = Selection::from_secrets(
        report.secrets_file().as_bytes(),
        &Select::All,
        clean::DEFAULT_REPLACEMENT.as_bytes(),
    )
    .unwrap();
    let cleaned = clean_into(repo.path(), &selection).unwrap_or_else(|(e, _)| panic!("{e}"));
    let history = git(&cleaned.clone, &["log", "--all", "-p", "--format=%H %s"]);
    for gone in [
        encoded_token.as_str(),
        docker_config.as_str(),
        GITHUB,
        &registry_auth,
    ] {
        assert!(!contains(&history, gone), "{gone} is still in the history");
    }
    for kept in ["kind: Secret", "greeting: aGVsbG8s", "add the CI secret"] {
        assert!(contains(&history, kept), "{kept} was lost");
    }
}

#[test]
fn secrets_in_hex_percent_escaped_and_utf16_text_are_reported_encoded_and_cleaned_away() {
    use deployguard_engine::scan::Encoding;
    const AWS_SECRET: &str = "siLbzGpvkw+Vx5CwGHMzYMDbNSzRVCAUX0Y3+je4";
    let hex_token = hex::encode(format!("GITHUB_TOKEN={GITHUB}"));
    let percent_secret = AWS_SECRET.replace('+', "%2B");
    let escaped_stripe: String = STRIPE[..8].bytes().map(|b| format!("\\u{b:04x}")).collect();
    let escaped_stripe = format!("{escaped_stripe}{}", &STRIPE[8..]);
    let utf16 = |text: &str| -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    };
    let slack_line =
        format!("[HKEY_CURRENT_USER\\Software\\Acme]\r\n\"SlackToken\"=\"{SLACK}\"\r\n");
    let mut repo = TestRepo::new();
    repo.write("README.md", "# service\n");
    repo.commit("initial commit");
    repo.write(
        "fixtures/payload.txt",
        format!("payload = \"{hex_token}\"\n"),
    );
    repo.write(
        "deploy/hook.sh",
        format!(
            "curl \"https://sync.acme.io/hook?aws_secret_access_key={percent_secret}&region=eu\"\n"
        ),
    );
    repo.write(
        "config/app.json",
        format!("{{\"home\": \"https:\\/\\/acme.io\\/\", \"stripe\": \"{escaped_stripe}\"}}\n"),
    );
    repo.write("windows/acme.reg", utf16(&slack_line));
    repo.commit("add integrations");

    let mut report = scan_history(repo.path());
    let found = |value: &str| {
        report
            .secrets
            .iter()
            .find(|s| s.value.as_bytes() == value.as_bytes())
            .unwrap_or_else(|| panic!("{value} not found in {:#?}", report.secrets))
    };
    let at = |value: &str| {
        let o = &found(value).occurrences[0];
        (
            o.path.clone().unwrap_or_default(),
            o.line,
            o.column,
            o.encoding,
        )
    };
    assert_eq!(
        at(GITHUB),
        ("fixtures/payload.txt".into(), 1, 12, Some(Encoding::Hex))
    );
    // Percent-encoded and escaped text: at the characters that spell the secret.
    assert_eq!(
        at(AWS_SECRET),
        ("deploy/hook.sh".into(), 1, 55, Some(Encoding::Percent))
    );
    assert_eq!(
        at(STRIPE),
        ("config/app.json".into(), 1, 44, Some(Encoding::Escaped))
    );
    assert_eq!(
        at(SLACK),
        ("windows/acme.reg".into(), 2, 15, Some(Encoding::Utf16))
    );
    assert_eq!(report.secrets.len(), 4, "{:#?}", report.secrets);
    report.reveal_values();
    let selection = Selection::from_secrets(
        report.secrets_file().as_bytes(),
        &Select::All,
        clean::DEFAULT_REPLACEMENT.as_bytes(),
    )
    .unwrap();
    let cleaned = clean_into(repo.path(), &selection).unwrap_or_else(|(e, _)| panic!("{e}"));
    let history = git(
        &cleaned.clone,
        &["log", "--all", "-p", "--text", "--format=%H %s"],
    );
    for gone in [&hex_token, &percent_secret, &escaped_stripe] {
        assert!(!contains(&history, gone), "{gone} is still in the history");
    }
    let slack16 = &utf16(SLACK)[2..];
    assert!(
        !history.windows(slack16.len()).any(|w| w == slack16),
        "the UTF-16 token is still in the history"
    );
    for kept in [
        "https:\\/\\/acme.io",
        "&region=eu",
        "payload = ",
        "add integrations",
    ] {
        assert!(contains(&history, kept), "{kept} was lost");
    }
}

#[test]
fn a_multi_part_secret_is_reported_with_its_parts_and_cleaned_away_whole() {
    const KEY_ID: &str = "AKIAQ3EGRB5LVDWXHK7N";
    const SECRET_KEY: &str = "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";
    const CSV_ID: &str = "ASIAZ2KD7QF4MNB3XWPL";
    const CSV_SECRET: &str = "Tz4mWq8+Lp2Vx7Rk9Nd3Bf6Hs1Jc5Gy0Ua/EoQiZ";
    const SID: &str = "AC0f3e9b2d7c4a18e5f6b0c9d2e7a4f1b3";
    const TWILIO: &str = "8d2f6a0c4e9b7d1f3a5c8e0b2d4f6a9c";
    let mut repo = TestRepo::new();
    repo.write("README.md", "# service\n");
    repo.commit("initial commit");
    repo.write(
        "deploy/.env",
        format!(
            "AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_REGION=eu-west-1\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n\
             TWILIO_ACCOUNT_SID={SID}\nTWILIO_AUTH_TOKEN={TWILIO}\n"
        ),
    );
    repo.write(
        "ops/credentials.csv",
        format!("User name,Access key ID,Secret access key\ndeploy-bot,{CSV_ID},{CSV_SECRET}\n"),
    );
    repo.commit("add credentials");

    let mut report = scan_history(repo.path());
    let summary: Vec<(&str, Vec<(&str, &str)>)> = report
        .secrets
        .iter()
        .map(|s| {
            let parts = s
                .parts
                .iter()
                .map(|p| (p.name.as_str(), p.preview.as_str()));
            (s.rule_id.as_str(), parts.collect())
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("aws-access-key-id", vec![]),
            ("aws-secret-access-key", vec![("access key id", "AKI…K7N")]),
            ("twilio-auth-token", vec![("account sid", "AC0…1b3")]),
            ("aws-access-key-id", vec![]),
            ("aws-access-key-pair", vec![("access key id", "ASI…WPL")]),
        ],
        "the key ids are parts, and findings of their own"
    );
    let text = report.to_text(false);
    assert!(text.contains("with access key id AKI…K7N"), "{text}");
    report.reveal_values();
    let file = report.secrets_file();
    assert!(file.contains(KEY_ID) && file.contains(SID), "{file}");

    // Selecting the AWS secret key alone removes its key id too, and nothing else.
    let aws = &report.secrets[1];
    let selection = Selection::from_secrets(
        file.as_bytes(),
        &Select::Ids(vec![aws.id.clone()]),
        clean::DEFAULT_REPLACEMENT.as_bytes(),
    )
    .unwrap();
    let cleaned = clean_into(repo.path(), &selection).unwrap_or_else(|(e, _)| panic!("{e}"));
    let history = git(&cleaned.clone, &["log", "--all", "-p", "--format=%H %s"]);
    for gone in [KEY_ID, SECRET_KEY] {
        assert!(!contains(&history, gone), "{gone} is still in the history");
    }
    for kept in [SID, TWILIO, CSV_ID, CSV_SECRET, "AWS_REGION=eu-west-1"] {
        assert!(contains(&history, kept), "{kept} was lost");
    }
}

/// git's output without the trailing newline.
fn trimmed(dir: &Path, args: &[&str]) -> String {
    text(dir, args).trim_end().to_owned()
}

fn files(paths: &[&str], blobs: &[String], bigger_than: Option<u64>) -> Selection {
    let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
    Selection::files_only(FileSelection::new(&paths, blobs, bigger_than).unwrap()).unwrap()
}

/// Every path of every commit the refs reach, as `commit path` lines.
fn all_paths(repo: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for commit in trimmed(repo, &["rev-list", "--all"]).lines() {
        for path in trimmed(repo, &["ls-tree", "-r", "--name-only", commit]).lines() {
            out.push((commit.to_owned(), path.to_owned()));
        }
    }
    out
}

fn blob_in(repo: &Path, blob: &str) -> bool {
    trimmed(repo, &["rev-list", "--objects", "--all"])
        .lines()
        .any(|l| l.starts_with(blob))
}

/// `.env` added, changed, renamed within the tree and deleted, on two branches; a
/// `.env.example` beside it; and a merge.
fn dotenv_repository() -> TestRepo {
    let mut repo = TestRepo::new();
    repo.write("README.md", "app\n")
        .write(".env", "DB_PASSWORD=first\n")
        .write(".env.example", "DB_PASSWORD=\n")
        .commit("add env");
    repo.write(".env", "DB_PASSWORD=second\n")
        .commit("change env");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.rename(".env", "service/.env").commit("move env");
    repo.write("service/main.rs", "fn main() {}\n")
        .commit("code");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("docs.md", "docs\n").commit("docs");
    repo.merge("feature", "merge feature");
    repo.remove("service/.env").commit("delete env");
    repo.tag_annotated("v1", "release");
    repo
}

#[test]
fn a_deleted_path_is_gone_from_every_commit_of_every_branch() {
    let repo = dotenv_repository();
    let env_blobs: Vec<String> = ["DB_PASSWORD=first\n", "DB_PASSWORD=second\n"]
        .iter()
        .map(|c| git_blob_id(repo.path(), c))
        .collect();
    let cleaned = clean_into(repo.path(), &files(&["**/.env"], &[], None)).unwrap();
    let paths = all_paths(&cleaned.clone);
    assert!(!paths.is_empty());
    assert!(
        paths
            .iter()
            .all(|(_, p)| !p.ends_with("/.env") && p != ".env"),
        "{paths:?}"
    );
    assert!(paths.iter().any(|(_, p)| p == ".env.example"));
    assert!(paths.iter().any(|(_, p)| p == "service/main.rs"));
    for blob in &env_blobs {
        assert!(!blob_in(&cleaned.clone, blob), "blob {blob} survived");
    }
    let files = cleaned.report.files.as_ref().unwrap();
    assert!(files.entries_removed >= 4, "{files:?}");
    assert_eq!(files.blobs_removed, 2);
    assert!(files.unmatched.is_empty());
    // Same shape: every commit kept (none became empty by default).
    assert_eq!(
        trimmed(&cleaned.clone, &["rev-list", "--all", "--count"]).trim(),
        trimmed(repo.path(), &["rev-list", "--all", "--count"]).trim()
    );
    assert!(trimmed(&cleaned.clone, &["fsck", "--strict"]).is_empty());
}

fn git_blob_id(repo: &Path, content: &str) -> String {
    let out = Command::new("git")
        .args(["hash-object", "--stdin"])
        .current_dir(repo)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(content.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_anchored_path_is_removed_only_where_it_is_and_not_from_the_same_tree_elsewhere() {
    let mut repo = TestRepo::new();
    // The same directory (one tree object) at two paths: only config/ loses prod.env.
    repo.write("config/prod.env", "KEY=1\n")
        .write("config/app.toml", "a = 1\n")
        .write("vendor/config/prod.env", "KEY=1\n")
        .write("vendor/config/app.toml", "a = 1\n")
        .commit("configs");
    repo.write("other.txt", "x\n").commit("more");
    let before = trimmed(repo.path(), &["rev-parse", "HEAD:config"]);
    assert_eq!(
        before,
        trimmed(repo.path(), &["rev-parse", "HEAD:vendor/config"])
    );
    let cleaned = clean_into(repo.path(), &files(&["config/prod.env"], &[], None)).unwrap();
    let paths = all_paths(&cleaned.clone);
    assert!(
        !paths.iter().any(|(_, p)| p == "config/prod.env"),
        "{paths:?}"
    );
    assert!(paths.iter().any(|(_, p)| p == "config/app.toml"));
    assert_eq!(
        paths
            .iter()
            .filter(|(_, p)| p == "vendor/config/prod.env")
            .count(),
        2,
        "the same tree at another path keeps the file: {paths:?}"
    );
    assert!(trimmed(&cleaned.clone, &["fsck", "--strict"]).is_empty());
}

#[test]
fn a_big_blob_is_stripped_while_a_protected_tip_keeps_its_current_file() {
    let mut repo = TestRepo::new();
    let big_old: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut big_new = big_old.clone();
    big_new[0] ^= 1;
    repo.write("small.txt", "small\n")
        .write("build/app.bin", &big_old)
        .commit("artifact");
    repo.write("build/app.bin", &big_new).commit("new artifact");
    let old_id = trimmed(repo.path(), &["rev-parse", "HEAD~1:build/app.bin"]);
    let new_id = trimmed(repo.path(), &["rev-parse", "HEAD:build/app.bin"]);
    let tip_tree = trimmed(repo.path(), &["rev-parse", "HEAD^{tree}"]);
    let cleaned = clean_with(
        repo.path(),
        &files(&[], &[], Some(10 << 20)),
        &CleanOptions {
            protect_refs: vec!["main".into()],
            ..CleanOptions::default()
        },
    )
    .unwrap();
    let clone = &cleaned.clone;
    assert!(!blob_in(clone, &old_id), "the old 20 MB blob is stripped");
    assert!(blob_in(clone, &new_id), "the protected tip keeps its file");
    assert_eq!(trimmed(clone, &["rev-parse", "main^{tree}"]), tip_tree);
    assert_eq!(
        trimmed(clone, &["ls-tree", "-r", "--name-only", "main~1"]),
        "small.txt"
    );
    let protected = &cleaned.report.protected;
    assert_eq!(protected.len(), 1);
    assert_eq!(protected[0].name, "refs/heads/main");
    assert_eq!(protected[0].files, 1, "the tip still holds a big blob");
    assert!(
        cleaned
            .report
            .next_steps
            .iter()
            .any(|s| s.contains("refs/heads/main")),
        "{:?}",
        cleaned.report.next_steps
    );
}

#[test]
fn first_changed_commits_and_the_commit_map_match_the_result() {
    let repo = dotenv_repository();
    let cleaned = clean_into(repo.path(), &files(&[".env"], &[], None)).unwrap();
    let report = &cleaned.report;
    let clone = &cleaned.clone;
    // Every old commit of the map is gone, every new one is there.
    let now: Vec<String> = trimmed(clone, &["rev-list", "--all"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!report.commit_map.is_empty());
    for (old, new) in &report.commit_map {
        assert!(now.contains(&new.to_hex()), "{new}");
        assert!(!now.contains(&old.to_hex()), "{old}");
    }
    // Unchanged commits are not in the map and are still there.
    let before: Vec<String> = trimmed(repo.path(), &["rev-list", "--all"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(before.len(), now.len());
    let mapped = before
        .iter()
        .filter(|c| report.commit_map.iter().any(|(old, _)| &old.to_hex() == *c))
        .count();
    assert_eq!(mapped, report.commit_map.len());
    // The first changed commit of main is the oldest rewritten one on its first-parent
    // line: the root commit (it added .env).
    let main = report
        .first_changed
        .iter()
        .find(|f| f.name == "refs/heads/main")
        .unwrap();
    let root_old = trimmed(repo.path(), &["rev-list", "--max-parents=0", "main"]);
    assert_eq!(main.old, root_old);
    let root_new = trimmed(clone, &["rev-list", "--max-parents=0", "main"]);
    assert_eq!(main.new, root_new);
    assert!(
        report
            .first_changed
            .iter()
            .any(|f| f.name == "refs/tags/v1")
    );
}

#[test]
fn commits_that_become_empty_are_dropped_only_when_asked() {
    let mut repo = TestRepo::new();
    repo.write("a.txt", "a\n").commit("a");
    repo.write("secret.key", "k1\n").commit("add key");
    repo.write("secret.key", "k2\n").commit("change key");
    repo.git(&["commit", "-q", "--allow-empty", "-m", "empty before"]);
    repo.write("b.txt", "b\n").commit("b");
    let selection = files(&["secret.key"], &[], None);
    let kept = clean_into(repo.path(), &selection).unwrap();
    assert_eq!(
        trimmed(&kept.clone, &["rev-list", "--count", "main"]),
        "5",
        "history shape kept by default"
    );
    let pruned = clean_with(
        repo.path(),
        &selection,
        &CleanOptions {
            prune_empty: true,
            ..CleanOptions::default()
        },
    )
    .unwrap();
    let log = trimmed(&pruned.clone, &["log", "--format=%s", "main"]);
    assert_eq!(log, "b\nempty before\na", "the two key commits are dropped");
    assert_eq!(pruned.report.commits_pruned, 2);
    assert!(trimmed(&pruned.clone, &["fsck", "--strict"]).is_empty());
}

#[test]
fn commit_ids_quoted_in_messages_point_at_the_new_commits() {
    let mut repo = TestRepo::new();
    repo.write("id_rsa", "key\n").commit("add key");
    let first = repo.head();
    repo.write("a.txt", "a\n")
        .commit(&format!("fix the bug from {} (see {first})", &first[..10]));
    let cleaned = clean_into(repo.path(), &files(&["id_rsa"], &[], None)).unwrap();
    let new_first = trimmed(&cleaned.clone, &["rev-list", "--max-parents=0", "main"]);
    let message = trimmed(&cleaned.clone, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(
        message,
        format!("fix the bug from {} (see {new_first})", &new_first[..10])
    );
    assert_eq!(cleaned.report.message_ids_rewritten, 2);
}

#[test]
fn lfs_objects_no_pointer_names_any_more_are_reported() {
    let mut repo = TestRepo::new();
    let pointer = |n: char| {
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 12345\n",
            n.to_string().repeat(64)
        )
    };
    repo.write("assets/dump.sql", pointer('a'))
        .write("assets/logo.png", pointer('b'))
        .commit("assets");
    let cleaned = clean_into(repo.path(), &files(&["*.sql"], &[], None)).unwrap();
    assert_eq!(
        cleaned.report.lfs_orphaned,
        vec![format!("sha256:{}", "a".repeat(64))]
    );
}

#[test]
fn bad_file_selections_are_refused_and_a_pattern_that_matches_nothing_is_a_warning() {
    let repo = dotenv_repository();
    let cleaned = clean_into(repo.path(), &files(&["*.p12", ".env"], &[], None)).unwrap();
    assert_eq!(
        cleaned.report.files.as_ref().unwrap().unmatched,
        vec!["*.p12".to_owned()]
    );
    let missing = clean_with(
        repo.path(),
        &files(&[".env"], &[], None),
        &CleanOptions {
            protect_refs: vec!["no-such-branch".into()],
            ..CleanOptions::default()
        },
    );
    let Err((CleanError::UnknownRef(name), _)) = missing else {
        panic!("a missing ref is an error");
    };
    assert_eq!(name, "no-such-branch");
    for (paths, size) in [(vec![String::new()], None), (vec![], Some(0))] {
        assert!(FileSelection::new(&paths, &[], size).is_err());
    }
    assert!(Selection::files_only(FileSelection::default()).is_err());
}

#[test]
fn a_directory_left_empty_by_a_removal_goes_too() {
    let mut repo = TestRepo::new();
    repo.write("keys/id_rsa", "key\n")
        .write("src/main.rs", "fn main() {}\n")
        .commit("code and key");
    let cleaned = clean_into(repo.path(), &files(&["id_rsa"], &[], None)).unwrap();
    assert_eq!(
        trimmed(&cleaned.clone, &["ls-tree", "--name-only", "main"]),
        "src"
    );
    assert!(trimmed(&cleaned.clone, &["fsck", "--strict"]).is_empty());
}

#[test]
fn a_submodule_entry_is_removed_by_its_path_and_kept_otherwise() {
    let mut repo = TestRepo::new();
    repo.write("README.md", "app\n").commit("app");
    let head = repo.head();
    for path in ["vendor/secrets", "vendor/lib"] {
        repo.git(&[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},{path}"),
        ]);
    }
    repo.git(&["commit", "-q", "-m", "submodules"]);
    for pattern in ["secrets", "vendor/secrets"] {
        let cleaned = clean_into(repo.path(), &files(&[pattern], &[], None)).unwrap();
        assert_eq!(
            trimmed(&cleaned.clone, &["ls-tree", "-r", "--name-only", "main"]),
            "README.md\nvendor/lib",
            "{pattern}"
        );
    }
}

#[test]
fn a_tag_of_a_root_tree_loses_an_anchored_path_too() {
    let mut repo = TestRepo::new();
    repo.write("config/prod.env", "KEY=1\n")
        .write("README.md", "app\n")
        .commit("configs");
    let tree = trimmed(repo.path(), &["rev-parse", "HEAD^{tree}"]);
    repo.git(&["tag", "-a", "-m", "tree", "tree-tag", &tree]);
    let cleaned = clean_into(repo.path(), &files(&["config/prod.env"], &[], None))
        .map_err(|(e, _)| e.to_string())
        .unwrap();
    let listed = trimmed(
        &cleaned.clone,
        &["ls-tree", "-r", "--name-only", "tree-tag^{tree}"],
    );
    assert!(!listed.contains("config/prod.env"), "still there: {listed}");
}

#[test]
fn a_directory_named_by_a_pattern_goes_when_an_anchored_pattern_walks_into_it() {
    let mut repo = TestRepo::new();
    repo.write("secrets/prod.key", "k\n")
        .write("secrets/other.txt", "o\n")
        .write("README.md", "app\n")
        .commit("c");
    let cleaned = clean_into(
        repo.path(),
        &files(&["secrets/", "/secrets/prod.key"], &[], None),
    )
    .map_err(|(e, _)| e.to_string())
    .unwrap();
    assert_eq!(
        trimmed(&cleaned.clone, &["ls-tree", "-r", "--name-only", "main"]),
        "README.md"
    );
}

#[test]
fn a_trailing_double_star_removes_what_is_inside_not_a_file_of_that_name() {
    let mut repo = TestRepo::new();
    repo.write("build", "not a directory\n")
        .write("out/build/x.o", "o\n")
        .write("README.md", "app\n")
        .commit("c");
    let cleaned = clean_into(repo.path(), &files(&["/build/**"], &[], None))
        .map_err(|(e, _)| e.to_string())
        .unwrap();
    let listed = trimmed(&cleaned.clone, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        listed.lines().any(|l| l == "build"),
        "gitignore keeps the file: {listed}"
    );
}
