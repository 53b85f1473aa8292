//! Checks on user input that need more than serde: repository and callback URLs
//! (scheme, credentials, where the host resolves to), branch names, credential ids.

use std::time::Duration;

use crate::settings::ApiConfig;
use deployguard::net::{AddressError, check_url};
use deployguard_engine::git::remote::{RemoteKind, RemoteUrl, UrlPolicy};

use crate::error::ApiError;

const MAX_URL_CHARS: usize = 2048;
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A repository URL the service may clone from or push to: https (http when allowed),
/// no credentials in it, and a host that resolves only to addresses we may reach.
pub async fn repository_url(api: &ApiConfig, field: &str, raw: &str) -> Result<String, ApiError> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::validation(format!(
            "{field} is longer than {MAX_URL_CHARS} characters"
        )));
    }
    let policy = UrlPolicy {
        allow_http: api.outbound.allow_http,
        allow_ssh: false,
        allow_local: false,
    };
    let remote = RemoteUrl::parse(raw, policy).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_url",
            format!("{field}: {e}"),
        )
    })?;
    if remote.credentials().is_some() {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "credentials_in_url",
            format!(
                "{field} must not contain credentials; store them in the credential service \
                 and pass their id"
            ),
        ));
    }
    debug_assert!(matches!(
        remote.kind(),
        RemoteKind::Https | RemoteKind::Http
    ));
    reachable(api, field, remote.as_str()).await?;
    Ok(remote.as_str().to_owned())
}

/// A callback URL: like a repository URL, and only when callbacks are configured.
pub async fn callback_url(api: &ApiConfig, raw: &str) -> Result<String, ApiError> {
    if api.callback_secret.is_none() {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "callbacks_disabled",
            "this deployment has no CALLBACK_SECRET, so it cannot sign callbacks; \
             leave callback_url out",
        ));
    }
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::validation(format!(
            "callback_url is longer than {MAX_URL_CHARS} characters"
        )));
    }
    let url = url::Url::parse(raw.trim()).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_url",
            format!("callback_url: {e}"),
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if api.outbound.allow_http => {}
        _ => {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_url",
                "callback_url must be an https URL",
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "credentials_in_url",
            "callback_url must not contain credentials; callbacks are signed instead",
        ));
    }
    if url.as_str().chars().count() > MAX_URL_CHARS {
        return Err(ApiError::validation(format!(
            "callback_url is longer than {MAX_URL_CHARS} characters once normalised"
        )));
    }
    reachable(api, "callback_url", url.as_str()).await?;
    Ok(url.to_string())
}

async fn reachable(api: &ApiConfig, field: &str, url: &str) -> Result<(), ApiError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_url",
            format!("{field}: {e}"),
        )
    })?;
    check_url(&parsed, &api.outbound.allowlist, RESOLVE_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| {
            let code = match e {
                AddressError::Unresolvable(_) => "unresolvable_host",
                AddressError::Forbidden { .. } => "forbidden_address",
            };
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                code,
                format!("{field}: {e}"),
            )
        })
}

/// A branch name git would accept (`git check-ref-format --branch`).
pub fn branch(raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::validation(format!("source_branch {why}"));
    let name = raw;
    if name.is_empty() || name.chars().count() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return Err(bad(
            "contains a character git does not allow in branch names",
        ));
    }
    if name.starts_with('-') || name.starts_with('/') || name.ends_with('/') || name.ends_with('.')
    {
        return Err(bad("must not start with '-' or '/' or end with '/' or '.'"));
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") || name == "@" {
        return Err(bad("must not contain '..', '@{' or '//'"));
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return Err(bad(
            "has a component starting with '.' or ending with '.lock'",
        ));
    }
    Ok(name.to_owned())
}

/// An id in the external credential service.
pub fn credentials_id(field: &str, raw: &str) -> Result<String, ApiError> {
    let ok = (1..=255).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !ok {
        return Err(ApiError::validation(format!(
            "{field} must be 1 to 255 characters of letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_follow_git_rules() {
        for good in ["main", "feature/x-1", "release-2.0", "a.b/c"] {
            assert!(branch(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "a..b",
            "a b",
            "a~1",
            "x.lock",
            "a/.hidden",
            "a//b",
            "end/",
            "@",
            "a@{1}",
            "tab\t",
            "x:y",
        ] {
            assert!(branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credential_ids_are_plain_tokens() {
        assert!(credentials_id("f", "cred-abc_123:v2").is_ok());
        assert!(credentials_id("f", "").is_err());
        assert!(credentials_id("f", "a/b").is_err());
        assert!(credentials_id("f", &"x".repeat(256)).is_err());
    }
}
