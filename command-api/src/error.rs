//! The command API's one error type and its single mapping to problem bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use auth::{AuthError, Problem};
use domain::{budget, generation, post};

use crate::service::CommandError;

/// Everything a command request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than the {limit} bytes allowed")]
    PayloadTooLarge { limit: usize },
    #[error("the body could not be read")]
    BodyUnreadable,
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body does not match the command: {0}")]
    InvalidBody(String),
    #[error("the Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// A value in a well-formed body that the domain refuses before any rule runs.
    #[error("{detail}")]
    InvalidValue { code: &'static str, detail: String },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("unexpected failure")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::InvalidValue {
            code,
            detail: detail.into(),
        }
    }

    /// The problem body this error answers with.
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        let detail = self.to_string();
        match self {
            ApiError::Auth(e) => Problem::from(e.clone()),
            ApiError::UnsupportedMediaType => {
                Problem::new(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", detail)
            }
            ApiError::PayloadTooLarge { .. } => {
                Problem::new(S::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
            }
            ApiError::BodyUnreadable => Problem::new(S::BAD_REQUEST, "body_unreadable", detail),
            ApiError::MalformedJson(_) => Problem::new(S::BAD_REQUEST, "malformed_json", detail),
            ApiError::InvalidBody(_) => Problem::new(S::BAD_REQUEST, "invalid_body", detail),
            ApiError::InvalidIdempotencyKey => {
                Problem::new(S::BAD_REQUEST, "invalid_idempotency_key", detail)
            }
            ApiError::IdempotencyKeyReused => {
                Problem::new(S::UNPROCESSABLE_ENTITY, "idempotency_key_reused", detail)
            }
            ApiError::InvalidValue { code, .. } => {
                Problem::new(S::UNPROCESSABLE_ENTITY, code, detail)
            }
            ApiError::Command(e) => command_problem(e),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "command failed unexpectedly");
                Problem::internal()
            }
        }
    }
}

fn command_problem(error: &CommandError) -> Problem {
    use StatusCode as S;
    let detail = error.to_string();
    match error {
        CommandError::Budget(rejection) => {
            let status = match rejection {
                budget::Rejection::ReservationNotFound(_) => S::NOT_FOUND,
                budget::Rejection::AlreadySettled { .. }
                | budget::Rejection::ReservationExists(_) => S::CONFLICT,
                budget::Rejection::HardLimitZero
                | budget::Rejection::SoftAboveHard { .. }
                | budget::Rejection::BadThresholds
                | budget::Rejection::NotConfigured
                | budget::Rejection::AmountZero
                | budget::Rejection::BadTtl
                | budget::Rejection::BadPurpose
                | budget::Rejection::BudgetExceeded { .. } => S::UNPROCESSABLE_ENTITY,
                budget::Rejection::SettledUnlisted(_) => {
                    // The command loop lists the settled reservations before deciding
                    // (`budget::needs_settled_list`); reaching this is a bug, not a
                    // caller's mistake.
                    tracing::error!(error = ?error, "a budget command was decided on an unlisted ledger");
                    return Problem::internal();
                }
            };
            Problem::new(status, rejection.code(), detail)
        }
        CommandError::Post(rejection) => {
            let status = match rejection {
                post::Rejection::NotFound => S::NOT_FOUND,
                post::Rejection::AlreadyExists
                | post::Rejection::InvalidTransition { .. }
                | post::Rejection::InvalidDeliveryTransition { .. }
                | post::Rejection::AttemptInFlight
                | post::Rejection::AttemptNotDue => S::CONFLICT,
                post::Rejection::BadBody
                | post::Rejection::BadChannels
                | post::Rejection::UnknownChannel(_)
                | post::Rejection::ChannelRequired
                | post::Rejection::PublishTimeInPast
                | post::Rejection::EmptyReason
                | post::Rejection::EmptyNetworkId => S::UNPROCESSABLE_ENTITY,
            };
            Problem::new(status, rejection.code(), detail)
        }
        CommandError::Generation(rejection) => {
            let status = match rejection {
                generation::Rejection::NotFound => S::NOT_FOUND,
                generation::Rejection::AlreadyExists
                | generation::Rejection::Finished(_)
                | generation::Rejection::AttemptInFlight(_)
                | generation::Rejection::AttemptOutOfOrder { .. }
                | generation::Rejection::AttemptNotInFlight(_) => S::CONFLICT,
                generation::Rejection::BadBrief
                | generation::Rejection::BadMaxOutputTokens
                | generation::Rejection::EmptyReason => S::UNPROCESSABLE_ENTITY,
            };
            Problem::new(status, rejection.code(), detail)
        }
        CommandError::UnknownModel(_) => {
            Problem::new(S::UNPROCESSABLE_ENTITY, "unknown_model", detail)
        }
        CommandError::RateLimited { retry_after } => {
            let seconds = u64::try_from(retry_after.num_seconds()).unwrap_or(0);
            let rounded_up = if retry_after.subsec_nanos() > 0 {
                seconds + 1
            } else {
                seconds
            };
            Problem::new(S::TOO_MANY_REQUESTS, "rate_limited", detail)
                .retry_after(rounded_up.max(1))
        }
        CommandError::VersionConflict { .. } => {
            Problem::new(S::CONFLICT, "version_conflict", detail)
        }
        CommandError::IdempotencyKeyTaken => {
            Problem::new(S::CONFLICT, "idempotency_key_in_flight", detail)
        }
        CommandError::Contention => {
            Problem::new(S::SERVICE_UNAVAILABLE, "contention", detail).retry_after(1)
        }
        CommandError::Corrupt { .. } | CommandError::Store(_) => {
            tracing::error!(error = ?error, "command failed in the event store");
            Problem::internal()
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.problem().to_response()
    }
}
