//! The table of commands: name, required role, and how a request body becomes a
//! domain command. The same table registers the routes and writes their OpenAPI
//! entries, so a command cannot exist without being documented.

use auth::Role;
use chrono::{DateTime, Utc};
use domain::{CampaignId, Channel, GenerationId, Micros, Period, PostId, budget, generation, post};
use schemas::commands as body;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::service::{GenerateRequest, reservation_id_or_new, ttl_from_seconds};

/// What a command request turns into.
#[derive(Debug, Clone)]
pub enum Action {
    Budget {
        period: Option<Period>,
        command: budget::Command,
    },
    Post {
        post_id: PostId,
        expected_version: Option<u64>,
        command: post::Command,
    },
    /// Accepted for later work (the route answers 202).
    Generate(GenerateRequest),
}

/// A parsed command: the action to run and the ids to answer with (the `position`
/// is added once the events are stored).
#[derive(Debug, Clone)]
pub struct Planned {
    pub response: Map<String, Value>,
    pub action: Action,
}

/// One row of the command table.
pub struct CommandRoute {
    pub name: &'static str,
    pub role: Role,
    /// The status a carried-out command answers with: 200, or 202 for work that goes
    /// on after the answer.
    pub status: u16,
    pub summary: &'static str,
    pub plan: fn(Value, DateTime<Utc>) -> Result<Planned, ApiError>,
    /// Names of the id fields the answer carries besides `position`.
    pub answer_ids: &'static [&'static str],
    /// Problem codes this command can answer, with their status.
    pub errors: &'static [(u16, &'static str)],
}

/// Every command the API accepts.
pub const COMMANDS: &[CommandRoute] = &[
    CommandRoute {
        name: "set-budget-limits",
        role: Role::Admin,
        status: 200,
        summary: "Set a month's soft and hard AI budget limits and alert thresholds",
        plan: plan_set_limits,
        answer_ids: &["period"],
        errors: &[
            (422, "hard_limit_zero"),
            (422, "soft_limit_above_hard_limit"),
            (422, "invalid_alert_thresholds"),
            (422, "invalid_period"),
        ],
    },
    CommandRoute {
        name: "reserve-budget",
        role: Role::Editor,
        status: 200,
        summary: "Hold budget for work about to be done; refused past the hard limit",
        plan: plan_reserve,
        answer_ids: &["reservation_id"],
        errors: &[
            (422, "budget_exceeded"),
            (422, "budget_not_configured"),
            (422, "amount_not_positive"),
            (422, "invalid_ttl"),
            (422, "invalid_purpose"),
            (409, "reservation_already_exists"),
        ],
    },
    CommandRoute {
        name: "commit-budget",
        role: Role::Editor,
        status: 200,
        summary: "Settle a reservation at the amount actually spent",
        plan: plan_commit,
        answer_ids: &["reservation_id"],
        errors: &[
            (404, "reservation_not_found"),
            (409, "reservation_already_settled"),
        ],
    },
    CommandRoute {
        name: "release-budget",
        role: Role::Editor,
        status: 200,
        summary: "Give a reservation back unused",
        plan: plan_release,
        answer_ids: &["reservation_id"],
        errors: &[
            (404, "reservation_not_found"),
            (409, "reservation_already_settled"),
        ],
    },
    CommandRoute {
        name: "create-post",
        role: Role::Editor,
        status: 200,
        summary: "Create a draft post for one channel or several",
        plan: plan_create_post,
        answer_ids: &["post_id"],
        errors: &[
            (409, "post_already_exists"),
            (422, "invalid_post_body"),
            (422, "invalid_channel"),
            (422, "invalid_post_channels"),
        ],
    },
    CommandRoute {
        name: "edit-post",
        role: Role::Editor,
        status: 200,
        summary: "Change the body of a draft or scheduled post",
        plan: plan_edit_post,
        answer_ids: &["post_id"],
        errors: POST_ERRORS,
    },
    CommandRoute {
        name: "schedule-post",
        role: Role::Editor,
        status: 200,
        summary: "Schedule (or reschedule) a post for a future time",
        plan: plan_schedule_post,
        answer_ids: &["post_id"],
        errors: &[
            (404, "post_not_found"),
            (409, "invalid_post_transition"),
            (409, "version_conflict"),
            (422, "publish_time_in_past"),
        ],
    },
    CommandRoute {
        name: "publish-post",
        role: Role::Editor,
        status: 200,
        summary: "Publish a post now",
        plan: plan_publish_post,
        answer_ids: &["post_id"],
        errors: POST_ERRORS,
    },
    CommandRoute {
        name: "cancel-post",
        role: Role::Editor,
        status: 200,
        summary: "Cancel a draft or scheduled post",
        plan: plan_cancel_post,
        answer_ids: &["post_id"],
        errors: POST_ERRORS,
    },
    CommandRoute {
        name: "retry-delivery",
        role: Role::Admin,
        status: 200,
        summary: "Deliver a failed target of a post again now, or bring its next attempt forward",
        plan: plan_retry_delivery,
        answer_ids: &["post_id"],
        errors: &[
            (404, "post_not_found"),
            (409, "invalid_post_transition"),
            (409, "version_conflict"),
            (422, "invalid_channel"),
            (422, "channel_required"),
            (422, "unknown_post_channel"),
        ],
    },
    CommandRoute {
        name: "resolve-unconfirmed",
        role: Role::Admin,
        status: 200,
        summary: "Settle a delivery whose outcome is unknown as published or failed",
        plan: plan_resolve_unconfirmed,
        answer_ids: &["post_id"],
        errors: &[
            (404, "post_not_found"),
            (409, "invalid_post_transition"),
            (409, "version_conflict"),
            (422, "invalid_network_post_id"),
            (422, "invalid_failure_reason"),
            (422, "invalid_channel"),
            (422, "channel_required"),
            (422, "unknown_post_channel"),
        ],
    },
    CommandRoute {
        name: "generate-content",
        role: Role::Editor,
        status: 202,
        summary: "Generate content with an AI provider; its worst-case cost is reserved first",
        plan: plan_generate,
        answer_ids: &["generation_id"],
        errors: &[
            (422, "budget_exceeded"),
            (422, "budget_not_configured"),
            (422, "unknown_model"),
            (422, "invalid_brief"),
            (422, "invalid_channel"),
            (422, "invalid_max_output_tokens"),
            (409, "generation_already_exists"),
            (409, "reservation_already_exists"),
            (429, "rate_limited"),
        ],
    },
];

