//! Why a stored event could not be turned back into a domain event.
//!
//! Readers of the log (projector, workflows, replay) need to tell "this process is too
//! old for this event" (an unknown type or version) apart from "this data is broken"
//! (malformed JSON or a value the domain refuses), so each gets its own variant, and
//! every variant names the event type and version it was reading.

use domain::ValueError;

/// A stored event that [`decode`](crate::decode) could not read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No event type of this name was ever registered.
    #[error("unknown event type {event_type:?}")]
    UnknownType { event_type: String },

    /// The type is known but this version is not: either the event was written by a
    /// newer release, or the version number is invalid (versions start at 1).
    #[error("event type {event_type} has no schema version {schema_version} (latest is {latest})")]
    UnknownVersion {
        event_type: String,
        schema_version: u32,
        latest: u32,
    },

    /// The data does not have the shape of its schema: a missing or unknown field, a
    /// wrong JSON type, a bad UUID or timestamp. `schema_version` is the version whose
    /// shape was expected; for an upcast event that is the stored version unless an
    /// upcaster itself produced bad data.
    #[error("{event_type} v{schema_version} data does not match its schema")]
    Malformed {
        event_type: String,
        schema_version: u32,
        #[source]
        source: serde_json::Error,
    },

    /// The data has the right shape but a value the domain refuses, such as a negative
    /// amount or an invalid channel slug.
    #[error("{event_type} v{schema_version} has an invalid `{field}`")]
    InvalidValue {
        event_type: String,
        schema_version: u32,
        /// The wire name of the offending field.
        field: &'static str,
        #[source]
        source: ValueError,
    },
}
