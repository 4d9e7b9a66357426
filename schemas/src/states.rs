//! The stored form of an aggregate's folded state: what a snapshot holds.
//!
//! A snapshot lets the command side start a cold load from a stored state instead of
//! folding a stream from its first event (the budget month grows all month). It is a
//! cache, never a source of truth: nothing but that cold load reads it, and dropping
//! every snapshot only costs the next load a full fold. So its format is versioned
//! like an event's — a DTO per `(name, version)`, a checked-in JSON Schema under
//! `json/states/` and a hand-written golden file under `golden/states/` — but needs no
//! upcaster: a new shape is a new [`StateFormat::version`], the store keeps snapshots
//! of each version apart, and a reader simply ignores the versions it does not know
//! and folds the stream from scratch.
//!
//! Derived fields are not stored: the budget state's `reserved` total and expiry index
//! are rebuilt by [`domain::budget::State::from_parts`], so a snapshot cannot disagree
//! with itself.
//!
//! The data is JSON text, read straight into the DTO (not through a
//! `serde_json::Value`): a busy month's budget state holds tens of thousands of settled
//! reservation ids, and reading it is on the path of a cold command.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use domain::budget::{self, Limits, OpenReservation, Parts, ReservationOutcome};
use domain::{Micros, ReservationId, ValueError, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One stored state format: the state's name and the version of its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFormat {
    pub name: &'static str,
    pub version: u32,
}

/// The budget ledger's state, as [`encode_budget_state`] writes it.
pub const BUDGET_STATE: StateFormat = StateFormat {
    name: "budget.state",
    version: 1,
};

/// A post's state, as [`encode_post_state`] writes it.
pub const POST_STATE: StateFormat = StateFormat {
    name: "post.state",
    version: 1,
};

/// Every state format this build writes and reads. A snapshot of any other version is
/// ignored by its reader.
pub const STATE_FORMATS: &[StateFormat] = &[BUDGET_STATE, POST_STATE];

/// Why stored state data could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateDecodeError {
    /// The data does not have the shape of its schema.
    #[error("{name} v{version} data does not match its schema")]
    Malformed {
        name: &'static str,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    /// A value the domain refuses, such as a negative amount.
    #[error("{name} v{version} has an invalid `{field}`")]
    InvalidValue {
        name: &'static str,
        version: u32,
        field: &'static str,
        #[source]
        source: ValueError,
    },
    /// Parts that no fold of a valid stream produces.
    #[error("{name} v{version} is inconsistent")]
    Inconsistent {
        name: &'static str,
        version: u32,
        #[source]
        source: budget::StateError,
    },
}

/// The JSON Schema (draft 2020-12) of one stored state format.
pub fn state_schema(format: StateFormat) -> Option<Value> {
    let schema = match format {
        BUDGET_STATE => schemars::schema_for!(BudgetStateV1),
        POST_STATE => schemars::schema_for!(PostStateV1),
        _ => return None,
    };
    Some(schema.to_value())
}

/// `budget.state` v1: a month's ledger folded up to some version of its stream.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BudgetStateV1 {
    /// The month's limits; absent while none are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<BudgetLimitsV1>,
    /// Money spent this month (the sum of every commit's actual cost), in micro-USD.
    #[schemars(range(min = 0))]
    committed_micros: i64,
    /// The reservations that still hold money, in id order.
    open: Vec<OpenReservationV1>,
    /// Ids of the reservations settled by a commit, in id order.
    committed_ids: Vec<Uuid>,
    /// Ids of the reservations given back unused, in id order.
    released_ids: Vec<Uuid>,
    /// Ids of the reservations that outlived their ttl, in id order.
    expired_ids: Vec<Uuid>,
    /// Alert thresholds (percent of the hard limit) already announced, ascending.
    thresholds_crossed_pct: Vec<u8>,
}

