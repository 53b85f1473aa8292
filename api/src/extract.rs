//! Extractors whose rejections are our JSON errors instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON body: wrong content type → 415, too large → 413, anything unreadable or not
/// matching the schema (unknown fields included) → 400.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than this API accepts",
        ),
        _ => {
            let text = rejection.body_text();
            // axum prefixes the serde message with a sentence of its own.
            let detail = text.rsplit_once(": ").map_or(text.as_str(), |(_, d)| d);
            let message = match rejection {
                JsonRejection::JsonSyntaxError(_) => {
                    format!("the body is not valid JSON: {detail}")
                }
                _ => format!("the body does not match the schema: {detail}"),
            };
            ApiError::new(StatusCode::BAD_REQUEST, "validation_error", message)
        }
    }
}

/// Query parameters; anything unreadable → 400.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text.rsplit_once(": ").map_or(text.as_str(), |(_, d)| d);
    ApiError::validation(format!("bad query parameters: {detail}"))
}

/// The `{id}` of a job route. Anything that is not a UUID cannot name a job: 404.
pub struct JobId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        Uuid::parse_str(&raw)
            .map(Self)
            .map_err(|_| ApiError::not_found())
    }
}

/// A free-text filter from a query string: at most 255 characters, no control
/// characters (PostgreSQL text cannot hold NUL).
pub fn text_filter(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > 255 || v.chars().any(char::is_control) => {
            Err(ApiError::validation(format!(
                "{field} must be at most 255 characters without control characters"
            )))
        }
        _ => Ok(()),
    }
}

/// A time filter the database can hold: between the years 1970 and 9999.
pub fn time_filter(
    field: &str,
    value: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), ApiError> {
    use chrono::Datelike;
    match value {
        Some(t) if !(1970..=9999).contains(&t.year()) => Err(ApiError::validation(format!(
            "{field} must be between the years 1970 and 9999"
        ))),
        _ => Ok(()),
    }
}
