//! The audit trail: who did what to which job, from where, and what came of it.
//! Rows are append-only (the schema refuses updates and deletes).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::Bind;

/// Who is acting, as far as the transport can tell.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Refused: bad input, wrong state, not allowed.
    Rejected,
    /// Accepted but could not be carried out (a dependency was down).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

/// One row to write.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub actor: Actor<'a>,
    pub action: &'a str,
    pub job_id: Option<Uuid>,
    pub outcome: Outcome,
    /// Non-secret context (an error code, counts); a JSON object.
    pub details: serde_json::Value,
}

/// The columns [`AuditRecord::bind`] fills, in its order (`client_ip` as `$n::inet`).
pub const COLUMNS: &str = "actor_id, action, job_id, client_ip, user_agent, details, outcome";

impl AuditRecord<'_> {
    /// Binds the record's [`COLUMNS`] as the query's next seven parameters.
    pub fn bind<'q, Q: Bind<'q>>(&'q self, query: Q) -> Q {
        query
            .bind_one(clip(self.actor.user_id, 255))
            .bind_one(self.action)
            .bind_one(self.job_id)
            .bind_one(self.actor.client_ip.map(|ip| ip.to_string()))
            .bind_one(self.actor.user_agent.map(|ua| clip(ua, 512)))
            .bind_one(&self.details)
            .bind_one(self.outcome.as_str())
    }
}

pub async fn insert(db: impl PgExecutor<'_>, record: &AuditRecord<'_>) -> Result<(), sqlx::Error> {
    let sql =
        format!("INSERT INTO audit_logs ({COLUMNS}) VALUES ($1, $2, $3, $4::inet, $5, $6, $7)");
    record
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .execute(db)
        .await?;
    Ok(())
}

fn clip(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// An audit row as the admin panel reads it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: String,
    pub action: String,
    pub job_id: Option<Uuid>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `success`, `rejected` or `failed`.
    pub outcome: String,
    #[schema(value_type = Object)]
    pub details: sqlx::types::Json<serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub actor_id: Option<&'a str>,
    pub action: Option<&'a str>,
    pub job_id: Option<Uuid>,
    pub outcome: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Continue below this row id (newest first).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A page of the trail, newest first.
pub async fn list(db: &PgPool, filter: &AuditFilter<'_>) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as::<_, AuditEntry>(
        "SELECT id, occurred_at, actor_id, action, job_id, host(client_ip) AS client_ip,
                user_agent, outcome, details
         FROM audit_logs
         WHERE ($1::text IS NULL OR actor_id = $1)
           AND ($2::text IS NULL OR action = $2)
           AND ($3::uuid IS NULL OR job_id = $3)
           AND ($4::text IS NULL OR outcome = $4)
           AND ($5::timestamptz IS NULL OR occurred_at >= $5)
           AND ($6::timestamptz IS NULL OR occurred_at < $6)
           AND ($7::bigint IS NULL OR id < $7)
         ORDER BY id DESC
         LIMIT $8",
    )
    .bind(filter.actor_id)
    .bind(filter.action)
    .bind(filter.job_id)
    .bind(filter.outcome)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.before_id)
    .bind(filter.limit)
    .fetch_all(db)
    .await
}
