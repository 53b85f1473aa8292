//! Every error the API answers with: `{"error": {"code", "message"}}` and the status
//! that fits. Internal failures are logged here, once, and answered without detail.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use deployguard::jobs::{JobStatus, TransitionError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `validation_error`, `invalid_state`.
    pub code: String,
    /// For people; never contains a secret or a credential.
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_error", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "job not found")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_state", message)
    }

    pub fn broker_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the message broker is unavailable; nothing was changed, retry later",
        )
    }

    pub fn storage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "object storage is unavailable; retry later",
        )
    }

    /// A database failure: 503 when PostgreSQL cannot be reached, 500 otherwise.
    pub fn database(err: &sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => {
                tracing::warn!(error = %err, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; retry later",
                )
            }
            // A data exception (SQLSTATE class 22) or a value sqlx cannot encode comes
            // from what the request carried, not from a fault here.
            // 23514: a CHECK constraint (a length bound) caught what validation missed.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("22") || c == "23514") =>
            {
                Self::validation("a value in the request is out of range or not valid text")
            }
            sqlx::Error::Encode(_) => {
                Self::validation("a value in the request is out of range or not valid text")
            }
            other => Self::internal(other),
        }
    }

    pub fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred",
        )
    }

    /// The 409 for an action a job's status does not allow.
    pub fn wrong_state(action: &str, status: JobStatus, needs: &str) -> Self {
        Self::conflict(format!(
            "cannot {action}: the job is {status}; this needs a job that is {needs}"
        ))
    }

    /// Maps a refused transition: 404 for a missing (or someone else's) job, 409 with
    /// `needs` for a job in another status.
    pub fn transition(err: TransitionError, action: &str, needs: &str) -> Self {
        match err {
            TransitionError::NotFound => Self::not_found(),
            TransitionError::WrongState(status) => Self::wrong_state(action, status, needs),
            TransitionError::Database(e) => Self::database(&e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::database(&err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        // The audit and metrics layers read the code without parsing the body.
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// The error code of an answer, for the layers that record it.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);
