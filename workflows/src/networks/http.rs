//! The HTTP handling every network adapter shares: one client with bounded timeouts,
//! and the mapping of transport errors and status codes onto [`DeliveryError`].
//!
//! The line that matters is whether the request left this process. A failure to
//! connect happened before anything was sent, so it is `Transient`. A timeout or a
//! broken connection after that point may hide a post that the network did create,
//! so it is `Unknown`. Redirects are not followed: a POST answered with one has not
//! clearly been processed, and following it could post twice.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::{DeliveryError, NetworkConfigError};

/// Most of an answer's body that is read; a network has no reason to send more, and
/// a broken one must not fill the memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most of an error answer that is kept in the error message.
const MAX_MESSAGE_CHARS: usize = 300;

/// Timeouts of the outgoing client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Longest wait for a connection (TCP and TLS) to be established.
    pub connect_timeout: Duration,
    /// Longest wait for a whole exchange, from connecting to the end of the answer.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The client every adapter shares (clones share one connection pool).
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, NetworkConfigError> {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(NetworkConfigError::Client)
}

/// Sends a request, classifying a failure to get an answer.
pub(crate) async fn send(request: RequestBuilder) -> Result<Response, DeliveryError> {
    request
        .send()
        .await
        .map_err(|error| classify_transport(&error))
}

/// Reads an answer's body (at most [`MAX_BODY_BYTES`]). The request was received, so
/// a failure here leaves the outcome unknown.
pub(crate) async fn read_body(response: Response) -> Result<Vec<u8>, DeliveryError> {
    read_limited(response).await.map_err(|error| {
        DeliveryError::Unknown(format!("reading the answer failed: {}", describe(&error)))
    })
}

/// The error for an answer that is not a success.
pub(crate) async fn refusal(response: Response, now: DateTime<Utc>) -> DeliveryError {
    let status = response.status();
    let headers = response.headers().clone();
    // The status already decides the class; the body only adds a message, so a
    // failure to read it is not worth reporting.
    let body = read_limited(response).await.unwrap_or_default();
    classify_status(status, &headers, &body, now)
}

async fn read_limited(mut response: Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_BODY_BYTES {
            break;
        }
    }
    Ok(body)
}

/// Classifies a request that got no answer.
fn classify_transport(error: &reqwest::Error) -> DeliveryError {
    let description = describe(error);
    if error.is_connect() {
        // Checked before `is_timeout`: a connect timeout is both, and nothing was sent.
        DeliveryError::Transient(format!("could not connect: {description}"))
    } else if error.is_builder() {
        // Adapters validate URLs and headers when they are built, so this is not
        // expected; what is certain is that nothing was sent.
        DeliveryError::Transient(format!("the request could not be built: {description}"))
    } else if error.is_timeout() {
        DeliveryError::Unknown(format!(
            "no answer before the timeout, the request may have been received: {description}"
        ))
    } else {
        DeliveryError::Unknown(format!(
            "the connection failed after the request was sent: {description}"
        ))
    }
}

/// An error and its causes on one line, without the URL (which may hold a secret).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    // `reqwest::Error`'s own message names the URL; its causes do not.
    match error.url() {
        Some(url) => text.replace(url.as_str(), "<url>"),
        None => text,
    }
}

/// Classifies an answer that is not a success.
pub(crate) fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> DeliveryError {
    let message = error_message(status, body);
    match status.as_u16() {
        401 | 403 => DeliveryError::Auth(message),
        429 => DeliveryError::RateLimited {
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, now)),
        },
        // The server gave up waiting for the request, or will not take it yet:
        // it was not processed.
        408 | 425 => DeliveryError::Transient(message),
        // A conflict may be the receiver saying it already has this message.
        409 => DeliveryError::Unknown(message),
        400..=499 => DeliveryError::BadContent(message),
        // Retrying after a 5xx is safe even when a gateway timed out behind a post
        // that was created, because every attempt carries the same idempotency key.
        500..=599 => DeliveryError::Transient(message),
        // 1xx and 3xx leave it open whether the post was created.
        _ => DeliveryError::Unknown(format!("unexpected answer: {message}")),
    }
}

/// The most useful words of an error answer: the `error` (or `message`) field of a
/// JSON body, else the body's text, else the status line.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            ["error", "message", "error_description"]
                .iter()
                .find_map(|field| value.get(field)?.as_str().map(str::to_owned))
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

/// Reads a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`). A date already past means "now".
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::from(now))
            .unwrap_or(Duration::ZERO),
    )
}

/// The wait until an absolute time, zero if it has passed.
pub(crate) fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("valid time")
            .to_utc()
    }

    #[test]
    fn retry_after_in_seconds_is_read_as_a_delay() {
        assert_eq!(
            parse_retry_after(" 7 ", now()),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn retry_after_as_an_http_date_is_the_wait_until_then() {
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_after_in_the_past_means_now() {
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_that_is_neither_is_ignored() {
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
    }

    #[test]
    fn error_messages_prefer_the_json_error_field_and_are_bounded() {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(
            error_message(
                status,
                br#"{"error":"Validation failed: Text can't be blank"}"#
            ),
            "422 Unprocessable Entity: Validation failed: Text can't be blank"
        );
        assert_eq!(error_message(status, b""), "422 Unprocessable Entity");
        let long = "x".repeat(10_000);
        assert!(error_message(status, long.as_bytes()).len() < 400);
    }

    #[test]
    fn statuses_are_classified_by_what_a_retry_would_do() {
        let headers = HeaderMap::new();
        let class = |code: u16| {
            let status = StatusCode::from_u16(code).expect("valid status");
            classify_status(status, &headers, b"", now()).code()
        };
        assert_eq!(class(400), "network_refused_content");
        assert_eq!(class(401), "network_auth_failed");
        assert_eq!(class(403), "network_auth_failed");
        assert_eq!(class(404), "network_refused_content");
        assert_eq!(class(408), "network_unavailable");
        assert_eq!(class(409), "delivery_outcome_unknown");
        assert_eq!(class(413), "network_refused_content");
        assert_eq!(class(422), "network_refused_content");
        assert_eq!(class(429), "network_rate_limited");
        assert_eq!(class(500), "network_unavailable");
        assert_eq!(class(503), "network_unavailable");
        assert_eq!(class(303), "delivery_outcome_unknown");
    }
}
