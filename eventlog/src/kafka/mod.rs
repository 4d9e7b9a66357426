//! Kafka as the distribution log: the relay that feeds it from the store, the source
//! that reads it back, and the leases by which a group's members share its partitions.
//!
//! The event store is the source of truth; Kafka is derived from it (the
//! transactional-outbox pattern). [`Relay`] tails the store's global log from a
//! durable checkpoint and produces every event to one topic, keyed by tenant, so each
//! tenant's events stay in order in one partition while tenants spread over many.
//! [`KafkaSource`] reads the partitions of that topic a projector running as its own
//! process holds [`PartitionLeases`] on, with the caller's database — not Kafka —
//! holding the offsets that count (and the leases).
//!
//! # Delivery: at least once, deduplicated by position
//!
//! Nothing here uses Kafka transactions (not every Kafka-API broker has them, and they
//! could not span the store anyway). The relay saves its checkpoint only after Kafka
//! acknowledged every message up to it, so a crash between producing and saving
//! produces those events again: a message may appear more than once, never not at
//! all. Each copy carries the event's `global_position`, and the relay guarantees
//! that within a partition a position first appears only after every lower position
//! of that partition (see [`relay`]). A consumer therefore keeps, per partition, the
//! highest position it applied, skips any event at or below it, and commits that
//! mark and the partition's next offset in the same transaction as its effects.
//!
//! # The message format (envelope version 2)
//!
//! * key: the tenant id, as lowercase hyphenated UUID text;
//! * value: a JSON object with every field of [`RecordedEvent`] — see [`Envelope`];
//! * headers (UTF-8 text): `event_type`, `position` and `envelope_version`, so tools
//!   can filter by type, check order and pick a decoder without parsing the value
//!   (the key already names the tenant; every other field is in the value).
//!
//! A field may be added to a version (decoders ignore fields they do not know); any
//! other change is a new `envelope_version`, and decoders refuse versions they do not
//! know rather than guess.
//!
//! Version 1 (until 2026-12-05) had the same value and eight headers: these three and
//! `event_id`, `schema_version`, `tenant_id`, `stream_id` and `version`, copies of the
//! key and the value. Each header is a row in a broker that keeps its log in a database
//! (tansu): the five copies cost about a tenth of the command rate the whole pipeline
//! sustains on two cores (docs/benchmarks.md). This build reads both versions, so
//! during an upgrade the consumers go first and the relay last (docs/production.md).

pub mod checkpoint;
pub mod consumer;
pub mod leases;
pub mod relay;

use chrono::{DateTime, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Position, RecordedEvent, Version};

pub use checkpoint::{RelayCheckpoint, SqliteRelayCheckpoint};
pub use consumer::{
    BoxError, DEFAULT_FETCH_WAIT_MS, DEFAULT_LINGER_MS, KafkaSource, OffsetStore, SourceConfig,
    SourceError, SourcedEvent,
};
pub use leases::{PartitionLeases, lease_holders};
pub use relay::{Relay, RelayConfig, RelayError, RelayOutcome};

/// The topic the relay writes and the projector reads unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "tidemark.events";

/// The envelope version this code writes.
pub const ENVELOPE_VERSION: u32 = 2;

/// The envelope versions this code reads: its own and version 1, whose value is the
/// same (only its headers differ, and decoders do not read headers).
pub const READABLE_ENVELOPE_VERSIONS: [u32; 2] = [1, ENVELOPE_VERSION];

/// The JSON value of a message: the event's full envelope, field for field.
///
/// Field names follow the design's envelope (`type`, not `event_type`). Timestamps
/// are RFC 3339 in UTC; ids are lowercase hyphenated UUIDs; `data` is the event body
/// exactly as stored, still in its own `(type, schema_version)` format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always [`ENVELOPE_VERSION`] when written by this code.
    pub envelope_version: u32,
    pub global_position: Position,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub stream_id: String,
    pub version: Version,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor: String,
    pub data: serde_json::Value,
}

/// Why a message's value could not be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no value")]
    Empty,
    #[error("message value is not a Tidemark event envelope")]
    Json(#[from] serde_json::Error),
    #[error(
        "envelope version {0} is not known to this build (it reads versions 1 and {ENVELOPE_VERSION})"
    )]
    UnknownVersion(u32),
}

impl From<&RecordedEvent> for Envelope {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            envelope_version: ENVELOPE_VERSION,
            global_position: event.global_position,
            event_id: event.event_id,
            tenant_id: event.tenant_id,
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            occurred_at: event.occurred_at,
            recorded_at: event.recorded_at,
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
            actor: event.actor.clone(),
            data: event.data.clone(),
        }
    }
}

impl From<Envelope> for RecordedEvent {
    fn from(envelope: Envelope) -> Self {
        Self {
            global_position: envelope.global_position,
            event_id: envelope.event_id,
            tenant_id: envelope.tenant_id,
            stream_id: envelope.stream_id,
            version: envelope.version,
            event_type: envelope.event_type,
            schema_version: envelope.schema_version,
            occurred_at: envelope.occurred_at,
            recorded_at: envelope.recorded_at,
            correlation_id: envelope.correlation_id,
            causation_id: envelope.causation_id,
            actor: envelope.actor,
            data: envelope.data,
        }
    }
}

/// The message value for an event: its [`Envelope`] as JSON.
pub fn encode_value(event: &RecordedEvent) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope::from(event))
}

/// Decodes a message value written by [`encode_value`].
pub fn decode_value(value: Option<&[u8]>) -> Result<RecordedEvent, DecodeError> {
    let value = value.ok_or(DecodeError::Empty)?;
    let envelope: Envelope = serde_json::from_slice(value)?;
    if !READABLE_ENVELOPE_VERSIONS.contains(&envelope.envelope_version) {
        return Err(DecodeError::UnknownVersion(envelope.envelope_version));
    }
    Ok(envelope.into())
}

/// The message key for an event: its tenant, so a tenant's events share a partition.
pub fn message_key(event: &RecordedEvent) -> String {
    event.tenant_id.to_string()
}

/// The headers of an event's message (see the module docs for the list).
pub fn message_headers(event: &RecordedEvent) -> OwnedHeaders {
    let pairs = [
        ("event_type", event.event_type.clone()),
        ("position", event.global_position.to_string()),
        ("envelope_version", ENVELOPE_VERSION.to_string()),
    ];
    pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        },
    )
}
