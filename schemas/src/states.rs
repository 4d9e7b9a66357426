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

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use domain::budget::{self, Limits, OpenReservation, Parts, ReservationOutcome, Settled};
use domain::{Channel, Micros, ReservationId, ValueError, post};
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

/// The budget ledger's state, as [`encode_budget_state`] writes it. Version 2: the
/// settled reservations are one compact string (version 1 listed each id as JSON
/// text, which a cold load paid for per id, and is no longer read).
pub const BUDGET_STATE: StateFormat = StateFormat {
    name: "budget.state",
    version: 2,
};

/// A post's state, as [`encode_post_state`] writes it. Version 2: a post has several
/// targets (version 1, from before that, held one delivery and is no longer read).
pub const POST_STATE: StateFormat = StateFormat {
    name: "post.state",
    version: 2,
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
        BUDGET_STATE => schemars::schema_for!(BudgetStateV2),
        POST_STATE => schemars::schema_for!(PostStateV2),
        _ => return None,
    };
    Some(schema.to_value())
}

/// `budget.state` v2: a month's ledger folded up to some version of its stream.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BudgetStateV2 {
    /// The month's limits; absent while none are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<BudgetLimitsV2>,
    /// Money spent this month (the sum of every commit's actual cost), in micro-USD.
    #[schemars(range(min = 0))]
    committed_micros: i64,
    /// The reservations that still hold money, in id order.
    open: Vec<OpenReservationV2>,
    /// Every reservation settled this month, in id order, as base64 (standard
    /// alphabet, padded) of 17 bytes each: the id's 16 bytes, then how it ended
    /// (1 committed, 2 released, 3 expired).
    #[schemars(regex(pattern = r"^[A-Za-z0-9+/]*={0,2}$"))]
    settled: String,
    /// Alert thresholds (percent of the hard limit) already announced, ascending.
    thresholds_crossed_pct: Vec<u8>,
}

/// Bytes per settled reservation in [`BudgetStateV2::settled`].
const SETTLED_RECORD: usize = 17;

/// A month's limits, as the budget state stores them.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BudgetLimitsV2 {
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
struct OpenReservationV2 {
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
    let mut settled = Vec::with_capacity(parts.settled.len() * SETTLED_RECORD);
    for (id, outcome) in parts.settled {
        settled.extend_from_slice(id.as_uuid().as_bytes());
        settled.push(match outcome {
            ReservationOutcome::Committed => 1,
            ReservationOutcome::Released => 2,
            ReservationOutcome::Expired => 3,
        });
    }
    let dto = BudgetStateV2 {
        limits: parts.limits.map(|l| BudgetLimitsV2 {
            soft_limit_micros: l.soft.get(),
            hard_limit_micros: l.hard.get(),
            alert_thresholds_pct: l.alert_thresholds_pct.clone(),
        }),
        committed_micros: parts.committed.get(),
        open: parts
            .open
            .iter()
            .map(|(id, r)| OpenReservationV2 {
                reservation_id: id.as_uuid(),
                amount_micros: r.amount.get(),
                purpose: r.purpose.clone(),
                expires_at: r.expires_at,
            })
            .collect(),
        settled: BASE64.encode(settled),
        thresholds_crossed_pct: parts.thresholds_crossed.iter().copied().collect(),
    };
    to_text(&dto)
}

/// Reads a budget state written in format [`BUDGET_STATE`] and rebuilds its derived
/// fields through the domain's checked constructor.
pub fn decode_budget_state(data: &str) -> Result<budget::State, StateDecodeError> {
    let format = BUDGET_STATE;
    let dto: BudgetStateV2 = parse(format, data)?;
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
    let inconsistent = |source| StateDecodeError::Inconsistent {
        name: format.name,
        version: format.version,
        source,
    };
    let settled =
        Settled::from_sorted(decode_settled(format, &dto.settled)?).map_err(inconsistent)?;
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
    .map_err(inconsistent)
}

/// The settled reservations of [`BudgetStateV2::settled`], in stored order.
fn decode_settled(
    format: StateFormat,
    text: &str,
) -> Result<Vec<(ReservationId, ReservationOutcome)>, StateDecodeError> {
    let malformed = |why: String| StateDecodeError::Malformed {
        name: format.name,
        version: format.version,
        source: serde::de::Error::custom(why),
    };
    let bytes = BASE64
        .decode(text)
        .map_err(|e| malformed(format!("settled is not base64: {e}")))?;
    if bytes.len() % SETTLED_RECORD != 0 {
        return Err(malformed(format!(
            "settled holds {} bytes, not a whole number of {SETTLED_RECORD}-byte records",
            bytes.len()
        )));
    }
    bytes
        .chunks_exact(SETTLED_RECORD)
        .map(|record| {
            let (id, outcome) = record.split_at(16);
            let id = Uuid::from_slice(id).map_err(|e| malformed(e.to_string()))?;
            let outcome = match outcome[0] {
                1 => ReservationOutcome::Committed,
                2 => ReservationOutcome::Released,
                3 => ReservationOutcome::Expired,
                other => return Err(malformed(format!("settled outcome {other} is unknown"))),
            };
            Ok((ReservationId::from_uuid(id), outcome))
        })
        .collect()
}

