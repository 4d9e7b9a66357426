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
//! A format may split its state in two ([`StoredState`]): the data every cold load
//! reads, and a *detail* that the store keeps beside it and hands out only on request.
//! The budget state keeps its settled-reservation list there and a Bloom filter of the
//! list's ids in the data, so a cold load reads about 1.25 bytes per settled
//! reservation instead of 17, and the list only when the filter cannot rule an id out.
//!
//! The data is JSON text, read straight into the DTO (not through a
//! `serde_json::Value`): a busy month's budget state holds tens of thousands of settled
//! reservation ids, and reading it is on the path of a cold command.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use domain::budget::{
    self, Limits, OpenReservation, Parts, ReservationOutcome, Settled, SettledFilter, Unlisted,
};
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

/// The budget ledger's state, as [`encode_budget_state`] writes it. Version 3: the
/// settled reservations are listed in the snapshot's detail, and the data holds a
/// filter of their ids (version 2 held the list in the data, which every cold load
/// read whole; version 1 listed each id as JSON text; neither is read any more).
pub const BUDGET_STATE: StateFormat = StateFormat {
    name: "budget.state",
    version: 3,
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

/// A state as a snapshot stores it: the data every cold load reads, and the detail, if
/// the format has one, which is read only when the state needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub data: String,
    pub detail: Option<String>,
}

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
        BUDGET_STATE => schemars::schema_for!(BudgetStateV3),
        POST_STATE => schemars::schema_for!(PostStateV2),
        _ => return None,
    };
    Some(schema.to_value())
}

/// The JSON Schema (draft 2020-12) of one stored state format's detail, for the
/// formats that have one.
pub fn state_detail_schema(format: StateFormat) -> Option<Value> {
    let schema = match format {
        BUDGET_STATE => schemars::schema_for!(BudgetSettledV3),
        _ => return None,
    };
    Some(schema.to_value())
}

/// `budget.state` v3: a month's ledger folded up to some version of its stream, but
/// for its settled reservations, of which it holds only a filter ([`BudgetSettledV3`]
/// is the detail that lists them).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BudgetStateV3 {
    /// The month's limits; absent while none are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<BudgetLimitsV2>,
    /// Money spent this month (the sum of every commit's actual cost), in micro-USD.
    #[schemars(range(min = 0))]
    committed_micros: i64,
    /// The reservations that still hold money, in id order.
    open: Vec<OpenReservationV2>,
    /// A Bloom filter of the ids of every reservation settled this month.
    settled_filter: SettledFilterV3,
    /// Alert thresholds (percent of the hard limit) already announced, ascending.
    thresholds_crossed_pct: Vec<u8>,
}

/// A Bloom filter of settled reservation ids (`domain::budget::SettledFilter`): bit
/// `i` of the table is bit `i % 8` of byte `i / 8`; an id sets the bits
/// `(h1 + k·h2) mod bits` for `k < hashes`, where `h1` and `h2` are the filter's fixed
/// mixes of the id's two 64-bit halves.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SettledFilterV3 {
    /// How many ids the filter was built from: the length of the detail's list.
    count: u64,
    /// Probes per id.
    #[schemars(range(min = 1, max = 32))]
    hashes: u8,
    /// The bit table, as base64 (standard alphabet, padded); at least 8 bytes.
    #[schemars(regex(pattern = r"^[A-Za-z0-9+/]*={0,2}$"))]
    bits: String,
}

/// The detail of `budget.state` v3: every reservation settled this month.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BudgetSettledV3 {
    /// Every reservation settled this month, in id order, as base64 (standard
    /// alphabet, padded) of 17 bytes each: the id's 16 bytes, then how it ended
    /// (1 committed, 2 released, 3 expired).
    #[schemars(regex(pattern = r"^[A-Za-z0-9+/]*={0,2}$"))]
    settled: String,
}

/// Bytes per settled reservation in [`BudgetSettledV3::settled`].
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

