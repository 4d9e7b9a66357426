//! Stored shapes of a content generation's events, one DTO per `(type, version)`.
//!
//! The generation id is not in the data: it is part of the stream name. Models are
//! stored as separate `provider` and `model` fields. Token counts follow one rule in
//! every event: `input_tokens` includes `cached_input_tokens`, whichever provider ran.
//! Costs are integer micro-USD, with the price-book version they were computed under.

use domain::generation::{AttemptCost, AttemptReason, Event, Priority, Request};
use domain::pricing::{ModelRef, Usage};
use domain::{CampaignId, ReservationId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainEvent, Encoded, channel, encoded, micros, period};
use crate::registry::{Failure, Latest, Version};

const MODE_CHANGED: &str = "generation.mode_changed";
const REQUESTED: &str = "generation.requested";
const ATTEMPT_STARTED: &str = "generation.attempt_started";
const ATTEMPT_FAILED: &str = "generation.attempt_failed";
const GENERATED: &str = "generation.generated";
const FAILED: &str = "generation.failed";

pub(super) fn encode(event: &Event) -> Encoded {
    match event {
        Event::ModeChanged {
            requested,
            model,
            budget_used,
            soft_limit,
        } => encoded(GenerationModeChangedV1 {
            mode: ModeV1::Economy,
            reason: "soft_limit_exceeded".to_owned(),
            requested_provider: requested.provider.clone(),
            requested_model: requested.model.clone(),
            provider: model.provider.clone(),
            model: model.model.clone(),
            budget_used_micros: budget_used.get(),
            soft_limit_micros: soft_limit.get(),
        }),
        Event::Requested(r) => encoded(GenerationRequestedV1 {
            brief: r.brief.clone(),
            channel: r.channel.as_str().to_owned(),
            campaign_id: r.campaign_id.map(|c| c.as_uuid()),
            priority: match r.priority {
                Priority::Core => PriorityV1::Core,
                Priority::NonCore => PriorityV1::NonCore,
            },
            requested_model: r.requested_model.clone(),
            provider: r.model.provider.clone(),
            model: r.model.model.clone(),
            fallback_provider: r.fallback_model.as_ref().map(|m| m.provider.clone()),
            fallback_model: r.fallback_model.as_ref().map(|m| m.model.clone()),
            max_output_tokens: r.max_output_tokens,
            estimated_input_tokens: r.estimated_input_tokens,
            reservation_id: r.reservation_id.as_uuid(),
            period: r.period.to_string(),
            reserved_micros: r.reserved.get(),
            price_version: r.price_version.clone(),
        }),
        Event::AttemptStarted {
            attempt,
            model,
            reason,
        } => encoded(GenerationAttemptStartedV1 {
            attempt: *attempt,
            provider: model.provider.clone(),
            model: model.model.clone(),
            reason: match reason {
                AttemptReason::Primary => ReasonV1::Primary,
                AttemptReason::Fallback => ReasonV1::Fallback,
                AttemptReason::Retry => ReasonV1::Retry,
            },
        }),
        Event::AttemptFailed {
            attempt,
            model,
            error,
            message,
            retryable,
            outcome,
        } => encoded(GenerationAttemptFailedV1 {
            attempt: *attempt,
            provider: model.provider.clone(),
            model: model.model.clone(),
            error: error.clone(),
            message: message.clone(),
            retryable: *retryable,
            input_tokens: outcome.usage.input_tokens,
            cached_input_tokens: outcome.usage.cached_input_tokens,
            output_tokens: outcome.usage.output_tokens,
            cost_micros: outcome.cost.get(),
            latency_ms: outcome.latency_ms,
            price_version: outcome.price_version.clone(),
        }),
        Event::Generated {
            attempt,
            model,
            text,
            outcome,
        } => encoded(GenerationGeneratedV1 {
            attempt: *attempt,
            provider: model.provider.clone(),
            model: model.model.clone(),
            text: text.clone(),
            input_tokens: outcome.usage.input_tokens,
            cached_input_tokens: outcome.usage.cached_input_tokens,
            output_tokens: outcome.usage.output_tokens,
            cost_micros: outcome.cost.get(),
            latency_ms: outcome.latency_ms,
            price_version: outcome.price_version.clone(),
        }),
        Event::Failed {
            reason,
            attempts,
            cost,
        } => encoded(GenerationFailedV1 {
            reason: reason.clone(),
            attempts: *attempts,
            cost_micros: cost.get(),
        }),
    }
}

/// The budget mode a generation ran under, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ModeV1 {
    /// Above the soft limit: non-core work runs on the tenant's cheaper model.
    Economy,
}

