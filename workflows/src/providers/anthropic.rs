//! The adapter for Anthropic's messages API: `POST {base_url}/v1/messages` with the
//! `x-api-key` and `anthropic-version: 2023-06-01` headers.
//!
//! Anthropic's `usage.input_tokens` counts only the input read neither from nor into
//! the prompt cache. [`Usage`] wants every input token with the cached ones included,
//! so the adapter adds `cache_read_input_tokens` (billed at the cached price, hence
//! also `cached_input_tokens`) and `cache_creation_input_tokens`. Cache writes are
//! billed here at the plain input price: Anthropic charges them a little more (1.25×
//! for the five-minute cache), which the price book has no column for, and they only
//! occur when a request asks for caching, which Tidemark's requests do not.
//!
//! Streamed usage arrives in two parts: `message_start` carries the input counts,
//! and each `message_delta` carries the *cumulative* output count (the last one
//! wins; summing would over-bill). A stream that ends before `message_stop` is
//! malformed: its usage may be short.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::pricing::Usage;
use reqwest::header::HeaderValue;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::http::{self, SseEvent};
use super::{BuildError, Completion, CompletionRequest, DEFAULT_TIMEOUT, Provider, ProviderError};

/// The API version every request pins, so a new default cannot change the answer's
/// shape under us.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Settings of the Anthropic endpoint. `Debug` shows the key as redacted.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Without the version segment: `https://api.anthropic.com`.
    pub base_url: String,
    pub api_key: SecretString,
    /// The whole call, streamed or not, from sending to the last byte.
    pub timeout: Duration,
    pub stream: bool,
}

impl AnthropicConfig {
    /// The default 60 s timeout, not streamed.
    pub fn new(base_url: impl Into<String>, api_key: SecretString) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            timeout: DEFAULT_TIMEOUT,
            stream: false,
        }
    }
}

/// Calls Anthropic's messages endpoint.
#[derive(Debug)]
pub struct AnthropicProvider {
    url: String,
    api_key: HeaderValue,
    stream: bool,
    client: reqwest::Client,
}

const NAME: &str = "anthropic";

impl AnthropicProvider {
    pub fn new(config: AnthropicConfig) -> Result<Self, BuildError> {
        Ok(Self {
            api_key: http::secret_header(NAME, "", &config.api_key)?,
            client: http::client(NAME, config.timeout)?,
            url: format!("{}/v1/messages", http::trim_base(&config.base_url)),
            stream: config.stream,
        })
    }

    fn body(&self, request: &CompletionRequest) -> serde_json::Value {
        let mut body = json!({
            "model": request.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_output_tokens,
            "stream": self.stream,
        });
        if !request.system.is_empty() {
            body["system"] = json!(request.system);
        }
        body
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        NAME
    }

    #[tracing::instrument(
        name = "provider.complete",
        skip_all,
        fields(provider = NAME, model = %request.model, stream = self.stream),
        err(level = "warn", Display)
    )]
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let call = self
            .client
            .post(&self.url)
            .header("x-api-key", self.api_key.clone())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .header("idempotency-key", request.idempotency_key.as_str())
            .json(&self.body(request));
        let response = http::send(call).await?;
        let (text, usage, model) = if self.stream {
            read_stream(response).await?
        } else {
            read_whole(&http::body(response).await?)?
        };
        Ok(Completion {
            text,
            usage,
            model: model.unwrap_or_else(|| request.model.clone()),
            latency: started.elapsed(),
        })
    }
}

#[derive(Deserialize)]
struct Message {
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// Every field is optional because `message_delta` may repeat only some of them.
#[derive(Deserialize, Default)]
struct WireUsage {
    input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl WireUsage {
    /// Takes the counts a later (cumulative) report carries.
    fn update(&mut self, later: WireUsage) {
        let fields = [
            (&mut self.input_tokens, later.input_tokens),
            (
                &mut self.cache_read_input_tokens,
                later.cache_read_input_tokens,
            ),
            (
                &mut self.cache_creation_input_tokens,
                later.cache_creation_input_tokens,
            ),
            (&mut self.output_tokens, later.output_tokens),
        ];
        for (field, later) in fields {
            if later.is_some() {
                *field = later;
            }
        }
    }

    fn neutral(&self) -> Result<Usage, ProviderError> {
        let (Some(input), Some(output)) = (self.input_tokens, self.output_tokens) else {
            return Err(ProviderError::Malformed(
                "the usage lacks input_tokens or output_tokens".to_owned(),
            ));
        };
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        Ok(Usage {
            input_tokens: input.saturating_add(cache_read).saturating_add(cache_write),
            cached_input_tokens: cache_read,
            output_tokens: output,
        })
    }
}

type Parts = (String, Usage, Option<String>);

fn read_whole(body: &[u8]) -> Result<Parts, ProviderError> {
    let message: Message = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("the answer is not a message: {e}")))?;
    let usage = message
        .usage
        .ok_or_else(|| ProviderError::Malformed("the answer carries no usage".to_owned()))?
        .neutral()?;
    let text = message
        .content
        .into_iter()
        .filter(|block| block.kind == "text")
        .filter_map(|block| block.text)
        .collect();
    Ok((text, usage, message.model))
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    message: Option<Message>,
    delta: Option<EventDelta>,
    usage: Option<WireUsage>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct EventDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

async fn read_stream(response: reqwest::Response) -> Result<Parts, ProviderError> {
    let mut text = String::new();
    let mut usage: Option<WireUsage> = None;
    let mut model = None;
    let mut stopped = false;
    http::read_events(response, |event: SseEvent| {
        let event: Event = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::Malformed(format!("a stream event is not JSON: {e}")))?;
        match event.kind.as_str() {
            "message_start" => {
                let message = event.message.ok_or_else(|| {
                    ProviderError::Malformed("message_start carries no message".to_owned())
                })?;
                model = message.model;
                usage = Some(message.usage.unwrap_or_default());
            }
            "content_block_delta" => {
                if let Some(delta) = event.delta
                    && delta.kind.as_deref() == Some("text_delta")
                    && let Some(piece) = delta.text
                {
                    text.push_str(&piece);
                }
            }
            "message_delta" => {
                let (Some(total), Some(later)) = (usage.as_mut(), event.usage) else {
                    return Err(ProviderError::Malformed(
                        "message_delta before message_start or without usage".to_owned(),
                    ));
                };
                total.update(later);
            }
            "message_stop" => {
                stopped = true;
                return Ok(false);
            }
            "error" => return Err(stream_error(event.error)),
            // `ping`, `content_block_start`, `content_block_stop`, and event types
            // added later, which the API promises clients may skip.
            _ => {}
        }
        Ok(true)
    })
    .await?;
    if !stopped {
        return Err(ProviderError::Malformed(
            "the stream ended before message_stop".to_owned(),
        ));
    }
    let usage = usage
        .ok_or_else(|| ProviderError::Malformed("the stream carried no message_start".to_owned()))?
        .neutral()?;
    Ok((text, usage, model))
}

/// An error reported inside a stream, after the 200 status went out: an overload
/// is treated like a 529, anything else like a 500.
fn stream_error(error: Option<WireError>) -> ProviderError {
    let Some(error) = error else {
        return ProviderError::Server {
            status: 500,
            message: "an error event without details".to_owned(),
        };
    };
    let message = format!("{}: {}", error.kind, error.message);
    if error.kind == "overloaded_error" {
        ProviderError::RateLimited {
            retry_after: None,
            message,
        }
    } else {
        ProviderError::Server {
            status: 500,
            message,
        }
    }
}