/// A month's limits, as the budget state stores them.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BudgetLimitsV1 {
    /// Soft limit in micro-USD.
    #[schemars(range(min = 0))]
    soft_limit_micros: i64,
    /// Hard limit in micro-USD.
    #[schemars(range(min = 0))]
    hard_limit_micros: i64,
    /// Percentages of the hard limit at which committed spend raises an alert.
    alert_thresholds_pct: Vec<u8>,
}

/// An open reservation, as the budget state stores it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct OpenReservationV1 {
    /// The reservation's id.
    reservation_id: Uuid,
    /// The amount held, in micro-USD.
    #[schemars(range(min = 0))]
    amount_micros: i64,
    /// What the money is held for.
    purpose: String,
    /// When the reservation expires by itself.
    expires_at: DateTime<Utc>,
}

/// Writes a budget state in the latest format, [`BUDGET_STATE`].
pub fn encode_budget_state(state: &budget::State) -> String {
    let parts = state.parts();
    let ids = |wanted: ReservationOutcome| -> Vec<Uuid> {
        parts
            .settled
            .iter()
            .filter(|(_, outcome)| **outcome == wanted)
            .map(|(id, _)| id.as_uuid())
            .collect()
    };
    let dto = BudgetStateV1 {
        limits: parts.limits.map(|l| BudgetLimitsV1 {
            soft_limit_micros: l.soft.get(),
            hard_limit_micros: l.hard.get(),
            alert_thresholds_pct: l.alert_thresholds_pct.clone(),
        }),
        committed_micros: parts.committed.get(),
        open: parts
            .open
            .iter()
            .map(|(id, r)| OpenReservationV1 {
                reservation_id: id.as_uuid(),
                amount_micros: r.amount.get(),
                purpose: r.purpose.clone(),
                expires_at: r.expires_at,
            })
            .collect(),
        committed_ids: ids(ReservationOutcome::Committed),
        released_ids: ids(ReservationOutcome::Released),
        expired_ids: ids(ReservationOutcome::Expired),
        thresholds_crossed_pct: parts.thresholds_crossed.iter().copied().collect(),
    };
    to_text(&dto)
}

/// Reads a budget state written in format [`BUDGET_STATE`] and rebuilds its derived
/// fields through the domain's checked constructor.
pub fn decode_budget_state(data: &str) -> Result<budget::State, StateDecodeError> {
    let format = BUDGET_STATE;
    let dto: BudgetStateV1 = parse(format, data)?;
    let micros = |field: &'static str, raw: i64| {
        Micros::new(raw).map_err(|source| StateDecodeError::InvalidValue {
            name: format.name,
            version: format.version,
            field,
            source,
        })
    };
    let limits = dto
        .limits
        .map(|l| -> Result<Limits, StateDecodeError> {
            Ok(Limits {
                soft: micros("soft_limit_micros", l.soft_limit_micros)?,
                hard: micros("hard_limit_micros", l.hard_limit_micros)?,
                alert_thresholds_pct: l.alert_thresholds_pct,
            })
        })
        .transpose()?;
    let mut open = BTreeMap::new();
    for r in dto.open {
        open.insert(
            ReservationId::from_uuid(r.reservation_id),
            OpenReservation {
                amount: micros("amount_micros", r.amount_micros)?,
                purpose: r.purpose,
                expires_at: r.expires_at,
            },
        );
    }
    let settled: BTreeMap<ReservationId, ReservationOutcome> = [
        (dto.committed_ids, ReservationOutcome::Committed),
        (dto.released_ids, ReservationOutcome::Released),
        (dto.expired_ids, ReservationOutcome::Expired),
    ]
    .into_iter()
    .flat_map(|(ids, outcome)| {
        ids.into_iter()
            .map(move |id| (ReservationId::from_uuid(id), outcome))
    })
    .collect();
    budget::State::from_parts(Parts {
        limits,
        committed: micros("committed_micros", dto.committed_micros)?,
        open,
        settled,
        thresholds_crossed: dto
            .thresholds_crossed_pct
            .into_iter()
            .collect::<BTreeSet<u8>>(),
    })
    .map_err(|source| StateDecodeError::Inconsistent {
        name: format.name,
        version: format.version,
        source,
    })
}

