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
