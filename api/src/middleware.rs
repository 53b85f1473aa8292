//! Layers around the protected routes: the audit record of refused and failed actions,
//! and idempotency keys.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deployguard::audit::{AuditRecord, Outcome};
use deployguard::jobs::idempotency::{self, Claim};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};

/// The audited action of a route, if it is one.
pub fn action(method: &Method, route: &str) -> Option<&'static str> {
    let route = route.strip_prefix("/api/v2").unwrap_or(route);
    Some(match (method.as_str(), route) {
        ("POST", "/jobs") => "job.create",
        ("DELETE", "/jobs/{id}") => "job.cancel",
        ("POST", "/jobs/{id}/secrets/select") => "job.select_secrets",
        ("POST", "/jobs/{id}/clean") => "job.clean",
        ("POST", "/jobs/{id}/push") => "job.push",
        ("GET", "/jobs/{id}/download") => "job.download",
        ("POST", "/admin/dead-letters/{task_id}/requeue") => "admin.dead_letter.requeue",
        ("POST", "/admin/dead-letters/requeue") => "admin.dead_letter.requeue_all",
        ("DELETE", "/admin/dead-letters") => "admin.dead_letter.purge",
        _ => return None,
    })
}

/// Handlers audit what they did; this records what was refused (4xx) or could not be
/// done (5xx), so every attempted action leaves a row.
pub async fn audit_refusals(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let action = route.as_deref().and_then(|r| action(req.method(), r));
    let caller = req.extensions().get::<Arc<Caller>>().cloned();
    let job_id = req
        .uri()
        .path()
        .strip_prefix("/api/v2/jobs/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|id| Uuid::parse_str(id).ok());
    let response = next.run(req).await;
    let status = response.status();
    if let (Some(action), Some(caller)) = (action, caller)
        && (status.is_client_error() || status.is_server_error())
    {
        let code = response.extensions().get::<ErrorCode>().map_or("", |c| c.0);
        let record = AuditRecord {
            actor: caller.actor(),
            action,
            job_id,
            outcome: if status.is_server_error() {
                Outcome::Failed
            } else {
                Outcome::Rejected
            },
            details: serde_json::json!({"status": status.as_u16(), "error_code": code}),
        };
        if let Err(err) = deployguard::audit::insert(&state.db, &record).await {
            tracing::warn!(error = %err, action, "could not write the audit row of a refused request");
        }
    }
    response
}

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// `Idempotency-Key` on POST: the first request with a key acts and its 2xx answer is
/// kept; a retry with the same key and body gets that answer again
/// (`Idempotent-Replayed: true`); the same key with another body is a 409.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw_key) = req.headers().get(IDEMPOTENCY_HEADER) else {
        return next.run(req).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return ApiError::validation(
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    let Some(caller) = req.extensions().get::<Arc<Caller>>().cloned() else {
        return next.run(req).await;
    };
    // The claim, the action and the stored answer run to the end together even if the
    // client hangs up: otherwise the key would stay unanswered and the retry that
    // follows a timeout would act a second time.
    tokio::spawn(keyed(state, caller, key, req, next))
        .await
        .unwrap_or_else(|e| ApiError::internal(&e).into_response())
}

async fn keyed(
    state: AppState,
    caller: Arc<Caller>,
    key: String,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, state.api.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than this API accepts",
            )
            .into_response();
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.path());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let fingerprint: [u8; 32] = hasher.finalize().into();
    match idempotency::claim(&state.db, &caller.user_id, &key, &fingerprint).await {
        Err(err) => return ApiError::database(&err).into_response(),
        Ok(Claim::Mismatch) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request",
            )
            .into_response();
        }
        Ok(Claim::InFlight) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .into_response();
        }
        Ok(Claim::Replay {
            status_code,
            response,
            location,
        }) => {
            let status = StatusCode::from_u16(status_code).unwrap_or(StatusCode::OK);
            let mut replay = (status, axum::Json(response)).into_response();
            let headers = replay.headers_mut();
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            if let Some(loc) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                headers.insert(header::LOCATION, loc);
            }
            return replay;
        }
        Ok(Claim::New) => {}
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        if let Err(err) = idempotency::release(&state.db, &caller.user_id, &key).await {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, 4 << 20).await {
        Ok(b) => b,
        Err(err) => return ApiError::internal(&err).into_response(),
    };
    let stored: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    let location = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok());
    if let Err(err) = idempotency::complete(
        &state.db,
        &caller.user_id,
        &key,
        parts.status.as_u16(),
        &stored,
        location,
    )
    .await
    {
        tracing::warn!(error = %err, "could not store an idempotent answer");
    }
    Response::from_parts(parts, Body::from(bytes))
}