/// Writes a budget state in the latest format, [`BUDGET_STATE`]; needs its settled
/// list ([`Unlisted`] otherwise: a state decoded from a snapshot is listed first).
pub fn encode_budget_state(state: &budget::State) -> Result<StoredState, Unlisted> {
    let parts = state.parts();
    let mut settled = Vec::new();
    let mut ids = Vec::new();
    for (id, outcome) in parts.settled.iter()? {
        settled.extend_from_slice(id.as_uuid().as_bytes());
        settled.push(match outcome {
            ReservationOutcome::Committed => 1,
            ReservationOutcome::Released => 2,
            ReservationOutcome::Expired => 3,
        });
        ids.push(*id);
    }
    let filter = SettledFilter::build(ids.len(), &ids);
    let dto = BudgetStateV3 {
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
        settled_filter: SettledFilterV3 {
            count: filter.count(),
            hashes: filter.hashes(),
            bits: BASE64.encode(filter.bits()),
        },
        thresholds_crossed_pct: parts.thresholds_crossed.iter().copied().collect(),
    };
    Ok(StoredState {
        data: to_text(&dto),
        detail: Some(to_text(&BudgetSettledV3 {
            settled: BASE64.encode(settled),
        })),
    })
}

/// Reads the data of a budget state written in format [`BUDGET_STATE`] and rebuilds its
/// derived fields through the domain's checked constructor. Its settled set holds only
/// the filter until [`list_budget_settled`] hands it the snapshot's detail.
pub fn decode_budget_state(data: &str) -> Result<budget::State, StateDecodeError> {
    let format = BUDGET_STATE;
    let dto: BudgetStateV3 = parse(format, data)?;
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
    let malformed = |why: String| malformed_because(format, why);
    let bits = BASE64
        .decode(&dto.settled_filter.bits)
        .map_err(|e| malformed(format!("settled_filter.bits is not base64: {e}")))?;
    let filter =
        SettledFilter::from_parts(bits, dto.settled_filter.hashes, dto.settled_filter.count)
            .map_err(|e| malformed(format!("settled_filter: {e}")))?;
    budget::State::from_parts(Parts {
        limits,
        committed: micros("committed_micros", dto.committed_micros)?,
        open,
        settled: Settled::filtered(filter),
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

/// Hands a budget state decoded by [`decode_budget_state`] the settled list from its
/// snapshot's detail. Refuses a detail that is not the list the state's filter was
/// built from, or that lists a reservation the state holds open: no stream `decide`
/// accepts has one both open and settled (the command side then folds the stream from
/// its first event instead).
pub fn list_budget_settled(
    state: &mut budget::State,
    detail: &str,
) -> Result<(), StateDecodeError> {
    let format = BUDGET_STATE;
    let dto: BudgetSettledV3 = parse(format, detail)?;
    let settled = decode_settled(format, &dto.settled)?;
    let inconsistent = |source| StateDecodeError::Inconsistent {
        name: format.name,
        version: format.version,
        source,
    };
    if let Some((id, _)) = settled.iter().find(|(id, _)| state.open.contains_key(id)) {
        return Err(inconsistent(budget::StateError::OpenAndSettled(*id)));
    }
    state.settled.list(settled).map_err(inconsistent)
}

/// The settled reservations of [`BudgetSettledV3::settled`], in stored order.
fn decode_settled(
    format: StateFormat,
    text: &str,
) -> Result<Vec<(ReservationId, ReservationOutcome)>, StateDecodeError> {
    let malformed = |why: String| malformed_because(format, why);
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

/// Writes a post state in the latest format, [`POST_STATE`], which has no detail.
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

/// Stored data of `format` that parsed but says something its schema cannot.
fn malformed_because(format: StateFormat, why: String) -> StateDecodeError {
    StateDecodeError::Malformed {
        name: format.name,
        version: format.version,
        source: serde::de::Error::custom(why),
    }
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
