//! What a person must still do after a rewrite: the clean changes a copy, and the
//! removed content stays wherever the old history already went. docs/cleaning.md
//! ("After the rewrite") explains each step.

use super::CleanReport;

/// Where the steps are explained.
pub const GUIDE: &str = "docs/cleaning.md#after-the-rewrite";

/// The platforms whose steps differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Platform {
    GitHub,
    GitLab,
    Unknown,
}

/// The platform a repository URL is on, from its host alone (any credentials or path
/// in the URL are not looked at).
fn platform(url: Option<&str>) -> Platform {
    let Some(url) = url else {
        return Platform::Unknown;
    };
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    // scp-like `git@host:owner/repo`.
    let host = host_port
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host == "github.com" || host.ends_with(".github.com") || host.starts_with("github.") {
        Platform::GitHub
    } else if host == "gitlab.com" || host.starts_with("gitlab.") {
        Platform::GitLab
    } else {
        Platform::Unknown
    }
}

/// The steps left after this clean, in the order they should be done.
pub fn next_steps(report: &CleanReport, source_url: Option<&str>) -> Vec<String> {
    let mut steps = Vec::new();
    if report.changed_refs().next().is_none() {
        steps.push(
            "Nothing was rewritten: the history holds none of the selection. If a credential \
             was ever committed elsewhere, still rotate it."
                .to_owned(),
        );
        return steps;
    }
    steps.push(
        "Rotate every removed credential first (revoke it at its provider and issue a new \
         one): rewriting history does not un-leak it, and whoever cloned, forked or cached \
         the repository still has it."
            .to_owned(),
    );
    for protected in report.protected.iter().filter(|p| p.values + p.files > 0) {
        steps.push(format!(
            "The protected tip of {} still holds {} blob(s) with a selected value and {} \
             file(s) selected for removal, and so does every commit that shares them: remove \
             them in a new commit, then clean again.",
            protected.name, protected.values, protected.files
        ));
    }
    let pushed = report.refs.len() - report.forge_refs.len();
    steps.push(format!(
        "Replace the remote's history: push every branch and tag with force \
         (`deployguard push --force`, {pushed} ref(s)); turn off branch protection for the \
         push if it refuses forced updates."
    ));
    if !report.forge_refs.is_empty() {
        steps.push(format!(
            "{} ref(s) such as refs/pull/* cannot be pushed: the forge owns them and they \
             keep the old commits reachable until the forge removes them.",
            report.forge_refs.len()
        ));
    }
    let github = "On GitHub: pull-request refs, cached commit views and forks keep the old \
                  commits. Contact GitHub Support with the repository and the first changed \
                  commits (`first_changed` in the report) to have cached views and \
                  pull-request refs purged; forks keep the old history, so ask their owners \
                  to delete them.";
    let gitlab = "On GitLab: merge-request refs keep the old commits. Use Settings → \
                  Repository → Repository maintenance → Remove blobs with the removed blob \
                  ids, then run housekeeping (Settings → General → Advanced) to prune \
                  unreachable objects.";
    match platform(source_url) {
        Platform::GitHub => steps.push(github.to_owned()),
        Platform::GitLab => steps.push(gitlab.to_owned()),
        Platform::Unknown => {
            steps.push(github.to_owned());
            steps.push(gitlab.to_owned());
        }
    }
    if !report.lfs_orphaned.is_empty() {
        steps.push(format!(
            "{} Git LFS object(s) are no longer referenced by any pointer (`lfs_orphaned`): \
             delete them from the LFS store; on GitHub that takes Support or deleting the \
             repository.",
            report.lfs_orphaned.len()
        ));
    }
    if !report.message_ids_unmapped.is_empty() {
        steps.push(format!(
            "{} commit id(s) quoted in commit messages name rewritten commits that could not \
             be mapped (`message_ids_unmapped`): they no longer resolve.",
            report.message_ids_unmapped.len()
        ));
    }
    steps.push(
        "Have every collaborator delete their clone and clone again (a pull merges the old \
         history back in). Anyone can check a clone with `git cat-file -e OLD_ID` for the old \
         ids of the commit map: in a clean clone it fails."
            .to_owned(),
    );
    steps.push(format!("Each step is explained in {GUIDE}."));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_is_read_from_the_host_only() {
        assert_eq!(
            platform(Some("https://tok:x@github.com/o/r.git")),
            Platform::GitHub
        );
        assert_eq!(platform(Some("git@gitlab.com:o/r.git")), Platform::GitLab);
        assert_eq!(
            platform(Some("https://example.com/github.com/x")),
            Platform::Unknown
        );
        assert_eq!(platform(Some("/srv/repos/github")), Platform::Unknown);
        assert_eq!(platform(None), Platform::Unknown);
    }
}
