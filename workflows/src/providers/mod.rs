//! AI text providers behind one trait, so the generation workflow spends a tenant's
//! budget the same way whichever model writes the text.
//!
//! Each adapter turns a [`CompletionRequest`] into one HTTP call (or, for
//! [`local::LocalProvider`], no call at all) and answers a [`Completion`] whose
//! [`Usage`] is provider-neutral: `input_tokens` always includes the cached ones, so
//! [`domain::pricing::ModelPrice::cost`] bills every adapter alike. Failures are
//! sorted into a small [`ProviderError`] with a stable code and a retryable flag.
//!
//! The adapters never retry. The caller records every attempt as an event, so it
//! drives retries itself with [`resilience::RetryPolicy`] and
//! [`resilience::CircuitBreaker`]; [`resilience::Guarded`] wraps a provider with a
//! breaker for callers that only want the refusal.

pub mod anthropic;
mod http;
pub mod local;
pub mod openai;
pub mod resilience;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::pricing::Usage;

pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use local::LocalProvider;
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use resilience::{BreakerConfig, BreakerState, CircuitBreaker, Guarded, RetryPolicy};

/// How long a call may take, from sending the request to the last byte of the answer,
/// unless a config says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One generation call, in provider-neutral form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRequest {
    /// The model as the provider names it (`gpt-4o-mini`, `claude-sonnet-4-5`), not
    /// the price book's `provider/model`.
    pub model: String,
    /// Instructions; left out of the call when empty.
    pub system: String,
    pub prompt: String,
    /// The output ceiling sent to the provider; the budget reservation was sized on it.
    pub max_output_tokens: u32,
    /// Sent as the `Idempotency-Key` header; the same for every retry of one attempt
    /// chain.
    pub idempotency_key: String,
}

/// What a provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    /// The provider's own token count; `input_tokens` includes the cached ones.
    pub usage: Usage,
    /// The model as the provider reported it (often a dated snapshot of the one asked
    /// for); the requested name when the answer does not say.
    pub model: String,
    /// From sending the request to reading the last byte of the answer.
    pub latency: Duration,
}

/// Why a call gave no completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 429, or Anthropic's 529 / `overloaded_error`: try again later.
    #[error("the provider is rate limiting or overloaded: {message}")]
    RateLimited {
        /// What the provider asked for (`retry-after-ms` or `Retry-After`), uncapped.
        retry_after: Option<Duration>,
        message: String,
    },
    /// A 5xx answer.
    #[error("the provider failed with status {status}: {message}")]
    Server { status: u16, message: String },
    /// No complete answer within the request timeout.
    #[error("the provider did not answer within the request timeout")]
    Timeout,
    /// The connection could not be made or broke off.
    #[error("cannot reach the provider: {0}")]
    Transport(String),
    /// A 2xx answer that cannot be read: bad JSON, no usage, a broken event stream.
    #[error("the provider's answer cannot be read: {0}")]
    Malformed(String),
    /// Any other 4xx: a bad request, a model the provider does not know, a bad key.
    #[error("the provider rejected the request with status {status}: {message}")]
    Rejected { status: u16, message: String },
    /// The circuit breaker refused the call without sending it.
    #[error("the circuit breaker for {provider} is open")]
    CircuitOpen { provider: String },
}

impl ProviderError {
    /// A stable machine code, for events and problem documents.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Server { .. } => "provider_server_error",
            ProviderError::Timeout => "provider_timeout",
            ProviderError::Transport(_) => "provider_unreachable",
            ProviderError::Malformed(_) => "provider_malformed_response",
            ProviderError::Rejected { .. } => "provider_rejected",
            ProviderError::CircuitOpen { .. } => "circuit_open",
        }
    }

    /// Whether the same request may succeed later. A malformed answer is not retried
    /// (the call may have been billed), nor is a rejection or an open breaker.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. }
            | ProviderError::Server { .. }
            | ProviderError::Timeout
            | ProviderError::Transport(_) => true,
            ProviderError::Malformed(_)
            | ProviderError::Rejected { .. }
            | ProviderError::CircuitOpen { .. } => false,
        }
    }

    /// How long the provider asked the caller to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            ProviderError::Server { .. }
            | ProviderError::Timeout
            | ProviderError::Transport(_)
            | ProviderError::Malformed(_)
            | ProviderError::Rejected { .. }
            | ProviderError::CircuitOpen { .. } => None,
        }
    }
}

/// A source of completions.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's short name (`local`, `openai`, `anthropic`): the `provider`
    /// half of the price book's `provider/model`.
    fn name(&self) -> &str;

    /// Makes one call; never retries.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError>;
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        (**self).complete(request).await
    }
}

/// Why an adapter could not be built from its config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The key holds characters an HTTP header cannot carry. The key itself is never
    /// part of the message.
    #[error("the {provider} API key is not a valid HTTP header value")]
    InvalidApiKey { provider: String },
    #[error("cannot build the HTTP client for {provider}: {message}")]
    Client { provider: String, message: String },
}

/// Which adapter to build, with its settings.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Local { latency: Duration },
    OpenAi(OpenAiConfig),
    Anthropic(AnthropicConfig),
}

/// Builds the adapter a config names.
pub fn build(config: ProviderConfig) -> Result<Arc<dyn Provider>, BuildError> {
    Ok(match config {
        ProviderConfig::Local { latency } => Arc::new(LocalProvider::with_latency(latency)),
        ProviderConfig::OpenAi(config) => Arc::new(OpenAiProvider::new(config)?),
        ProviderConfig::Anthropic(config) => Arc::new(AnthropicProvider::new(config)?),
    })
}
