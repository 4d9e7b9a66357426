//! What the HTTP adapters share: one client per adapter with its timeouts, the
//! mapping of statuses and transport failures onto [`ProviderError`], `Retry-After`
//! parsing, and a small server-sent-events decoder.
//!
//! The decoder is written here rather than taken from a crate because both providers
//! use only `event:` and `data:` lines, and owning it keeps the malformed cases (a
//! stream cut in the middle of a UTF-8 character, a line that is not UTF-8) in our
//! hands.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use super::{BuildError, ProviderError};

/// The longest a connection may take to open; a shorter request timeout wins.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error body goes into an error message.
const MESSAGE_LIMIT: usize = 500;

/// One client per adapter: connection pooling, a connect timeout and a total timeout
/// that covers reading the whole answer, streamed or not.
pub(crate) fn client(provider: &str, timeout: Duration) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()
        .map_err(|e| BuildError::Client {
            provider: provider.to_owned(),
            message: error_chain(&e),
        })
}

/// The key as a header value marked sensitive, so reqwest and `http` never print it.
pub(crate) fn secret_header(
    provider: &str,
    prefix: &str,
    key: &SecretString,
) -> Result<HeaderValue, BuildError> {
    let mut value =
        HeaderValue::from_str(&format!("{prefix}{}", key.expose_secret())).map_err(|_| {
            BuildError::InvalidApiKey {
                provider: provider.to_owned(),
            }
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The base URL without a trailing slash, so paths can be appended.
pub(crate) fn trim_base(base_url: &str) -> String {
    base_url.trim_end_matches('/').to_owned()
}

/// Sends the request; answers the response when its status is 2xx, or the error its
/// status and body mean.
pub(crate) async fn send(request: RequestBuilder) -> Result<Response, ProviderError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let body = response.bytes().await.map_err(transport_error)?;
    Err(status_error(status, retry_after, &body))
}

/// Reads a whole non-streamed body.
pub(crate) async fn body(response: Response) -> Result<Vec<u8>, ProviderError> {
    Ok(response.bytes().await.map_err(transport_error)?.to_vec())
}

/// Sorts a non-2xx answer. 529 is Anthropic's "overloaded", which asks for the same
/// treatment as a rate limit; no other provider uses it.
fn status_error(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> ProviderError {
    let message = error_message(body);
    let code = status.as_u16();
    if code == 429 || code == 529 {
        ProviderError::RateLimited {
            retry_after,
            message,
        }
    } else if status.is_server_error() {
        ProviderError::Server {
            status: code,
            message,
        }
    } else {
        // Every other status is a refusal: retrying the same request gets the same
        // answer. Redirects are followed by reqwest and never reach here as 3xx
        // unless they loop.
        ProviderError::Rejected {
            status: code,
            message,
        }
    }
}

/// The readable part of an error body. Both providers answer
/// `{"error": {"message": .., "type": .., "code": ..}}` (Anthropic wraps it in
/// `{"type": "error", ..}`); anything else is quoted, shortened.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(error) = value.get("error")
    {
        if let Some(text) = error.as_str() {
            return shorten(text);
        }
        let label = ["code", "type"]
            .iter()
            .find_map(|k| error.get(*k).and_then(|v| v.as_str()));
        let message = error.get("message").and_then(|v| v.as_str());
        match (label, message) {
            (Some(label), Some(message)) => return shorten(&format!("{label}: {message}")),
            (None, Some(text)) | (Some(text), None) => return shorten(text),
            (None, None) => {}
        }
    }
    shorten(String::from_utf8_lossy(body).trim())
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Maps a reqwest failure: a timeout (connecting, waiting or reading) is
/// [`ProviderError::Timeout`], a decode failure of a body is malformed, everything
/// else (refused, reset, TLS, DNS) is transport.
pub(crate) fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_decode() {
        ProviderError::Malformed(error_chain(&error))
    } else {
        ProviderError::Transport(error_chain(&error))
    }
}

/// The error and its causes, which is where reqwest keeps the useful part
/// ("connection refused"). Request URLs hold no secret: keys travel in headers.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long the provider asked us to wait: OpenAI's `retry-after-ms` when present
/// (it is more precise), else `Retry-After` as delta-seconds or an HTTP-date. A date
/// in the past means no wait. The value is not capped here; the retry policy caps it.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(wait) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(wait);
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // Some servers send fractional seconds; accept them rather than drop the hint.
    if let Ok(seconds) = value.parse::<f64>()
        && let Ok(wait) = Duration::try_from_secs_f64(seconds)
    {
        return Some(wait);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, when the server named the event.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Decodes `text/event-stream` bytes as they arrive, in chunks cut anywhere.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds a chunk; answers the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(event) = self.line(line)? {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Ends the stream: a last event not followed by a blank line still counts.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        if !rest.is_empty() {
            // A non-empty line only adds a field; it never completes an event.
            self.line(rest)?;
        }
        Ok(self.dispatch())
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, ProviderError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = std::str::from_utf8(line).map_err(|_| {
            ProviderError::Malformed("the event stream is not valid UTF-8".to_owned())
        })?;
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // `id:` and `retry:` steer browser reconnection, which we never do.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|data| SseEvent { event, data })
    }
}

/// Reads an event stream to its end, or until `on_event` answers `false`.
pub(crate) async fn read_events<F>(
    mut response: Response,
    mut on_event: F,
) -> Result<(), ProviderError>
where
    F: FnMut(SseEvent) -> Result<bool, ProviderError>,
{
    let mut decoder = SseDecoder::default();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        for event in decoder.push(&chunk)? {
            if !on_event(event)? {
                return Ok(());
            }
        }
    }
    if let Some(event) = decoder.finish()? {
        on_event(event)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::default();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(decoder.push(chunk).expect("valid stream"));
        }
        events.extend(decoder.finish().expect("valid end"));
        events
    }

    #[test]
    fn events_cut_anywhere_even_inside_a_character_decode_whole() {
        let text =
            "event: a\r\ndata: h\u{e9}llo\r\n\r\n: comment\ndata: one\ndata: two\n\ndata: end";
        let bytes = text.as_bytes();
        let whole = decode(&[bytes]);
        for cut in 0..bytes.len() {
            assert_eq!(decode(&[&bytes[..cut], &bytes[cut..]]), whole);
        }
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: Some("a".into()),
                    data: "h\u{e9}llo".into()
                },
                SseEvent {
                    event: None,
                    data: "one\ntwo".into()
                },
                SseEvent {
                    event: None,
                    data: "end".into()
                },
            ]
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_malformed() {
        let mut decoder = SseDecoder::default();
        let result = decoder.push(b"data: \xff\n\n");
        assert!(matches!(result, Err(ProviderError::Malformed(_))));
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_str(value).expect("ascii"));
            }
            map
        };
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after-ms", "1500"), ("retry-after", "2")]),
                now
            ),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &later)]), now),
            Some(Duration::from_secs(120))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(120));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &earlier)]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
