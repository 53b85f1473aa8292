//! PostgreSQL: the connection pool and the schema migrations.
//!
//! The schema is defined only in `migrations/` at the workspace root and embedded in
//! every binary. Migrations run under a session-level advisory lock held on a dedicated
//! connection, so several replicas starting at once apply each migration exactly once;
//! if the process dies mid-way the session ends and PostgreSQL releases the lock.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres};

use crate::env::{self, ConfigError, Source};

/// PostgreSQL: `DATABASE_URL` (required), `DATABASE_MAX_CONNECTIONS` and
/// `RUN_MIGRATIONS` (whether a binary migrates when it starts).
#[derive(Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    pub run_migrations: bool,
}

impl DatabaseConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        const VAR: &str = "DATABASE_URL";
        let raw = src.get(VAR).ok_or_else(|| {
            ConfigError::missing(VAR, "postgresql://user:password@host:5432/deployguard")
        })?;
        let url = env::secret_url(VAR, &raw, &["postgres", "postgresql"])?;
        if url.host_str().is_none_or(str::is_empty) && !url.query_pairs().any(|(k, _)| k == "host")
        {
            return Err(ConfigError::malformed(VAR, "the URL names no host"));
        }
        let max_connections = env::parse_or(
            src,
            "DATABASE_MAX_CONNECTIONS",
            Some(10u32),
            "a positive number",
        )?;
        if max_connections == 0 {
            return Err(ConfigError::malformed(
                "DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(Self {
            url: SecretString::from(raw),
            max_connections,
            run_migrations: env::parse_bool(src, "RUN_MIGRATIONS", true)?,
        })
    }

    /// The URL with its password masked, for log lines.
    pub fn display_url(&self) -> String {
        env::redact_url(self.url.expose_secret())
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.display_url())
            .field("max_connections", &self.max_connections)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

/// Any of sqlx's query builders, taking one more parameter: what lets a row's values (a
/// staged message, an audit record) be bound in one place, whatever the statement
/// around them reads back.
pub trait Bind<'q>: Sized {
    fn bind_one<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(self, value: T) -> Self;
}

impl<'q> Bind<'q> for sqlx::query::Query<'q, Postgres, PgArguments> {
    fn bind_one<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(self, value: T) -> Self {
        self.bind(value)
    }
}

impl<'q, O> Bind<'q> for sqlx::query::QueryAs<'q, Postgres, O, PgArguments> {
    fn bind_one<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(self, value: T) -> Self {
        self.bind(value)
    }
}

impl<'q, O> Bind<'q> for sqlx::query::QueryScalar<'q, Postgres, O, PgArguments> {
    fn bind_one<T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(self, value: T) -> Self {
        self.bind(value)
    }
}

/// The advisory-lock key of schema migrations (`'deployguard:migrate'` as a number).
pub const MIGRATION_LOCK_KEY: i64 = 0x6467_5f6d_6967_7261;

fn embedded_migrations() -> Migrator {
    let mut migrator = sqlx::migrate!("../migrations");
    // An older binary beside a newer schema (a rolling upgrade) must keep running:
    // migrations are written expand-then-contract, so unknown newer ones are fine.
    migrator.set_ignore_missing(true);
    // Our own advisory lock already serialises replicas.
    migrator.set_locking(false);
    migrator
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a usable PostgreSQL connection URL")]
    InvalidUrl,
    #[error("PostgreSQL is unreachable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

pub fn connect_options(config: &DatabaseConfig) -> Result<PgConnectOptions, DbError> {
    let url = url::Url::parse(config.url.expose_secret()).map_err(|_| DbError::InvalidUrl)?;
    let options = PgConnectOptions::from_url(&url).map_err(|_| DbError::InvalidUrl)?;
    // Statements are logged at debug only, and never with their bound values.
    Ok(options
        .log_statements(tracing::log::LevelFilter::Debug)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
        .application_name("deployguard"))
}

/// A lazily connecting pool: a binary starts even while PostgreSQL is briefly away, and
/// the readiness probe reports it.
pub fn pool(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect_options(config)?))
}

/// Applies pending migrations under the advisory lock. Waits up to `wait` for
/// PostgreSQL to accept connections first (a replica starting beside its database).
/// Returns the schema version now in place.
pub async fn migrate(config: &DatabaseConfig, wait: Duration) -> Result<i64, DbError> {
    let options = connect_options(config)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut conn = loop {
        match PgConnection::connect_with(&options).await {
            Ok(conn) => break conn,
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "PostgreSQL not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(DbError::Unavailable(err)),
        }
    };
    let result = migrate_locked(&mut conn).await;
    // Closing the session releases the lock even if unlocking failed.
    let _ = conn.close().await;
    result
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<i64, DbError> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let outcome = embedded_migrations().run(&mut *conn).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    outcome?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    Ok(version.unwrap_or(0))
}

/// The newest migration this binary knows.
pub fn latest_known_version() -> i64 {
    embedded_migrations()
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// One round trip, for the readiness probe.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(drop)
        .map_err(DbError::Unavailable)
}

/// What a service binary does at start: apply migrations unless disabled.
pub async fn migrate_at_start(config: &DatabaseConfig) -> Result<(), DbError> {
    if !config.run_migrations {
        tracing::info!("RUN_MIGRATIONS=false: not migrating");
        return Ok(());
    }
    migrate_and_report(config).await
}

/// Migrates, waiting up to a minute for PostgreSQL to come up, and logs the version.
pub async fn migrate_and_report(config: &DatabaseConfig) -> Result<(), DbError> {
    let version = migrate(config, Duration::from_secs(60)).await?;
    tracing::info!(version, "database schema is up to date");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_url_is_required_and_never_echoed() {
        let err = DatabaseConfig::from_source(&HashMap::<&str, &str>::new()).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(err.to_string().starts_with("DATABASE_URL is not set"));
        for bad in ["mysql://root:hunter2-db@db/x", "hunter2-db not a url"] {
            let env = HashMap::from([("DATABASE_URL", bad)]);
            let msg = DatabaseConfig::from_source(&env).unwrap_err().to_string();
            assert!(
                msg.contains("is malformed") && !msg.contains("hunter2"),
                "{msg}"
            );
        }
    }

    #[test]
    fn defaults_and_bad_values() {
        let url = "postgresql://dg:db-pass-123@db:5432/deployguard";
        let config = DatabaseConfig::from_source(&HashMap::from([("DATABASE_URL", url)])).unwrap();
        assert_eq!(config.max_connections, 10);
        assert!(config.run_migrations);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("db-pass-123") && shown.contains("db:5432"),
            "{shown}"
        );
        for (var, bad) in [
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("RUN_MIGRATIONS", "maybe"),
        ] {
            let env = HashMap::from([("DATABASE_URL", url), (var, bad)]);
            assert_eq!(DatabaseConfig::from_source(&env).unwrap_err().var, var);
        }
    }
}
