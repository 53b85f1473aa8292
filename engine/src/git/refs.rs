//! Setting many refs at once. `git update-ref` writes each ref as its own file, with a
//! directory per path component: a forge's thousands of `refs/pull/N/head` cost
//! thousands of directories and files, which took longer than rewriting a whole
//! history. A repository's refs can instead live in one `packed-refs` file, which git
//! reads as it reads loose refs.

use std::io::Write;
use std::path::Path;

use super::GitError;
use super::objects::Oid;

/// Makes `refs` every ref of the git directory `git_dir` (`HEAD` aside): one
/// `packed-refs` file written aside and renamed into place, then every loose ref
/// removed (one would shadow a packed ref of its name, or keep a ref not given).
/// Refused, with nothing changed, for a name git would refuse or a name given twice
/// with two ids.
pub fn write_packed(git_dir: &Path, refs: &[(String, Oid)]) -> Result<(), GitError> {
    let failed = |e: std::io::Error| GitError::new("write refs", e.to_string());
    let mut sorted: Vec<(&str, Oid)> = refs.iter().map(|(n, o)| (n.as_str(), *o)).collect();
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted.dedup();
    if let Some(pair) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(GitError::new(
            "write refs",
            format!("the ref {:?} is given two different ids", pair[0].0),
        ));
    }
    if let Some((name, _)) = sorted.iter().find(|(name, _)| !valid_name(name)) {
        return Err(GitError::new(
            "write refs",
            format!("{name:?} is not a valid ref name"),
        ));
    }
    let mut text = Vec::with_capacity(64 + sorted.len() * 80);
    text.extend_from_slice(b"# pack-refs with: sorted \n");
    for (name, oid) in &sorted {
        writeln!(text, "{oid} {name}").map_err(failed)?;
    }
    let path = git_dir.join("packed-refs");
    let aside = git_dir.join("packed-refs.deployguard");
    let mut file = std::fs::File::create(&aside).map_err(failed)?;
    file.write_all(&text).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&aside, &path).map_err(failed)?;
    remove_loose(&git_dir.join("refs")).map_err(failed)
}

/// Removes the files under `dir` (loose refs), keeping the directories.
fn remove_loose(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries?,
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_loose(&entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A full ref name (`refs/…`) as `git check-ref-format` accepts it.
pub fn valid_name(name: &str) -> bool {
    let forbidden = |c: char| c.is_ascii_control() || " ~^:?*[\\".contains(c);
    name.starts_with("refs/")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains(forbidden)
        && name
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.') && !part.ends_with(".lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_gits_rules() {
        for good in [
            "refs/heads/main",
            "refs/pull/123/head",
            "refs/tags/v1.0.0-rc.1",
        ] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "HEAD",
            "refs/heads/",
            "refs/heads/a..b",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads//x",
            "refs/heads/a b",
            "refs/heads/a\nb",
            "refs/heads/a@{1}",
            "refs/heads/end.",
            "refs/heads/a:b",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
