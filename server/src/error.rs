//! Every error the API returns: `{"error": {"kind", "message"}}`, the status mapped from the
//! kind here and nowhere else.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// Stable, kebab-case: what a client branches on.
    pub kind: &'static str,
    /// For people.
    pub message: String,
    /// Extra fields for the error object (the failed load step, say).
    pub detail: Option<Box<serde_json::Value>>,
    /// Seconds to send as Retry-After (429 and 503; 503 defaults to 1).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error of `kind` (see [`ApiError::status`]).
    pub fn new(kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            detail: None,
            retry_after_s: None,
        }
    }

    /// The HTTP status of the kind.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            "invalid-request" | "invalid-input" => StatusCode::BAD_REQUEST,
            "unauthorized" => StatusCode::UNAUTHORIZED,
            "forbidden" => StatusCode::FORBIDDEN,
            "not-found" => StatusCode::NOT_FOUND,
            "too-large" => StatusCode::PAYLOAD_TOO_LARGE,
            "unsupported-media-type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "load-failed" | "config-invalid" => StatusCode::UNPROCESSABLE_ENTITY,
            "conflict" | "guard-refused" | "busy" => StatusCode::CONFLICT,
            "rate-limited" => StatusCode::TOO_MANY_REQUESTS,
            "overloaded" | "timeout" | "cache-unavailable" | "log-unavailable" | "not-ready" => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after_s = self.retry_after_s;
        let mut error = serde_json::json!({ "kind": self.kind, "message": self.message });
        if let Some(detail) = self.detail
            && let serde_json::Value::Object(extra) = *detail
        {
            for (k, v) in extra {
                error[k] = v;
            }
        }
        let mut response =
            (status, axum::Json(serde_json::json!({ "error": error }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            // Host trouble or a limit, not an answer: come back later.
            let seconds = retry_after_s.unwrap_or(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<rulebox::RegistryError> for ApiError {
    fn from(e: rulebox::RegistryError) -> ApiError {
        let kind = match &e {
            rulebox::RegistryError::Overloaded(_) => "overloaded",
            rulebox::RegistryError::NoPrevious(_) => "conflict",
            _ => "not-found",
        };
        ApiError::new(kind, e.to_string())
    }
}

impl From<rulebox::Overloaded> for ApiError {
    fn from(e: rulebox::Overloaded) -> ApiError {
        ApiError::new("overloaded", e.to_string())
    }
}

impl From<rulebox::LoadFailure> for ApiError {
    fn from(f: rulebox::LoadFailure) -> ApiError {
        ApiError {
            detail: Some(Box::new(serde_json::json!({ "step": f.step }))),
            ..ApiError::new("load-failed", f.error.to_string())
        }
    }
}
