//! The API's settings: the sections it shares with the other binaries, and its own
//! (listen address, identity, CORS, limits, callbacks, job lifetime).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use deployguard::db::DatabaseConfig;
use deployguard::env::{self, ConfigError, Load, Source};
use deployguard::net::OutboundConfig;
use deployguard::service::Common;
use deployguard::storage::StorageConfig;
use deployguard::telemetry::LogConfig;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

/// Everything `deployguard-api serve` reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: Common,
    pub storage: StorageConfig,
    pub api: ApiConfig,
}

impl Load for Settings {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            common: Common::from_source(src)?,
            storage: StorageConfig::from_source(src)?,
            api: ApiConfig::from_source(src)?,
        })
    }
}

impl AsRef<Common> for Settings {
    fn as_ref(&self) -> &Common {
        &self.common
    }
}

/// What `deployguard-api migrate` reads: only where the database is (and logging).
#[derive(Debug, Clone)]
pub struct MigrateSettings {
    pub log: LogConfig,
    pub database: DatabaseConfig,
}

impl Load for MigrateSettings {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            log: LogConfig::from_source(src)?,
            database: DatabaseConfig::from_source(src)?,
        })
    }
}

/// How the API learns who is calling (`AUTH_MODE`).
#[derive(Clone)]
pub enum AuthConfig {
    /// `gateway`: an auth gateway in front has validated the user and sets `X-User-ID`
    /// (and `X-User-Roles`). With `GATEWAY_TOKEN` set, those headers count only on
    /// requests that also carry `X-Gateway-Token` with that value.
    Gateway { token: Option<SecretString> },
    /// `jwt`: the API validates `Authorization: Bearer` itself.
    Jwt(JwtConfig),
}

/// JWT validation: at least one key; `sub` is the user, `JWT_ROLES_CLAIM` the roles.
#[derive(Clone)]
pub struct JwtConfig {
    /// `JWT_HS256_SECRET`: shared secret for HS256 tokens.
    pub hs256_secret: Option<SecretString>,
    /// `JWT_RS256_PUBLIC_KEY` (PEM text) or `JWT_RS256_PUBLIC_KEY_FILE`: RS256 tokens.
    pub rs256_public_key_pem: Option<String>,
    /// `JWT_ISSUER` (checked when set) and `JWT_AUDIENCE` (required).
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `JWT_ROLES_CLAIM` (default `roles`): an array of strings or a space- or
    /// comma-separated string.
    pub roles_claim: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gateway { token } => f
                .debug_struct("Gateway")
                .field("token", &token.as_ref().map(|_| "***"))
                .finish(),
            Self::Jwt(jwt) => f
                .debug_struct("Jwt")
                .field("hs256_secret", &jwt.hs256_secret.as_ref().map(|_| "***"))
                .field("rs256_public_key", &jwt.rs256_public_key_pem.is_some())
                .field("issuer", &jwt.issuer)
                .field("audience", &jwt.audience)
                .field("roles_claim", &jwt.roles_claim)
                .finish(),
        }
    }
}

impl AuthConfig {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let mode = src
            .get("AUTH_MODE")
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "gateway".into());
        match mode.as_str() {
            "gateway" => Ok(Self::Gateway {
                token: src.get("GATEWAY_TOKEN").map(SecretString::from),
            }),
            "jwt" => {
                let rs256_public_key_pem = match (
                    src.get("JWT_RS256_PUBLIC_KEY"),
                    src.get("JWT_RS256_PUBLIC_KEY_FILE"),
                ) {
                    (Some(pem), _) => Some(pem),
                    (None, Some(path)) => Some(
                        std::fs::read_to_string(path.trim())
                            .map_err(|e| ConfigError::malformed("JWT_RS256_PUBLIC_KEY_FILE", e))?,
                    ),
                    (None, None) => None,
                };
                let jwt = JwtConfig {
                    hs256_secret: src.get("JWT_HS256_SECRET").map(SecretString::from),
                    rs256_public_key_pem,
                    issuer: src.get("JWT_ISSUER"),
                    audience: src.get("JWT_AUDIENCE"),
                    roles_claim: src.get("JWT_ROLES_CLAIM").unwrap_or_else(|| "roles".into()),
                };
                if jwt.audience.is_none() {
                    // Without it, a token the identity provider minted for any other
                    // service would open this one.
                    return Err(ConfigError::missing(
                        "JWT_AUDIENCE",
                        "the audience your identity provider puts in tokens for DeployGuard",
                    ));
                }
                if jwt.hs256_secret.is_none() && jwt.rs256_public_key_pem.is_none() {
                    return Err(ConfigError::missing(
                        "JWT_HS256_SECRET",
                        "a shared secret, or JWT_RS256_PUBLIC_KEY with a PEM public key",
                    ));
                }
                if let Some(secret) = &jwt.hs256_secret
                    && secret.expose_secret().len() < 32
                {
                    return Err(ConfigError::malformed(
                        "JWT_HS256_SECRET",
                        "must be at least 32 characters",
                    ));
                }
                Ok(Self::Jwt(jwt))
            }
            other => Err(ConfigError::malformed(
                "AUTH_MODE",
                format!("{other:?} is neither \"gateway\" nor \"jwt\""),
            )),
        }
    }
}