const POST_ERRORS: &[(u16, &str)] = &[
    (404, "post_not_found"),
    (409, "invalid_post_transition"),
    (409, "version_conflict"),
    (422, "invalid_post_body"),
];

fn parse<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::InvalidBody(e.to_string()))
}

fn micros(field: &str, value: i64) -> Result<Micros, ApiError> {
    Micros::new(value)
        .map_err(|_| ApiError::invalid("invalid_amount", format!("{field} must not be negative")))
}

fn answer(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn plan_set_limits(value: Value, now: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::SetBudgetLimits = parse(value)?;
    let current = Period::containing(now);
    let period = match b.period.as_deref() {
        None => current,
        Some(raw) => raw
            .parse::<Period>()
            .map_err(|_| ApiError::invalid("invalid_period", "period must look like YYYY-MM"))?,
    };
    if period < current {
        return Err(ApiError::invalid(
            "invalid_period",
            "limits can only be set for this month or a later one",
        ));
    }
    let thresholds = b.alert_thresholds_pct;
    Ok(Planned {
        response: answer(&[("period", json!(period.to_string()))]),
        action: Action::Budget {
            period: Some(period),
            command: budget::Command::SetLimits {
                soft: micros("soft_limit_micros", b.soft_limit_micros)?,
                hard: micros("hard_limit_micros", b.hard_limit_micros)?,
                alert_thresholds_pct: thresholds,
            },
        },
    })
}

fn plan_reserve(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::ReserveBudget = parse(value)?;
    let reservation_id = reservation_id_or_new(b.reservation_id);
    let ttl = ttl_from_seconds(b.ttl_seconds)
        .ok_or_else(|| ApiError::invalid("invalid_ttl", "ttl_seconds is out of range"))?;
    Ok(Planned {
        response: answer(&[("reservation_id", json!(reservation_id.to_string()))]),
        action: Action::Budget {
            period: None,
            command: budget::Command::Reserve {
                reservation_id,
                amount: micros("amount_micros", b.amount_micros)?,
                purpose: b.purpose,
                ttl,
            },
        },
    })
}

fn plan_commit(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::CommitBudget = parse(value)?;
    let reservation_id = reservation_id_or_new(Some(b.reservation_id));
    Ok(Planned {
        response: answer(&[("reservation_id", json!(reservation_id.to_string()))]),
        action: Action::Budget {
            period: None,
            command: budget::Command::Commit {
                reservation_id,
                actual: micros("actual_micros", b.actual_micros)?,
            },
        },
    })
}

fn plan_release(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::ReleaseBudget = parse(value)?;
    let reservation_id = reservation_id_or_new(Some(b.reservation_id));
    Ok(Planned {
        response: answer(&[("reservation_id", json!(reservation_id.to_string()))]),
        action: Action::Budget {
            period: None,
            command: budget::Command::Release { reservation_id },
        },
    })
}

fn post_action(post_id: Uuid, expected_version: Option<u64>, command: post::Command) -> Planned {
    Planned {
        response: answer(&[("post_id", json!(post_id.to_string()))]),
        action: Action::Post {
            post_id: PostId::from_uuid(post_id),
            expected_version,
            command,
        },
    }
}

fn channel(raw: &str) -> Result<Channel, ApiError> {
    Channel::new(raw).map_err(|e| ApiError::invalid("invalid_channel", format!("{raw:?}: {e}")))
}

fn plan_create_post(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::CreatePost = parse(value)?;
    // One of the two is required, like any required field: leaving both out is a
    // malformed body. Giving both is a well-formed body asking two things at once.
    let channels = match (b.channel, b.channels) {
        (Some(one), None) => vec![channel(&one)?],
        (None, Some(several)) => several
            .iter()
            .map(|raw| channel(raw))
            .collect::<Result<_, _>>()?,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_post_channels",
                "give either channel or channels, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::InvalidBody(
                "missing field `channel` (one channel slug) or `channels` (a list of 1 to 10)"
                    .into(),
            ));
        }
    };
    let post_id = b.post_id.unwrap_or_else(Uuid::now_v7);
    Ok(post_action(
        post_id,
        None,
        post::Command::Create {
            channels,
            body: b.body,
            campaign_id: b.campaign_id.map(CampaignId::from_uuid),
        },
    ))
}

