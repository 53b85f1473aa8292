//! The external credential service: `GET {AUTH_SERVICE_URL}/api/credentials/{id}` with
//! `X-User-ID` answers `{"username", "token"}` (or `"password"`). Credentials are asked
//! for when a task needs them and kept in memory only; no error quotes them.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use deployguard_engine::git::remote::Credentials;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential service is configured (AUTH_SERVICE_URL)")]
    NotConfigured,
    #[error("credential {0:?} does not exist or does not belong to this user")]
    NotFound(String),
    #[error("the credential service refused the request ({0})")]
    Refused(u16),
    #[error("the credential service is unavailable: {0}")]
    Unavailable(String),
    #[error("the credential service answered something that is not a credential")]
    Malformed,
}

impl CredentialError {
    /// Whether asking again later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

#[derive(Clone, Debug)]
pub struct CredentialService {
    base: Option<Url>,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl CredentialService {
    pub fn new(base: Option<Url>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { base, http }
    }

    /// The credential `id` as `user` may see it.
    pub async fn resolve(&self, id: &str, user: &str) -> Result<Credentials, CredentialError> {
        let base = self.base.as_ref().ok_or(CredentialError::NotConfigured)?;
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|()| CredentialError::NotConfigured)?
            .pop_if_empty()
            .extend(["api", "credentials", id]);
        let response = self
            .http
            .get(url)
            .header("x-user-id", user)
            .send()
            .await
            .map_err(|e| CredentialError::Unavailable(without_url(&e)))?;
        let status = response.status();
        match status.as_u16() {
            200 => {}
            404 => return Err(CredentialError::NotFound(id.to_owned())),
            401 | 403 => return Err(CredentialError::Refused(status.as_u16())),
            429 | 500..=599 => {
                return Err(CredentialError::Unavailable(format!("HTTP {status}")));
            }
            other => return Err(CredentialError::Refused(other)),
        }
        let answer: Answer = response
            .json()
            .await
            .map_err(|_| CredentialError::Malformed)?;
        let secret = answer
            .token
            .or(answer.password)
            .filter(|s| !s.is_empty())
            .ok_or(CredentialError::Malformed)?;
        let username = answer
            .username
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "x-access-token".into());
        Ok(Credentials {
            username,
            secret: SecretString::from(secret),
        })
    }
}

/// A transport error without the URL (it names the credential id, which is harmless,
/// but the message stays short).
fn without_url(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection refused or unreachable"
    } else {
        "request failed"
    };
    kind.to_owned()
}