/// `CORS_ORIGINS`: `*`, or a comma-separated list of origins such as
/// `https://admin.example.com`. Unset means no cross-origin access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

impl CorsOrigins {
    fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let Some(raw) = src.get("CORS_ORIGINS") else {
            return Ok(Self::List(Vec::new()));
        };
        if raw.trim() == "*" {
            return Ok(Self::Any);
        }
        let mut origins = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let url = Url::parse(item).map_err(|_| {
                ConfigError::malformed("CORS_ORIGINS", format!("{item:?} is not an origin URL"))
            })?;
            let is_origin = matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && !item.ends_with('/')
                && url.query().is_none();
            if !is_origin {
                return Err(ConfigError::malformed(
                    "CORS_ORIGINS",
                    format!("{item:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
            origins.push(item.to_owned());
        }
        Ok(Self::List(origins))
    }
}

/// The REST API's own settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `API_ADDR` (default `0.0.0.0:8000`).
    pub addr: SocketAddr,
    /// `CORS_ORIGINS`.
    pub cors_origins: CorsOrigins,
    /// `READINESS_TIMEOUT_MS` (default 2000): the bound on each dependency check of the
    /// readiness probe.
    pub readiness_timeout: Duration,
    pub auth: AuthConfig,
    /// `ADMIN_ROLE` (default `admin`): the role that opens the admin endpoints.
    pub admin_role: String,
    /// `TRUSTED_PROXIES`: networks whose `X-Forwarded-For` is believed (client IP in
    /// the audit log). Unset: the peer address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `URL_ALLOWLIST` and `ALLOW_HTTP_URLS`: what repository and callback URLs may
    /// reach.
    pub outbound: OutboundConfig,
    /// `MAX_REQUEST_BYTES` (default 1 MiB): larger bodies get 413.
    pub max_request_bytes: usize,
    /// `DOWNLOAD_URL_TTL_SECS` (default 300): lifetime of presigned download URLs.
    pub download_url_ttl: Duration,
    /// `CALLBACK_SECRET`: the HMAC-SHA-256 key callbacks are signed with. Unset: jobs
    /// with a `callback_url` are refused.
    pub callback_secret: Option<SecretString>,
    /// `CALLBACK_RETRY_BASE_SECS` (default 5): the first retry delay of a failed
    /// callback; each later one doubles.
    pub callback_retry_base: Duration,
    /// `CALLBACK_MAX_ATTEMPTS` (default 8).
    pub callback_max_attempts: i32,
    /// `JOB_TTL_HOURS` (default 168): a job expires this long after its creation.
    pub job_ttl: Duration,
}

impl ApiConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let mut trusted_proxies = Vec::new();
        for item in src
            .get("TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let net = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::malformed(
                        "TRUSTED_PROXIES",
                        format!("{item:?} is not an address or network"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        let max_request_bytes: usize =
            env::parse_or(src, "MAX_REQUEST_BYTES", Some(1 << 20), "a number of bytes")?;
        if !(1024..=64 << 20).contains(&max_request_bytes) {
            return Err(ConfigError::malformed(
                "MAX_REQUEST_BYTES",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        let download_secs: u64 = env::parse_or(
            src,
            "DOWNLOAD_URL_TTL_SECS",
            Some(300),
            "a number of seconds",
        )?;
        if !(1..=7 * 86_400).contains(&download_secs) {
            return Err(ConfigError::malformed(
                "DOWNLOAD_URL_TTL_SECS",
                "must be between 1 second and 7 days (the longest S3 allows)",
            ));
        }
        let ttl_hours: f64 = env::parse_or(src, "JOB_TTL_HOURS", Some(168.0), "a number of hours")?;
        if !ttl_hours.is_finite() || ttl_hours <= 0.0 || ttl_hours > 24.0 * 366.0 {
            return Err(ConfigError::malformed(
                "JOB_TTL_HOURS",
                "must be more than 0 and at most a year",
            ));
        }
        let callback_secret = src.get("CALLBACK_SECRET").map(SecretString::from);
        if let Some(secret) = &callback_secret
            && secret.expose_secret().len() < 16
        {
            return Err(ConfigError::malformed(
                "CALLBACK_SECRET",
                "must be at least 16 characters",
            ));
        }
        let retry_base: f64 = env::parse_or(
            src,
            "CALLBACK_RETRY_BASE_SECS",
            Some(5.0),
            "a number of seconds",
        )?;
        if !retry_base.is_finite() || !(0.01..=3600.0).contains(&retry_base) {
            return Err(ConfigError::malformed(
                "CALLBACK_RETRY_BASE_SECS",
                "must be between 0.01 and 3600",
            ));
        }
        let callback_max_attempts: i32 = env::parse_or(
            src,
            "CALLBACK_MAX_ATTEMPTS",
            Some(8),
            "a number of attempts",
        )?;
        if !(1..=50).contains(&callback_max_attempts) {
            return Err(ConfigError::malformed(
                "CALLBACK_MAX_ATTEMPTS",
                "must be 1 to 50",
            ));
        }
        Ok(Self {
            addr: env::parse_or(src, "API_ADDR", "0.0.0.0:8000".parse().ok(), "host:port")?,
            cors_origins: CorsOrigins::from_source(src)?,
            readiness_timeout: Duration::from_millis(env::parse_or(
                src,
                "READINESS_TIMEOUT_MS",
                Some(2000u64),
                "a number of milliseconds",
            )?),
            auth: AuthConfig::from_source(src)?,
            admin_role: src.get("ADMIN_ROLE").unwrap_or_else(|| "admin".into()),
            trusted_proxies,
            outbound: OutboundConfig::from_source(src)?,
            max_request_bytes,
            download_url_ttl: Duration::from_secs(download_secs),
            callback_secret,
            callback_retry_base: Duration::from_secs_f64(retry_base),
            callback_max_attempts,
            job_ttl: Duration::from_secs_f64(ttl_hours * 3600.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (
                "DATABASE_URL",
                "postgresql://dg:db-pass-123@db:5432/deployguard",
            ),
            ("AMQP_URL", "amqp://dg:mq-pass-456@rabbitmq:5672/%2f"),
            ("S3_ENDPOINT_URL", "http://minio:9000"),
            ("S3_ACCESS_KEY", "minioadmin"),
            ("S3_SECRET_KEY", "s3-secret-789"),
        ])
    }

    #[test]
    fn minimal_environment_gives_documented_defaults() {
        let settings = Settings::from_source(&base()).unwrap();
        assert_eq!(settings.api.addr, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(settings.api.cors_origins, CorsOrigins::List(vec![]));
        assert_eq!(settings.api.readiness_timeout, Duration::from_secs(2));
        assert!(matches!(
            settings.api.auth,
            AuthConfig::Gateway { token: None }
        ));
        assert_eq!(settings.api.max_request_bytes, 1 << 20);
        assert!(settings.common.database.run_migrations);
    }

    #[test]
    fn debug_output_never_contains_secret_values() {
        let mut env = base();
        env.insert("CALLBACK_SECRET", "callback-secret-0123");
        env.insert("GATEWAY_TOKEN", "gateway-token-0123");
        let shown = format!("{:?}", Settings::from_source(&env).unwrap());
        for secret in [
            "db-pass-123",
            "mq-pass-456",
            "s3-secret-789",
            "callback-secret-0123",
            "gateway-token-0123",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("db:5432"), "non-secret parts stay visible");
    }

    #[test]
    fn cors_origins_accepts_star_and_lists() {
        let mut env = base();
        env.insert("CORS_ORIGINS", "*");
        assert_eq!(
            ApiConfig::from_source(&env).unwrap().cors_origins,
            CorsOrigins::Any
        );
        env.insert(
            "CORS_ORIGINS",
            "https://admin.example.com, http://localhost:3000",
        );
        assert_eq!(
            ApiConfig::from_source(&env).unwrap().cors_origins,
            CorsOrigins::List(vec![
                "https://admin.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
    }

    #[test]
    fn jwt_mode_needs_an_audience_and_a_key() {
        let mut env = base();
        env.insert("AUTH_MODE", "jwt");
        env.insert("JWT_HS256_SECRET", "a-shared-secret-of-at-least-32-chars!");
        assert_eq!(
            ApiConfig::from_source(&env).unwrap_err().var,
            "JWT_AUDIENCE"
        );
        env.insert("JWT_AUDIENCE", "deployguard");
        assert!(ApiConfig::from_source(&env).is_ok());
        env.insert("JWT_HS256_SECRET", "short");
        assert_eq!(
            ApiConfig::from_source(&env).unwrap_err().var,
            "JWT_HS256_SECRET"
        );
        env.remove("JWT_HS256_SECRET");
        assert_eq!(
            ApiConfig::from_source(&env).unwrap_err().var,
            "JWT_HS256_SECRET"
        );
        env.insert("AUTH_MODE", "magic");
        assert_eq!(ApiConfig::from_source(&env).unwrap_err().var, "AUTH_MODE");
    }

    #[test]
    fn api_settings_are_validated() {
        for (var, bad) in [
            ("API_ADDR", "eight-thousand"),
            ("READINESS_TIMEOUT_MS", "-1"),
            ("CORS_ORIGINS", "https://admin.example.com/path"),
            ("TRUSTED_PROXIES", "not-an-ip"),
            ("URL_ALLOWLIST", "bad host!"),
            ("MAX_REQUEST_BYTES", "10"),
            ("DOWNLOAD_URL_TTL_SECS", "0"),
            ("CALLBACK_SECRET", "short"),
            ("CALLBACK_MAX_ATTEMPTS", "0"),
            ("JOB_TTL_HOURS", "-1"),
            ("ALLOW_HTTP_URLS", "sometimes"),
        ] {
            let mut env = base();
            env.insert(var, bad);
            assert_eq!(ApiConfig::from_source(&env).unwrap_err().var, var, "{bad}");
        }
    }
}