/// `generation.mode_changed` v1: the request was moved to a cheaper model.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationModeChangedV1 {
    /// The mode the generation runs under.
    pub mode: ModeV1,
    /// Why: always `soft_limit_exceeded` in this version.
    pub reason: String,
    /// The provider of the model asked for.
    pub requested_provider: String,
    /// The model asked for.
    pub requested_model: String,
    /// The provider of the model used instead.
    pub provider: String,
    /// The model used instead.
    pub model: String,
    /// Committed plus reserved spend when the request was decided, in micro-USD.
    #[schemars(range(min = 0))]
    pub budget_used_micros: i64,
    /// The soft limit it stood above, in micro-USD.
    #[schemars(range(min = 0))]
    pub soft_limit_micros: i64,
}

impl Version for GenerationModeChangedV1 {
    const EVENT_TYPE: &'static str = MODE_CHANGED;
    const VERSION: u32 = 1;
}

impl Latest for GenerationModeChangedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Generation(Event::ModeChanged {
            requested: ModelRef::new(self.requested_provider, self.requested_model),
            model: ModelRef::new(self.provider, self.model),
            budget_used: micros("budget_used_micros", self.budget_used_micros)?,
            soft_limit: micros("soft_limit_micros", self.soft_limit_micros)?,
        }))
    }
}

/// How much a generation matters when the budget runs low, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PriorityV1 {
    /// Keeps the requested model until the hard limit.
    Core,
    /// Falls back to the cheaper model above the soft limit.
    NonCore,
}

/// `generation.requested` v1: content was asked for and its worst case reserved.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationRequestedV1 {
    /// What to write about.
    pub brief: String,
    /// Channel slug the content is for.
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: String,
    /// The campaign the spend belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Uuid>,
    /// `core` work keeps its model above the soft limit; `non_core` work falls back.
    pub priority: PriorityV1,
    /// The model the client named, as it named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_model: Option<String>,
    /// Provider of the model the first attempt runs on.
    pub provider: String,
    /// The model the first attempt runs on.
    pub model: String,
    /// Provider of the model to fall back to after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_provider: Option<String>,
    /// The model to fall back to after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_model: Option<String>,
    /// Output ceiling, clamped to the model's maximum.
    pub max_output_tokens: u32,
    /// Input tokens estimated from the prompt.
    pub estimated_input_tokens: u64,
    /// The budget reservation covering the worst case.
    pub reservation_id: Uuid,
    /// The budget month (`YYYY-MM`) holding the reservation.
    #[schemars(pattern(r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    pub period: String,
    /// The worst-case cost reserved, in micro-USD.
    #[schemars(range(min = 0))]
    pub reserved_micros: i64,
    /// The price-book version the estimate used.
    pub price_version: String,
}

impl Version for GenerationRequestedV1 {
    const EVENT_TYPE: &'static str = REQUESTED;
    const VERSION: u32 = 1;
}

impl Latest for GenerationRequestedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        let fallback_model = match (self.fallback_provider, self.fallback_model) {
            (Some(provider), Some(model)) => Some(ModelRef::new(provider, model)),
            _ => None,
        };
        Ok(DomainEvent::Generation(Event::Requested(Request {
            brief: self.brief,
            channel: channel("channel", &self.channel)?,
            campaign_id: self.campaign_id.map(CampaignId::from_uuid),
            priority: match self.priority {
                PriorityV1::Core => Priority::Core,
                PriorityV1::NonCore => Priority::NonCore,
            },
            requested_model: self.requested_model,
            model: ModelRef::new(self.provider, self.model),
            fallback_model,
            max_output_tokens: self.max_output_tokens,
            estimated_input_tokens: self.estimated_input_tokens,
            reservation_id: ReservationId::from_uuid(self.reservation_id),
            period: period("period", &self.period)?,
            reserved: micros("reserved_micros", self.reserved_micros)?,
            price_version: self.price_version,
        })))
    }
}

/// Why an attempt ran on its model, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReasonV1 {
    /// The first attempt.
    Primary,
    /// Another model after the generation's model failed.
    Fallback,
    /// The same model again after a transient failure.
    Retry,
}

/// `generation.attempt_started` v1: a provider is about to be called.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationAttemptStartedV1 {
    /// 1 for the first attempt, counting every model.
    pub attempt: u32,
    /// The provider that ran the attempt.
    pub provider: String,
    /// The model that ran the attempt.
    pub model: String,
    /// Why the attempt ran on this model.
    pub reason: ReasonV1,
}

