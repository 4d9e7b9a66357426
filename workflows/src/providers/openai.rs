//! The adapter for OpenAI's chat completions API and the servers that copy it (vLLM,
//! Ollama, LiteLLM, llama.cpp): `POST {base_url}/chat/completions` with a bearer key.
//!
//! OpenAI's `usage.prompt_tokens` already includes the cached tokens
//! (`prompt_tokens_details.cached_tokens`), which is the convention
//! [`Usage`] keeps, so the numbers pass through unchanged. The request sends
//! `max_tokens` rather than `max_completion_tokens` because the compatible servers
//! know only the older name; OpenAI's reasoning models, which require the newer one,
//! are not supported yet. Streamed calls ask for `stream_options.include_usage` and
//! read the usage from the last chunk; a stream without it is malformed, since a call
//! whose cost is unknown cannot be committed to a budget.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::pricing::Usage;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::http::{self, SseEvent};
use super::{BuildError, Completion, CompletionRequest, DEFAULT_TIMEOUT, Provider, ProviderError};

/// Settings of an OpenAI-compatible endpoint. `Debug` shows the key as redacted.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The provider's name in the price book and in logs: `openai`, or e.g. `vllm`
    /// for a self-hosted server.
    pub name: String,
    /// Up to and including the version segment: `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: SecretString,
    /// The whole call, streamed or not, from sending to the last byte.
    pub timeout: Duration,
    pub stream: bool,
}

impl OpenAiConfig {
    /// An `openai` endpoint with the default 60 s timeout, not streamed.
    pub fn new(base_url: impl Into<String>, api_key: SecretString) -> Self {
        Self {
            name: "openai".to_owned(),
            base_url: base_url.into(),
            api_key,
            timeout: DEFAULT_TIMEOUT,
            stream: false,
        }
    }
}

/// Calls an OpenAI-compatible chat completions endpoint.
#[derive(Debug)]
pub struct OpenAiProvider {
    name: String,
    url: String,
    authorization: HeaderValue,
    stream: bool,
    client: reqwest::Client,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, BuildError> {
        Ok(Self {
            authorization: http::secret_header(&config.name, "Bearer ", &config.api_key)?,
            client: http::client(&config.name, config.timeout)?,
            url: format!("{}/chat/completions", http::trim_base(&config.base_url)),
            stream: config.stream,
            name: config.name,
        })
    }

    fn body(&self, request: &CompletionRequest) -> serde_json::Value {
        let mut messages = Vec::with_capacity(2);
        if !request.system.is_empty() {
            messages.push(json!({"role": "system", "content": request.system}));
        }
        messages.push(json!({"role": "user", "content": request.prompt}));
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_output_tokens,
            "stream": self.stream,
        });
        if self.stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    #[tracing::instrument(
        name = "provider.complete",
        skip_all,
        fields(provider = %self.name, model = %request.model, stream = self.stream),
        err(level = "warn", Display)
    )]
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let call = self
            .client
            .post(&self.url)
            .header(AUTHORIZATION, self.authorization.clone())
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
struct Response {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    /// Null when the model refused or only called tools; that is an empty text, and
    /// the call is still billed.
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(wire: WireUsage) -> Self {
        Usage {
            input_tokens: wire.prompt_tokens,
            cached_input_tokens: wire
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output_tokens: wire.completion_tokens,
        }
    }
}

type Parts = (String, Usage, Option<String>);

fn read_whole(body: &[u8]) -> Result<Parts, ProviderError> {
    let response: Response = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("the answer is not a completion: {e}")))?;
    let usage = response
        .usage
        .ok_or_else(|| ProviderError::Malformed("the answer carries no usage".to_owned()))?;
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed("the answer carries no choice".to_owned()))?;
    Ok((
        choice.message.content.unwrap_or_default(),
        usage.into(),
        response.model,
    ))
}

#[derive(Deserialize)]
struct Chunk {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<WireUsage>,
    /// Some compatible servers report a failure inside the stream.
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Delta,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
}

async fn read_stream(response: reqwest::Response) -> Result<Parts, ProviderError> {
    let mut text = String::new();
    let mut usage = None;
    let mut model = None;
    http::read_events(response, |event: SseEvent| {
        if event.data.trim() == "[DONE]" {
            return Ok(false);
        }
        let chunk: Chunk = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::Malformed(format!("a stream chunk is not JSON: {e}")))?;
        if let Some(error) = chunk.error {
            let wrapped = json!({ "error": error }).to_string();
            return Err(ProviderError::Server {
                status: 500,
                message: http::error_message(wrapped.as_bytes()),
            });
        }
        if chunk.model.is_some() {
            model = chunk.model;
        }
        if let Some(delta) = chunk
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.delta.content)
        {
            text.push_str(&delta);
        }
        if let Some(wire) = chunk.usage {
            usage = Some(Usage::from(wire));
        }
        Ok(true)
    })
    .await?;
    let usage = usage.ok_or_else(|| {
        ProviderError::Malformed("the stream ended without a usage chunk".to_owned())
    })?;
    Ok((text, usage, model))
}
