//! Bundles written with their pack's index and opened again, over real repositories:
//! the same refs, `HEAD` and objects come back whichever way the bundle is opened.

use std::path::Path;

use deployguard_engine::clean::{self, CleanOptions, CleanRun, Selection};
use deployguard_engine::git::bundle::{self, Header};
use deployguard_engine::git::objects::ObjectFormat;
use deployguard_testkit::{TestRepo, git_in as git};

fn text(dir: &Path, args: &[&str]) -> String {
    String::from_utf8_lossy(&git(dir, args)).into_owned()
}

/// Branches, an annotated and a light tag, and a merge: every kind of ref and object.
fn history() -> TestRepo {
    let mut repo = TestRepo::new();
    repo.write("README.md", "# demo\n");
    repo.commit("first");
    repo.checkout("feature");
    repo.write("src/lib.rs", "pub fn f() {}\n");
    repo.commit("feature work");
    repo.checkout("main");
    repo.write("docs/guide.md", "read me\n");
    repo.commit("docs");
    repo.merge("feature", "merge feature");
    repo.tag_annotated("v1.0", "release");
    repo.tag("light");
    repo
}

fn refs(repo: &Path) -> String {
    text(repo, &["for-each-ref", "--format=%(objectname) %(refname)"])
}

/// A mirror clone over the pack protocol: one pack, as the worker's clone has.
fn mirror(source: &Path, into: &Path) {
    let url = format!("file://{}", source.display());
    git(
        Path::new("/"),
        &["clone", "-q", "--mirror", &url, &into.to_string_lossy()],
    );
}

/// A mirror clone of [`history`] and the indexed bundle made of it.
struct Indexed {
    tmp: tempfile::TempDir,
    clone: std::path::PathBuf,
    bundle: std::path::PathBuf,
    index: std::path::PathBuf,
}

fn indexed_bundle() -> Indexed {
    let source = history();
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone.git");
    mirror(source.path(), &clone);
    let bundle = tmp.path().join("repo.bundle");
    let index = bundle::create_indexed(&clone, &bundle).unwrap().unwrap();
    Indexed {
        tmp,
        clone,
        bundle,
        index,
    }
}

