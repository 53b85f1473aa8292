//! Idempotency keys: a client that retries a POST with the same `Idempotency-Key` gets
//! the first answer again, and the action happens once.

use sqlx::PgPool;

/// What a key holds.
#[derive(Debug, Clone)]
pub enum Claim {
    /// First use: the caller acts, then [`complete`]s or [`release`]s the key.
    New,
    /// Used before for the same request, answered with this.
    Replay {
        status_code: u16,
        response: serde_json::Value,
        location: Option<String>,
    },
    /// Used before for the same request, whose answer is not written yet.
    InFlight,
    /// Used before for a different request.
    Mismatch,
}

/// fingerprint, status code, response, location.
type StoredKey = (
    Vec<u8>,
    Option<i16>,
    Option<serde_json::Value>,
    Option<String>,
);

/// An unanswered key older than this is taken over: its first request died.
const ABANDONED_AFTER_SECS: f64 = 120.0;

/// Claims `key` of `owner` for a request with `fingerprint`.
pub async fn claim(
    db: &PgPool,
    owner: &str,
    key: &str,
    fingerprint: &[u8; 32],
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (owner_id, key, fingerprint) VALUES ($1, $2, $3)
         ON CONFLICT (owner_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                                                   created_at = now()
         WHERE idempotency_keys.status_code IS NULL
           AND idempotency_keys.fingerprint = EXCLUDED.fingerprint
           AND idempotency_keys.created_at < now() - make_interval(secs => $4)",
    )
    .bind(owner)
    .bind(key)
    .bind(&fingerprint[..])
    .bind(ABANDONED_AFTER_SECS)
    .execute(db)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT fingerprint, status_code, response, location FROM idempotency_keys
             WHERE owner_id = $1 AND key = $2",
    )
    .bind(owner)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        // Released between the two statements: the client may simply retry.
        None => Claim::InFlight,
        Some((stored, _, _, _)) if stored != fingerprint[..] => Claim::Mismatch,
        Some((_, Some(code), response, location)) => Claim::Replay {
            status_code: u16::try_from(code).unwrap_or(500),
            response: response.unwrap_or(serde_json::Value::Null),
            location,
        },
        Some((_, None, _, _)) => Claim::InFlight,
    })
}

/// Stores the answer to replay.
pub async fn complete(
    db: &PgPool,
    owner: &str,
    key: &str,
    status_code: u16,
    response: &serde_json::Value,
    location: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = $3, response = $4, location = $5
         WHERE owner_id = $1 AND key = $2",
    )
    .bind(owner)
    .bind(key)
    .bind(i16::try_from(status_code).unwrap_or(500))
    .bind(response)
    .bind(location)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets a key whose request failed in a way a retry may fix (a dependency was down).
pub async fn release(db: &PgPool, owner: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE owner_id = $1 AND key = $2 AND status_code IS NULL",
    )
    .bind(owner)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes keys older than `age_secs` (they are kept long enough for any CI retry).
pub async fn prune(db: &PgPool, age_secs: f64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(age_secs)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