/// `post.state` v1: a post folded up to some version of its stream.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PostStateV1 {
    /// Where the post stands.
    status: PostStatusV1,
    /// When a scheduled post is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publish_at: Option<DateTime<Utc>>,
    /// Delivery attempts started over the post's life.
    attempts: u32,
    /// An attempt was started and its outcome is not recorded yet.
    in_flight: bool,
    /// When the next attempt is due, while the status is `failed_retryable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_at: Option<DateTime<Utc>>,
}

/// A post's status, as stored: the names the API shows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum PostStatusV1 {
    /// The post does not exist.
    Absent,
    /// Created, not scheduled.
    Draft,
    /// Waiting for its publish time.
    Scheduled,
    /// Waiting for (or running) a delivery attempt.
    Publishing,
    /// The last attempt failed transiently; another is due at `retry_at`.
    #[serde(rename = "failed_retryable")]
    RetryScheduled,
    /// The last attempt may have landed.
    Unconfirmed,
    /// Delivered.
    Published,
    /// Failed for good.
    Failed,
    /// Cancelled before it was published.
    Cancelled,
    /// Published, then removed by the network.
    Removed,
}

/// Writes a post state in the latest format, [`POST_STATE`].
pub fn encode_post_state(state: &post::State) -> String {
    use post::Status;
    let status = match state.status {
        Status::Absent => PostStatusV1::Absent,
        Status::Draft => PostStatusV1::Draft,
        Status::Scheduled => PostStatusV1::Scheduled,
        Status::Publishing => PostStatusV1::Publishing,
        Status::RetryScheduled => PostStatusV1::RetryScheduled,
        Status::Unconfirmed => PostStatusV1::Unconfirmed,
        Status::Published => PostStatusV1::Published,
        Status::Failed => PostStatusV1::Failed,
        Status::Cancelled => PostStatusV1::Cancelled,
        Status::Removed => PostStatusV1::Removed,
    };
    to_text(&PostStateV1 {
        status,
        publish_at: state.publish_at,
        attempts: state.attempts,
        in_flight: state.in_flight,
        retry_at: state.retry_at,
    })
}

/// Reads a post state written in format [`POST_STATE`].
pub fn decode_post_state(data: &str) -> Result<post::State, StateDecodeError> {
    use post::Status;
    let dto: PostStateV1 = parse(POST_STATE, data)?;
    let status = match dto.status {
        PostStatusV1::Absent => Status::Absent,
        PostStatusV1::Draft => Status::Draft,
        PostStatusV1::Scheduled => Status::Scheduled,
        PostStatusV1::Publishing => Status::Publishing,
        PostStatusV1::RetryScheduled => Status::RetryScheduled,
        PostStatusV1::Unconfirmed => Status::Unconfirmed,
        PostStatusV1::Published => Status::Published,
        PostStatusV1::Failed => Status::Failed,
        PostStatusV1::Cancelled => Status::Cancelled,
        PostStatusV1::Removed => Status::Removed,
    };
    Ok(post::State {
        status,
        publish_at: dto.publish_at,
        attempts: dto.attempts,
        in_flight: dto.in_flight,
        retry_at: dto.retry_at,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    format: StateFormat,
    data: &str,
) -> Result<T, StateDecodeError> {
    let malformed = |source| StateDecodeError::Malformed {
        name: format.name,
        version: format.version,
        source,
    };
    // As for events: the stored data is an object, never read by position from an array.
    if !data.trim_start().starts_with('{') {
        return Err(malformed(serde::de::Error::custom(
            "state data must be a JSON object",
        )));
    }
    serde_json::from_str(data).map_err(malformed)
}

fn to_text<T: Serialize>(dto: &T) -> String {
    // The DTOs are plain structs of strings, numbers, UUIDs and timestamps, which
    // always serialize.
    serde_json::to_string(dto).expect("a state DTO always serializes to JSON")
}
