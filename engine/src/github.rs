//! GitHub REST API access through octocrab, for GitHub.com and GitHub Enterprise.

use secrecy::{ExposeSecret, SecretString};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("invalid GitHub API base URL")]
    InvalidBaseUrl,
    #[error("GitHub API request failed: {0}")]
    Api(String),
}

/// A client for the API at `api_base` acting with `token` (a personal access token or
/// an installation token).
pub fn client(api_base: &Url, token: &SecretString) -> Result<octocrab::Octocrab, GitHubError> {
    octocrab::Octocrab::builder()
        .base_uri(api_base.as_str())
        .map_err(|_| GitHubError::InvalidBaseUrl)?
        .personal_token(token.expose_secret().to_owned())
        .build()
        .map_err(|e| GitHubError::Api(e.to_string()))
}

/// Whether [`ensure_repository`] found the repository or made it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EnsuredRepository {
    pub full_name: String,
    pub created: bool,
    pub private: bool,
}

/// `owner/name` from a GitHub repository URL such as `https://github.com/org/repo.git`.
pub fn repository_from_url(url: &str) -> Option<(String, String)> {
    let url = Url::parse(url).ok()?;
    let mut parts = url.path().trim_matches('/').split('/');
    let owner = parts.next().filter(|s| !s.is_empty())?;
    let name = parts.next()?;
    let name = name.strip_suffix(".git").unwrap_or(name);
    if parts.next().is_some() || name.is_empty() {
        return None;
    }
    Some((owner.to_owned(), name.to_owned()))
}

/// The API base for a repository host: `api.github.com` for github.com, and
/// `https://HOST/api/v3/` for GitHub Enterprise Server.
pub fn api_base_for_host(host: &str) -> Option<Url> {
    if host.eq_ignore_ascii_case("github.com") || host.eq_ignore_ascii_case("www.github.com") {
        Url::parse("https://api.github.com/").ok()
    } else {
        Url::parse(&format!("https://{host}/api/v3/")).ok()
    }
}

fn api_error(e: octocrab::Error) -> GitHubError {
    match e {
        octocrab::Error::GitHub { source, .. } => GitHubError::Api(format!(
            "{} ({})",
            source.message,
            source.status_code.as_u16()
        )),
        other => GitHubError::Api(other.to_string()),
    }
}

fn is_not_found(e: &octocrab::Error) -> bool {
    matches!(e, octocrab::Error::GitHub { source, .. } if source.status_code.as_u16() == 404)
}

/// Makes sure `owner/name` exists, creating it (private unless asked otherwise) under
/// the token's own account or under organisation `owner`.
pub async fn ensure_repository(
    client: &octocrab::Octocrab,
    owner: &str,
    name: &str,
    private: bool,
) -> Result<EnsuredRepository, GitHubError> {
    match client.repos(owner, name).get().await {
        Ok(repo) => {
            return Ok(EnsuredRepository {
                full_name: repo.full_name.unwrap_or_else(|| format!("{owner}/{name}")),
                created: false,
                private: repo.private.unwrap_or(false),
            });
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(api_error(e)),
    }
    let me = client.current().user().await.map_err(api_error)?;
    let route = if me.login.eq_ignore_ascii_case(owner) {
        "/user/repos".to_owned()
    } else {
        format!("/orgs/{owner}/repos")
    };
    let body = serde_json::json!({ "name": name, "private": private, "auto_init": false });
    let created: octocrab::models::Repository =
        client.post(route, Some(&body)).await.map_err(api_error)?;
    Ok(EnsuredRepository {
        full_name: created
            .full_name
            .unwrap_or_else(|| format!("{owner}/{name}")),
        created: true,
        private: created.private.unwrap_or(private),
    })
}