impl Version for GenerationAttemptStartedV1 {
    const EVENT_TYPE: &'static str = ATTEMPT_STARTED;
    const VERSION: u32 = 1;
}

impl Latest for GenerationAttemptStartedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Generation(Event::AttemptStarted {
            attempt: self.attempt,
            model: ModelRef::new(self.provider, self.model),
            reason: match self.reason {
                ReasonV1::Primary => AttemptReason::Primary,
                ReasonV1::Fallback => AttemptReason::Fallback,
                ReasonV1::Retry => AttemptReason::Retry,
            },
        }))
    }
}

/// `generation.attempt_failed` v1: an attempt ended without usable text.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationAttemptFailedV1 {
    /// The attempt number, 1 for the first, counting every model.
    pub attempt: u32,
    /// The provider that ran the attempt.
    pub provider: String,
    /// The model that ran the attempt.
    pub model: String,
    /// Stable error code, e.g. `rate_limited`, `provider_timeout`, `interrupted`.
    pub error: String,
    /// The provider's or the transport's message, shortened.
    pub message: String,
    /// Whether the error was one that may pass on a retry.
    pub retryable: bool,
    /// Input tokens billed, cached ones included (usually 0 for a failure).
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// What the attempt cost, in micro-USD.
    #[schemars(range(min = 0))]
    pub cost_micros: i64,
    /// Wall-clock time of the provider call, in milliseconds.
    pub latency_ms: u64,
    /// The price-book version the cost was computed under.
    pub price_version: String,
}

impl Version for GenerationAttemptFailedV1 {
    const EVENT_TYPE: &'static str = ATTEMPT_FAILED;
    const VERSION: u32 = 1;
}

impl Latest for GenerationAttemptFailedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Generation(Event::AttemptFailed {
            attempt: self.attempt,
            model: ModelRef::new(self.provider, self.model),
            error: self.error,
            message: self.message,
            retryable: self.retryable,
            outcome: attempt_cost(
                [
                    self.input_tokens,
                    self.cached_input_tokens,
                    self.output_tokens,
                ],
                self.cost_micros,
                self.latency_ms,
                self.price_version,
            )?,
        }))
    }
}

/// `generation.generated` v1: a provider returned the text.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationGeneratedV1 {
    /// The attempt number, 1 for the first, counting every model.
    pub attempt: u32,
    /// The provider that billed.
    pub provider: String,
    /// The model that billed.
    pub model: String,
    /// The generated content.
    pub text: String,
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// What this attempt cost, in micro-USD.
    #[schemars(range(min = 0))]
    pub cost_micros: i64,
    /// Wall-clock time of the provider call, in milliseconds.
    pub latency_ms: u64,
    /// The price-book version the cost was computed under.
    pub price_version: String,
}

impl Version for GenerationGeneratedV1 {
    const EVENT_TYPE: &'static str = GENERATED;
    const VERSION: u32 = 1;
}

impl Latest for GenerationGeneratedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Generation(Event::Generated {
            attempt: self.attempt,
            model: ModelRef::new(self.provider, self.model),
            text: self.text,
            outcome: attempt_cost(
                [
                    self.input_tokens,
                    self.cached_input_tokens,
                    self.output_tokens,
                ],
                self.cost_micros,
                self.latency_ms,
                self.price_version,
            )?,
        }))
    }
}

/// `generation.failed` v1: no further attempt will be made.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationFailedV1 {
    /// Why the generation gave up.
    pub reason: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// What the attempts cost together, in micro-USD.
    #[schemars(range(min = 0))]
    pub cost_micros: i64,
}

impl Version for GenerationFailedV1 {
    const EVENT_TYPE: &'static str = FAILED;
    const VERSION: u32 = 1;
}

impl Latest for GenerationFailedV1 {
    fn into_domain(self) -> Result<DomainEvent, Failure> {
        Ok(DomainEvent::Generation(Event::Failed {
            reason: self.reason,
            attempts: self.attempts,
            cost: micros("cost_micros", self.cost_micros)?,
        }))
    }
}

/// The attempt outcome both `attempt_failed` and `generated` store as flat fields:
/// input, cached-input and output tokens, cost, latency and price version.
fn attempt_cost(
    [input_tokens, cached_input_tokens, output_tokens]: [u64; 3],
    cost_micros: i64,
    latency_ms: u64,
    price_version: String,
) -> Result<AttemptCost, Failure> {
    Ok(AttemptCost {
        usage: Usage {
            input_tokens,
            cached_input_tokens,
            output_tokens,
        },
        cost: micros("cost_micros", cost_micros)?,
        latency_ms,
        price_version,
    })
}
