//! RFC 9457 `application/problem+json` bodies.
//!
//! Every failure Tidemark answers over HTTP is one of these, with a stable
//! machine-readable `code` that clients can branch on. Each HTTP crate maps its own
//! error enum onto a [`Problem`] in one place.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

/// The media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem details body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:tidemark:problem:<code>`: a stable URI naming the problem kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human-readable summary of the problem kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Seconds after which a retry may succeed (sent as `Retry-After` too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:tidemark:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` hint.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The opaque answer to an unexpected failure; the cause is logged, never sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an unexpected error occurred; it has been logged",
        )
    }

    /// Renders the problem as a response.
    pub fn to_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == 401 {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"tidemark\""));
        }
        response.json(self)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        Problem::status_code(self)
    }

    fn error_response(&self) -> HttpResponse {
        self.to_response()
    }
}
