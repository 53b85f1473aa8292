//! Reading settings from the environment: where values come from ([`Source`]), the
//! error that names the variable ([`ConfigError`]), and the parse helpers every
//! settings section uses. The sections themselves live with their owners
//! (`db::DatabaseConfig`, `queue::BrokerConfig`, `storage::StorageConfig`,
//! `telemetry::LogConfig`, `net::OutboundConfig`; each binary its own).
//!
//! A missing or malformed value stops a binary before it touches anything, with one
//! line naming the variable. Values that carry credentials are never echoed, not even
//! in the error for a malformed value.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

/// Where settings are read from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment. A variable set to the empty string counts as unset.
pub struct Environment;

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .map(|v| (*v).to_owned())
            .filter(|v| !v.trim().is_empty())
    }
}

/// A binary's settings, read from a [`Source`]; from the process environment by default.
pub trait Load: Sized {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError>;

    fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Environment)
    }
}

/// A setting that is missing or malformed. Its message names the variable and never
/// contains the value of a secret-bearing variable.
#[derive(Debug, thiserror::Error)]
#[error("{var} {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn missing(var: &'static str, example: &str) -> Self {
        Self {
            var,
            problem: format!("is not set (example: {example})"),
        }
    }

    pub fn malformed(var: &'static str, why: impl fmt::Display) -> Self {
        Self {
            var,
            problem: format!("is malformed: {why}"),
        }
    }
}

/// A URL that may hold a password, with one of `schemes`. The error says what is
/// wrong, never the value.
pub fn secret_url(var: &'static str, raw: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::malformed(var, e))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::malformed(
            var,
            format!("the scheme must be one of {}", schemes.join(", ")),
        ));
    }
    Ok(url)
}

/// An optional http(s) URL with no credentials in it.
pub fn optional_http_url(src: &impl Source, var: &'static str) -> Result<Option<Url>, ConfigError> {
    let Some(raw) = src.get(var) else {
        return Ok(None);
    };
    let url = Url::parse(raw.trim()).map_err(|e| ConfigError::malformed(var, e))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::malformed(
            var,
            "expected an http:// or https:// URL",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::malformed(
            var,
            "credentials do not belong in this URL",
        ));
    }
    Ok(Some(url))
}

/// The value parsed as `T`, or `default`; `expected` says what a value looks like.
pub fn parse_or<T: FromStr>(
    src: &impl Source,
    var: &'static str,
    default: Option<T>,
    expected: &str,
) -> Result<T, ConfigError> {
    match src.get(var) {
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| ConfigError::malformed(var, format!("{raw:?} is not {expected}"))),
        None => default.ok_or_else(|| ConfigError::missing(var, expected)),
    }
}

/// `true/false`, `1/0`, `yes/no` or `on/off`.
pub fn parse_bool(
    src: &impl Source,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match src.get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(v) => Err(ConfigError::malformed(
            var,
            format!("{v:?} is not a boolean (true/false)"),
        )),
    }
}

/// A number of seconds (fractions allowed), more than 0 and at most `max`.
pub fn seconds(
    src: &impl Source,
    var: &'static str,
    default: f64,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let value: f64 = parse_or(src, var, Some(default), "a number of seconds")?;
    if !value.is_finite() || value <= 0.0 || value > max.as_secs_f64() {
        return Err(ConfigError::malformed(
            var,
            format!("must be more than 0 and at most {} seconds", max.as_secs()),
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Masks the password of a URL so it can be logged; an unparsable value is hidden whole.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Loads a binary's settings or stops the program the way operators expect: one line
/// on stderr naming the variable, exit code 2, no backtrace.
pub fn or_exit<T>(program: &str, loaded: Result<T, ConfigError>) -> T {
    match loaded {
        Ok(value) => value,
        Err(err) => {
            eprintln!("{program}: configuration error: {err}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_value_counts_as_missing() {
        let env = HashMap::from([("S3_ACCESS_KEY", "  ")]);
        let err = parse_or::<String>(&env, "S3_ACCESS_KEY", None, "a key").unwrap_err();
        assert_eq!(err.var, "S3_ACCESS_KEY");
        assert!(err.to_string().starts_with("S3_ACCESS_KEY is not set"));
    }

    #[test]
    fn malformed_secret_urls_are_reported_without_their_value() {
        for bad in ["mysql://root:hunter2-db@db/x", "hunter2-db not a url"] {
            let err = secret_url("DATABASE_URL", bad, &["postgres"]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("is malformed"), "{msg}");
            assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
        }
    }

    #[test]
    fn booleans_and_seconds_are_checked() {
        let env = HashMap::from([("A", "maybe"), ("B", "on"), ("C", "-1"), ("D", "2.5")]);
        assert_eq!(parse_bool(&env, "A", false).unwrap_err().var, "A");
        assert!(parse_bool(&env, "B", false).unwrap());
        assert!(parse_bool(&env, "UNSET", true).unwrap());
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(seconds(&env, "C", 1.0, week).unwrap_err().var, "C");
        assert_eq!(
            seconds(&env, "D", 1.0, week).unwrap(),
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn http_urls_must_carry_no_credentials() {
        let env = HashMap::from([
            ("OK", "https://auth.example.com"),
            ("CREDS", "https://u:p@auth.example.com"),
            ("FTP", "ftp://auth"),
        ]);
        assert!(optional_http_url(&env, "OK").unwrap().is_some());
        assert!(optional_http_url(&env, "UNSET").unwrap().is_none());
        assert_eq!(optional_http_url(&env, "CREDS").unwrap_err().var, "CREDS");
        assert_eq!(optional_http_url(&env, "FTP").unwrap_err().var, "FTP");
    }

    #[test]
    fn redact_url_masks_only_the_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://h/d"), "postgres://h/d");
        assert_eq!(redact_url("not a url secret"), "<unparsable URL>");
    }
}