/// `post.state` v2: a post folded up to some version of its stream.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PostStateV2 {
    /// Where the post stands, derived from its targets once publishing started.
    status: PostStatusV2,
    /// When a scheduled post is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publish_at: Option<DateTime<Utc>>,
    /// The post's channels, in the order they were given.
    targets: Vec<PostTargetV2>,
}

/// One channel of a post and its delivery.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PostTargetV2 {
    /// The channel slug.
    channel: String,
    /// Absent until publishing is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliveryStateV2>,
    /// Delivery attempts started over the target's life.
    attempts: u32,
    /// When the next attempt is due, while the delivery is `failed_retryable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_at: Option<DateTime<Utc>>,
    /// The network's id of the post, once published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network_post_id: Option<String>,
}

/// A post's status, as stored: the names the API shows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum PostStatusV2 {
    Absent,
    Draft,
    Scheduled,
    Publishing,
    #[serde(rename = "failed_retryable")]
    RetryScheduled,
    Unconfirmed,
    Published,
    PartiallyPublished,
    Failed,
    Cancelled,
    Removed,
}

/// A target's delivery state, as stored: the names the API shows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum DeliveryStateV2 {
    Pending,
    Publishing,
    FailedRetryable,
    Unconfirmed,
    Published,
    FailedPermanent,
    Removed,
}

/// Writes a post state in the latest format, [`POST_STATE`].
pub fn encode_post_state(state: &post::State) -> String {
    use post::{DeliveryState as D, Status as S};
    let status = match state.status {
        S::Absent => PostStatusV2::Absent,
        S::Draft => PostStatusV2::Draft,
        S::Scheduled => PostStatusV2::Scheduled,
        S::Publishing => PostStatusV2::Publishing,
        S::RetryScheduled => PostStatusV2::RetryScheduled,
        S::Unconfirmed => PostStatusV2::Unconfirmed,
        S::Published => PostStatusV2::Published,
        S::PartiallyPublished => PostStatusV2::PartiallyPublished,
        S::Failed => PostStatusV2::Failed,
        S::Cancelled => PostStatusV2::Cancelled,
        S::Removed => PostStatusV2::Removed,
    };
    let targets = state
        .targets
        .iter()
        .map(|t| PostTargetV2 {
            channel: t.channel.as_str().to_owned(),
            delivery: t.delivery.map(|d| match d {
                D::Pending => DeliveryStateV2::Pending,
                D::Publishing => DeliveryStateV2::Publishing,
                D::FailedRetryable => DeliveryStateV2::FailedRetryable,
                D::Unconfirmed => DeliveryStateV2::Unconfirmed,
                D::Published => DeliveryStateV2::Published,
                D::FailedPermanent => DeliveryStateV2::FailedPermanent,
                D::Removed => DeliveryStateV2::Removed,
            }),
            attempts: t.attempts,
            retry_at: t.retry_at,
            network_post_id: t.network_post_id.clone(),
        })
        .collect();
    to_text(&PostStateV2 {
        status,
        publish_at: state.publish_at,
        targets,
    })
}

/// Reads a post state written in format [`POST_STATE`].
pub fn decode_post_state(data: &str) -> Result<post::State, StateDecodeError> {
    use post::{DeliveryState as D, Status as S};
    let format = POST_STATE;
    let dto: PostStateV2 = parse(format, data)?;
    let status = match dto.status {
        PostStatusV2::Absent => S::Absent,
        PostStatusV2::Draft => S::Draft,
        PostStatusV2::Scheduled => S::Scheduled,
        PostStatusV2::Publishing => S::Publishing,
        PostStatusV2::RetryScheduled => S::RetryScheduled,
        PostStatusV2::Unconfirmed => S::Unconfirmed,
        PostStatusV2::Published => S::Published,
        PostStatusV2::PartiallyPublished => S::PartiallyPublished,
        PostStatusV2::Failed => S::Failed,
        PostStatusV2::Cancelled => S::Cancelled,
        PostStatusV2::Removed => S::Removed,
    };
    let targets = dto
        .targets
        .into_iter()
        .map(|t| -> Result<post::Target, StateDecodeError> {
            let channel =
                Channel::new(&t.channel).map_err(|source| StateDecodeError::InvalidValue {
                    name: format.name,
                    version: format.version,
                    field: "targets.channel",
                    source,
                })?;
            Ok(post::Target {
                channel,
                delivery: t.delivery.map(|d| match d {
                    DeliveryStateV2::Pending => D::Pending,
                    DeliveryStateV2::Publishing => D::Publishing,
                    DeliveryStateV2::FailedRetryable => D::FailedRetryable,
                    DeliveryStateV2::Unconfirmed => D::Unconfirmed,
                    DeliveryStateV2::Published => D::Published,
                    DeliveryStateV2::FailedPermanent => D::FailedPermanent,
                    DeliveryStateV2::Removed => D::Removed,
                }),
                attempts: t.attempts,
                retry_at: t.retry_at,
                network_post_id: t.network_post_id,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(post::State {
        status,
        publish_at: dto.publish_at,
        targets,
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