fn plan_edit_post(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::EditPost = parse(value)?;
    Ok(post_action(
        b.post_id,
        b.expected_version,
        post::Command::Edit { body: b.body },
    ))
}

fn plan_schedule_post(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::SchedulePost = parse(value)?;
    Ok(post_action(
        b.post_id,
        b.expected_version,
        post::Command::Schedule {
            publish_at: b.publish_at,
        },
    ))
}

fn plan_publish_post(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::PublishPost = parse(value)?;
    Ok(post_action(
        b.post_id,
        b.expected_version,
        post::Command::Publish {
            trigger: post::PublishTrigger::Manual,
        },
    ))
}

fn plan_cancel_post(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::CancelPost = parse(value)?;
    Ok(post_action(
        b.post_id,
        b.expected_version,
        post::Command::Cancel,
    ))
}

fn plan_retry_delivery(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::RetryDelivery = parse(value)?;
    let channel = b.channel.as_deref().map(channel).transpose()?;
    Ok(post_action(
        b.post_id,
        b.expected_version,
        post::Command::RetryDelivery { channel },
    ))
}

fn plan_resolve_unconfirmed(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::ResolveUnconfirmed = parse(value)?;
    let channel = b.channel.as_deref().map(channel).transpose()?;
    let outcome = match b.outcome {
        body::DeliveryOutcome::Published => post::Resolution::Published {
            network_post_id: b.network_post_id.unwrap_or_default(),
            url: b.url,
        },
        body::DeliveryOutcome::Failed => post::Resolution::Failed {
            reason: b
                .reason
                .unwrap_or_else(|| "an operator found the post not delivered".into()),
        },
    };
    Ok(post_action(
        b.post_id,
        b.expected_version,
        post::Command::ResolveUnconfirmed { channel, outcome },
    ))
}

fn plan_generate(value: Value, _: DateTime<Utc>) -> Result<Planned, ApiError> {
    let b: body::GenerateContent = parse(value)?;
    let channel = Channel::new(&b.channel)
        .map_err(|e| ApiError::invalid("invalid_channel", e.to_string()))?;
    let generation_id = GenerationId::from_uuid(b.generation_id.unwrap_or_else(Uuid::now_v7));
    Ok(Planned {
        response: answer(&[("generation_id", json!(generation_id.to_string()))]),
        action: Action::Generate(GenerateRequest {
            generation_id,
            brief: b.brief,
            channel,
            campaign_id: b.campaign_id.map(CampaignId::from_uuid),
            max_output_tokens: b.max_output_tokens,
            priority: match b.priority {
                body::GenerationPriority::Core => generation::Priority::Core,
                body::GenerationPriority::NonCore => generation::Priority::NonCore,
            },
            model: b.model,
        }),
    })
}