#[test]
fn a_clone_s_own_pack_becomes_the_bundle_and_opens_again_with_its_index() {
    let Indexed {
        tmp,
        clone,
        bundle,
        index,
    } = indexed_bundle();

    // The clone's pack is the bundle's, byte for byte: nothing was packed again.
    let header = Header::read(&bundle).unwrap();
    let body = std::fs::read(&bundle).unwrap()[header.pack_offset as usize..].to_vec();
    assert_eq!(body, std::fs::read(index.with_extension("pack")).unwrap());
    assert_eq!(header.refs.len(), 4, "{:?}", header.refs);
    // git itself reads it.
    let by_git = tmp.path().join("by-git.git");
    git(
        Path::new("/"),
        &[
            "clone",
            "-q",
            "--mirror",
            &bundle.to_string_lossy(),
            &by_git.to_string_lossy(),
        ],
    );
    assert_eq!(refs(&by_git), refs(&clone));

    let opened = tmp.path().join("opened.git");
    bundle::unbundle(&bundle, Some(&index), &opened).unwrap();
    assert_eq!(refs(&opened), refs(&clone));
    assert_eq!(
        text(&opened, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    text(&opened, &["fsck", "--full", "--strict", "--no-dangling"]);
    // The index was taken as it was, beside the pack copied out of the bundle.
    let pack_dir = opened.join("objects/pack");
    let placed: Vec<_> = std::fs::read_dir(&pack_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let placed_index = placed
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .unwrap();
    assert_eq!(
        std::fs::read(placed_index).unwrap(),
        std::fs::read(&index).unwrap()
    );
}

#[test]
fn loose_objects_are_repacked_into_one_pack_first() {
    let source = history();
    let bare = tempfile::tempdir().unwrap();
    let repo = bare.path().join("loose.git");
    // A local clone copies the loose objects as they are.
    git(
        Path::new("/"),
        &[
            "clone",
            "-q",
            "--bare",
            &source.path().to_string_lossy(),
            &repo.to_string_lossy(),
        ],
    );
    let loose = text(&repo, &["count-objects", "-v"]);
    assert!(!loose.starts_with("count: 0\n"), "{loose}");
    let bundle = bare.path().join("repo.bundle");
    let index = bundle::create_indexed(&repo, &bundle).unwrap().unwrap();
    // Repacked: one pack, no loose object, and that pack is the bundle's.
    let after = text(&repo, &["count-objects", "-v"]);
    assert!(
        after.starts_with("count: 0\n") && after.contains("packs: 1\n"),
        "{after}"
    );
    let header = Header::read(&bundle).unwrap();
    let body = std::fs::read(&bundle).unwrap()[header.pack_offset as usize..].to_vec();
    assert_eq!(body, std::fs::read(index.with_extension("pack")).unwrap());
    let opened = bare.path().join("opened.git");
    bundle::unbundle(&bundle, Some(&index), &opened).unwrap();
    assert_eq!(refs(&opened), refs(&repo));
    text(&opened, &["fsck", "--full", "--strict", "--no-dangling"]);
}

#[test]
fn without_an_index_or_with_another_pack_s_the_bundle_is_indexed_by_git() {
    let Indexed {
        tmp, clone, bundle, ..
    } = indexed_bundle();

    let mut other = TestRepo::new();
    other.write("other.txt", "another history\n");
    other.commit("other");
    let other_clone = tmp.path().join("other.git");
    mirror(other.path(), &other_clone);
    let other_bundle = tmp.path().join("other.bundle");
    let wrong = bundle::create_indexed(&other_clone, &other_bundle)
        .unwrap()
        .unwrap();

    for (name, index) in [
        ("plain.git", None),
        ("mismatched.git", Some(wrong.as_path())),
    ] {
        let opened = tmp.path().join(name);
        bundle::unbundle(&bundle, index, &opened).unwrap();
        assert_eq!(refs(&opened), refs(&clone), "{name}");
        assert_eq!(
            text(&opened, &["symbolic-ref", "HEAD"]).trim(),
            "refs/heads/main"
        );
        text(&opened, &["fsck", "--full", "--strict", "--no-dangling"]);
    }
}

#[test]
fn a_repository_without_refs_makes_no_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.git");
    git(
        Path::new("/"),
        &["init", "-q", "--bare", &empty.to_string_lossy()],
    );
    let bundle = tmp.path().join("none.bundle");
    assert_eq!(bundle::create_indexed(&empty, &bundle).unwrap(), None);
    assert!(!bundle.exists());
}

#[test]
fn a_damaged_bundle_is_refused_and_a_damaged_index_is_not_trusted() {
    let Indexed {
        tmp,
        clone,
        bundle,
        index,
    } = indexed_bundle();
    let bytes = std::fs::read(&bundle).unwrap();
    let offset = Header::read(&bundle).unwrap().pack_offset as usize;

    // One byte changed inside the pack: its trailer still matches the index, but the
    // pack's checksum does not, so git is asked and refuses it.
    let mut flipped = bytes.clone();
    flipped[offset + (bytes.len() - offset) / 2] ^= 0x55;
    let damaged = tmp.path().join("damaged.bundle");
    std::fs::write(&damaged, &flipped).unwrap();
    let err = bundle::unbundle(&damaged, Some(&index), &tmp.path().join("a.git")).unwrap_err();
    assert_eq!(err.command, "fetch", "{err}");

    // Cut short: the same.
    std::fs::write(&damaged, &bytes[..bytes.len() - 100]).unwrap();
    let err = bundle::unbundle(&damaged, Some(&index), &tmp.path().join("b.git")).unwrap_err();
    assert_eq!(err.command, "fetch", "{err}");

    // Cut inside the header: not a bundle at all.
    std::fs::write(&damaged, &bytes[..20]).unwrap();
    let err = bundle::unbundle(&damaged, Some(&index), &tmp.path().join("c.git")).unwrap_err();
    assert!(err.message.contains("not a usable bundle"), "{err}");

    // A sound bundle with a damaged index: the index is set aside and git indexes the
    // pack, so the repository still comes out whole.
    let mut idx = std::fs::read(&index).unwrap();
    let middle = idx.len() / 2;
    idx[middle] ^= 0x55;
    let bad_index = tmp.path().join("bad.idx");
    std::fs::write(&bad_index, &idx).unwrap();
    let opened = tmp.path().join("d.git");
    bundle::unbundle(&bundle, Some(&bad_index), &opened).unwrap();
    assert_eq!(refs(&opened), refs(&clone));
    text(&opened, &["fsck", "--full", "--strict", "--no-dangling"]);
}

#[test]
fn a_sha256_repository_round_trips_through_an_indexed_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    git(
        Path::new("/"),
        &[
            "init",
            "-q",
            "--object-format=sha256",
            "-b",
            "main",
            &work.to_string_lossy(),
        ],
    );
    for (file, message) in [("a.txt", "first"), ("b.txt", "second")] {
        std::fs::write(work.join(file), message).unwrap();
        git(&work, &["add", "."]);
        git(
            &work,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-q",
                "-m",
                message,
            ],
        );
    }
    git(&work, &["tag", "v1"]);
    let clone = tmp.path().join("clone.git");
    mirror(&work, &clone);
    let bundle = tmp.path().join("repo.bundle");
    let index = bundle::create_indexed(&clone, &bundle).unwrap().unwrap();
    let header = Header::read(&bundle).unwrap();
    assert_eq!(header.format, ObjectFormat::Sha256);
    let opened = tmp.path().join("opened.git");
    bundle::unbundle(&bundle, Some(&index), &opened).unwrap();
    assert_eq!(refs(&opened), refs(&clone));
    assert_eq!(
        text(&opened, &["rev-parse", "--show-object-format"]).trim(),
        "sha256"
    );
    text(&opened, &["fsck", "--full", "--strict", "--no-dangling"]);
}

#[test]
fn a_cleaned_bundle_opens_with_the_index_the_clean_kept() {
    let mut source = history();
    source.write(
        "config.env",
        "TOKEN=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\n",
    );
    source.commit("add config");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let cleaned = tmp.path().join("cleaned.bundle");
    let selection = Selection::from_values(
        ["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"],
        b"***REMOVED***",
    )
    .unwrap();
    let report = clean::clean(
        source.path(),
        &work,
        &selection,
        &CleanOptions::default(),
        &cleaned,
        &CleanRun::default(),
    )
    .unwrap();
    let index = report.bundle_index.clone().unwrap();
    assert!(index.is_file());
    // Only the index is kept in the work directory; the pack lives in the bundle.
    assert!(!index.with_extension("pack").exists());

    let opened = tmp.path().join("opened.git");
    bundle::unbundle(&cleaned, Some(&index), &opened).unwrap();
    for change in &report.refs {
        let id = text(&opened, &["rev-parse", &change.name]);
        assert_eq!(id.trim(), change.new, "{}", change.name);
    }
    text(&opened, &["fsck", "--full", "--strict", "--no-dangling"]);
    let everything = text(&opened, &["log", "--all", "-p"]);
    assert!(!everything.contains("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"));
    assert!(everything.contains("***REMOVED***"));
}
