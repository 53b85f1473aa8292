//! Callbacks: when a job settles, a POST to its `callback_url`, signed with
//! HMAC-SHA-256 over the exact body bytes (`X-DeployGuard-Signature: sha256=<hex>`).
//!
//! The schema queues a delivery in the same statement that changes the job's status,
//! whichever process makes the change; [`run`] delivers them with retries and backoff.
//! Rows are leased with `SKIP LOCKED`, so every API replica can run the loop.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use sqlx::PgPool;

use crate::net::{AllowList, check_url};

pub const SIGNATURE_HEADER: &str = "x-deployguard-signature";
pub const EVENT_HEADER: &str = "x-deployguard-event";
pub const DELIVERY_HEADER: &str = "x-deployguard-delivery";

/// How deliveries are made.
#[derive(Clone)]
pub struct Policy {
    pub secret: SecretString,
    /// First retry delay; each later one doubles (capped at an hour).
    pub retry_base: Duration,
    pub max_attempts: i32,
    pub allow: AllowList,
    pub allow_http: bool,
    pub timeout: Duration,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &SecretString, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(sqlx::FromRow)]
struct Due {
    id: i64,
    url: String,
    event: String,
    payload: serde_json::Value,
    attempts: i32,
}

/// Delivers one batch of due callbacks; returns how many were attempted.
pub async fn deliver_once(db: &PgPool, policy: &Policy) -> Result<usize, sqlx::Error> {
    // The lease: a delivery in progress is not due again for a minute.
    let due: Vec<Due> = sqlx::query_as(
        "UPDATE job_callbacks SET attempts = attempts + 1,
                next_attempt_at = now() + interval '60 seconds'
         WHERE id IN (
            SELECT id FROM job_callbacks
            WHERE delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= now()
            ORDER BY next_attempt_at, id
            LIMIT 20
            FOR UPDATE SKIP LOCKED)
         RETURNING id, url, event, payload, attempts",
    )
    .fetch_all(db)
    .await?;
    let attempted = due.len();
    let outcomes = futures_util::future::join_all(due.iter().map(|d| deliver(d, policy))).await;
    for (d, outcome) in due.iter().zip(outcomes) {
        match outcome {
            Ok(status) => {
                sqlx::query(
                    "UPDATE job_callbacks SET delivered_at = now(), last_status = $2,
                            last_error = NULL
                     WHERE id = $1",
                )
                .bind(d.id)
                .bind(i16::try_from(status).unwrap_or(0))
                .execute(db)
                .await?;
            }
            Err((status, error)) => {
                let give_up = d.attempts >= policy.max_attempts;
                let delay = policy
                    .retry_base
                    .saturating_mul(1 << (d.attempts - 1).clamp(0, 20))
                    .min(Duration::from_secs(3600));
                tracing::warn!(
                    callback_id = d.id,
                    event = %d.event,
                    attempt = d.attempts,
                    give_up,
                    error = %error,
                    "callback delivery failed"
                );
                sqlx::query(
                    "UPDATE job_callbacks SET last_status = $2, last_error = $3,
                            next_attempt_at = now() + make_interval(secs => $4),
                            abandoned_at = CASE WHEN $5 THEN now() END
                     WHERE id = $1",
                )
                .bind(d.id)
                .bind(status.and_then(|s| i16::try_from(s).ok()))
                .bind(error.chars().take(1000).collect::<String>())
                .bind(delay.as_secs_f64())
                .bind(give_up)
                .execute(db)
                .await?;
            }
        }
    }
    Ok(attempted)
}

/// One POST. The host is resolved and checked again now (its address may have changed
/// since the job was created) and the request goes to exactly the checked address.
async fn deliver(due: &Due, policy: &Policy) -> Result<u16, (Option<u16>, String)> {
    let url = url::Url::parse(&due.url).map_err(|e| (None, format!("bad URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        other => return Err((None, format!("{other} URLs are not allowed"))),
    }
    let host = url.host_str().ok_or((None, "no host".to_owned()))?;
    let addrs = check_url(&url, &policy.allow, Duration::from_secs(5))
        .await
        .map_err(|e| (None, e.to_string()))?;
    let body = serde_json::to_vec(&due.payload).map_err(|e| (None, e.to_string()))?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(policy.timeout)
        .resolve_to_addrs(host, &addrs)
        .build()
        .map_err(|e| (None, e.to_string()))?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "DeployGuard-Callback/2")
        .header(SIGNATURE_HEADER, sign(&policy.secret, &body))
        .header(EVENT_HEADER, &due.event)
        .header(DELIVERY_HEADER, due.id.to_string())
        .body(body)
        .send()
        .await
        // reqwest's error names the URL, which the job's owner gave us; no secret.
        .map_err(|e| (None, e.without_url().to_string()))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("the receiver answered {status}")))
    }
}

/// Delivers callbacks until `stop` resolves: a batch whenever there is work, otherwise
/// a poll every `interval`.
pub async fn run(db: PgPool, policy: Policy, interval: Duration, stop: impl Future<Output = ()>) {
    let work = async {
        loop {
            match deliver_once(&db, &policy).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "callback delivery loop failed; retrying"),
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}
