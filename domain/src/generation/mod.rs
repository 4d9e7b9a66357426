//! A content generation: one request for AI-written text, from reservation to result.
//!
//! Its stream records the request (with the model chosen and the budget reservation
//! that covers its worst-case cost), then every provider attempt: started, and either
//! failed or generated. A generation ends `generated` or `failed`; the cost of every
//! attempt that billed is in the log, priced at the model that actually ran.
//!
//! The stream is also the lease that keeps a provider from being called twice for one
//! attempt: an attempt is started with the stream's expected version, so of two workers
//! racing only one can start it, and a new attempt cannot start while one is in flight.
//! A worker that finds an attempt in flight after a crash records it as interrupted
//! before starting the next.

mod decide;
mod evolve;

pub use decide::decide;
pub use evolve::evolve;

use std::fmt;

use crate::ids::{CampaignId, Channel, Micros, Period, ReservationId};
use crate::pricing::{ModelRef, Usage};

/// Longest brief, in characters.
pub const MAX_BRIEF_CHARS: usize = 4_000;
/// Longest error message kept from a failed attempt, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// How much the work matters when the budget runs low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Proceeds on the requested model until the hard limit.
    Core,
    /// Falls back to the tenant's cheaper model above the soft limit.
    NonCore,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Core => "core",
            Priority::NonCore => "non_core",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "core" => Some(Priority::Core),
            "non_core" => Some(Priority::NonCore),
            _ => None,
        }
    }
}

/// Why an attempt ran on the model it ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptReason {
    /// The first attempt, on the generation's model.
    Primary,
    /// Another model, after the generation's model failed.
    Fallback,
    /// The same model again, after a transient failure.
    Retry,
}

impl AttemptReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptReason::Primary => "primary",
            AttemptReason::Fallback => "fallback",
            AttemptReason::Retry => "retry",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "primary" => Some(AttemptReason::Primary),
            "fallback" => Some(AttemptReason::Fallback),
            "retry" => Some(AttemptReason::Retry),
            _ => None,
        }
    }
}

/// What was asked for, and what was set aside to pay for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub brief: String,
    pub channel: Channel,
    pub campaign_id: Option<CampaignId>,
    pub priority: Priority,
    /// The model the client named, if any, as it named it.
    pub requested_model: Option<String>,
    /// The model the first attempt runs on.
    pub model: ModelRef,
    /// The model a failed generation falls back to, if the tenant has one.
    pub fallback_model: Option<ModelRef>,
    /// Output ceiling, already clamped to the model's maximum.
    pub max_output_tokens: u32,
    pub estimated_input_tokens: u64,
    pub reservation_id: ReservationId,
    /// The budget month holding the reservation.
    pub period: Period,
    /// The worst-case cost reserved.
    pub reserved: Micros,
    pub price_version: String,
}

/// Why a request runs on a cheaper model than the one asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Economy {
    pub requested: ModelRef,
    /// Committed plus reserved spend when the request was decided.
    pub budget_used: Micros,
    pub soft_limit: Micros,
}

/// The outcome of one attempt that reached a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptCost {
    pub usage: Usage,
    pub cost: Micros,
    pub latency_ms: u64,
    pub price_version: String,
}

/// What a caller asks of a generation.
///
/// `Request` is much larger than the other variants; a command lives for one
/// `decide` call, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Request {
        request: Request,
        economy: Option<Economy>,
    },
    StartAttempt {
        attempt: u32,
        model: ModelRef,
        reason: AttemptReason,
    },
    RecordGenerated {
        attempt: u32,
        text: String,
        outcome: AttemptCost,
    },
    RecordAttemptFailed {
        attempt: u32,
        error: String,
        message: String,
        retryable: bool,
        outcome: AttemptCost,
    },
    /// Gives up: no further attempt will be made.
    Fail { reason: String },
}

/// What happened to a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The request (recorded just before, in the same append) runs on a cheaper model
    /// because the budget stood above its soft limit; recorded so "why the cheap
    /// model?" is answered by the log.
    ModeChanged {
        requested: ModelRef,
        model: ModelRef,
        budget_used: Micros,
        soft_limit: Micros,
    },
    Requested(Request),
    AttemptStarted {
        attempt: u32,
        model: ModelRef,
        reason: AttemptReason,
    },
    AttemptFailed {
        attempt: u32,
        model: ModelRef,
        error: String,
        message: String,
        retryable: bool,
        outcome: AttemptCost,
    },
    Generated {
        attempt: u32,
        model: ModelRef,
        text: String,
        outcome: AttemptCost,
    },
    Failed {
        reason: String,
        attempts: u32,
        /// What every attempt together cost.
        cost: Micros,
    },
}

/// Where a generation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Absent,
    Pending,
    Generated,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Absent => "absent",
            Status::Pending => "pending",
            Status::Generated => "generated",
            Status::Failed => "failed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything `decide` needs to know about a generation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub status: Status,
    pub request: Option<Request>,
    /// Attempts started so far.
    pub attempts: u32,
    /// The attempt started and not yet recorded, with its model.
    pub in_flight: Option<(u32, ModelRef)>,
    /// What the attempts recorded so far cost together.
    pub cost: Micros,
    /// The model of the latest attempt, and how many attempts in a row ran on it.
    pub current_model: Option<(ModelRef, u32)>,
    /// The latest failed attempt's error code and whether it may pass on a retry.
    pub last_error: Option<(String, bool)>,
    /// Whether an attempt has run on the fallback model.
    pub fell_back: bool,
}

/// Why a generation command was refused. Each has a stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the generation already exists")]
    AlreadyExists,
    #[error("the generation was not found")]
    NotFound,
    #[error("the brief must be 1 to {MAX_BRIEF_CHARS} characters and not only white space")]
    BadBrief,
    #[error("max_output_tokens must be at least 1")]
    BadMaxOutputTokens,
    #[error("the generation is already {0}")]
    Finished(Status),
    #[error("attempt {0} is still in flight")]
    AttemptInFlight(u32),
    #[error("attempt {attempt} is not the next one (expected {expected})")]
    AttemptOutOfOrder { attempt: u32, expected: u32 },
    #[error("attempt {0} is not in flight")]
    AttemptNotInFlight(u32),
    #[error("the failure reason must not be empty")]
    EmptyReason,
}

impl Rejection {
    /// Stable machine-readable code, part of the public API.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::AlreadyExists => "generation_already_exists",
            Rejection::NotFound => "generation_not_found",
            Rejection::BadBrief => "invalid_brief",
            Rejection::BadMaxOutputTokens => "invalid_max_output_tokens",
            Rejection::Finished(_) => "generation_finished",
            Rejection::AttemptInFlight(_) => "attempt_in_flight",
            Rejection::AttemptOutOfOrder { .. } => "attempt_out_of_order",
            Rejection::AttemptNotInFlight(_) => "attempt_not_in_flight",
            Rejection::EmptyReason => "invalid_failure_reason",
        }
    }
}

/// The system and user prompt a generation sends, built in one place so the estimate
/// made when reserving counts exactly the text the provider will receive.
pub fn prompt(brief: &str, channel: &Channel) -> (String, String) {
    let system = format!(
        "You write marketing copy for the {channel} channel. Answer with the post text \
         only: no preamble, no quotes, no hashtags unless the brief asks for them."
    );
    (system, brief.trim().to_owned())
}
