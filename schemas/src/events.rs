//! Events on the wire: the public `encode` / `decode` pair and the registry of every
//! stored `(type, version)`.
//!
//! This is the one place that lists which DTO is the latest version of each type and
//! which older versions a reader still understands. The DTOs and their conversions live
//! in one submodule per aggregate.

pub(crate) mod budget;
pub(crate) mod generation;
pub(crate) mod post;

use domain::{Channel, Micros, Period};
use serde_json::Value;

use crate::DecodeError;
use crate::registry::{Entry, Failure, Latest, Registry, to_data};

/// Any event of any aggregate, as it travels through the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    Budget(domain::budget::Event),
    Post(domain::post::Event),
    Generation(domain::generation::Event),
}

impl From<domain::budget::Event> for DomainEvent {
    fn from(event: domain::budget::Event) -> Self {
        DomainEvent::Budget(event)
    }
}

impl From<domain::generation::Event> for DomainEvent {
    fn from(event: domain::generation::Event) -> Self {
        DomainEvent::Generation(event)
    }
}

impl From<domain::post::Event> for DomainEvent {
    fn from(event: domain::post::Event) -> Self {
        DomainEvent::Post(event)
    }
}

/// An event ready to store: its type, the schema version of `data`, and `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub data: Value,
}

/// Every `(type, version)` a reader understands, oldest version of each type first.
///
/// To add a version, see the crate documentation. Never remove an entry: events of
/// every listed version stay in the log forever.
static REGISTRY: Registry = Registry::new(&[
    Entry::latest::<budget::BudgetLimitsSetV1>(),
    Entry::latest::<budget::BudgetReservedV1>(),
    Entry::latest::<budget::BudgetCommittedV1>(),
    Entry::latest::<budget::BudgetOverrunV1>(),
    Entry::latest::<budget::BudgetReleasedV1>(),
    Entry::latest::<budget::BudgetExpiredV1>(),
    Entry::latest::<budget::BudgetThresholdCrossedV1>(),
    Entry::upcast::<post::PostCreatedV1>(),
    Entry::latest::<post::PostCreatedV2>(),
    Entry::latest::<post::PostEditedV1>(),
    Entry::latest::<post::PostScheduledV1>(),
    Entry::upcast::<post::PostPublishRequestedV1>(),
    Entry::latest::<post::PostPublishRequestedV2>(),
    Entry::upcast::<post::PostPublishedV1>(),
    Entry::latest::<post::PostPublishedV2>(),
    Entry::upcast::<post::PostPublishFailedV1>(),
    Entry::latest::<post::PostPublishFailedV2>(),
    Entry::latest::<post::PostCancelledV1>(),
    Entry::upcast::<post::PostDeliveryAttemptStartedV1>(),
    Entry::latest::<post::PostDeliveryAttemptStartedV2>(),
    Entry::upcast::<post::PostDeliveryAttemptFailedV1>(),
    Entry::latest::<post::PostDeliveryAttemptFailedV2>(),
    Entry::upcast::<post::PostDeliveryUnconfirmedV1>(),
    Entry::latest::<post::PostDeliveryUnconfirmedV2>(),
    Entry::upcast::<post::PostRemovedV1>(),
    Entry::latest::<post::PostRemovedV2>(),
    Entry::latest::<generation::GenerationModeChangedV1>(),
    Entry::latest::<generation::GenerationRequestedV1>(),
    Entry::latest::<generation::GenerationAttemptStartedV1>(),
    Entry::latest::<generation::GenerationAttemptFailedV1>(),
    Entry::latest::<generation::GenerationGeneratedV1>(),
    Entry::latest::<generation::GenerationFailedV1>(),
]);

/// Every event type with its latest schema version, the one [`encode`] writes.
pub const EVENT_TYPES: &[(&str, u32)] = &[
    latest::<budget::BudgetLimitsSetV1>(),
    latest::<budget::BudgetReservedV1>(),
    latest::<budget::BudgetCommittedV1>(),
    latest::<budget::BudgetOverrunV1>(),
    latest::<budget::BudgetReleasedV1>(),
    latest::<budget::BudgetExpiredV1>(),
    latest::<budget::BudgetThresholdCrossedV1>(),
    latest::<post::PostCreatedV2>(),
    latest::<post::PostEditedV1>(),
    latest::<post::PostScheduledV1>(),
    latest::<post::PostPublishRequestedV2>(),
    latest::<post::PostPublishedV2>(),
    latest::<post::PostPublishFailedV2>(),
    latest::<post::PostCancelledV1>(),
    latest::<post::PostDeliveryAttemptStartedV2>(),
    latest::<post::PostDeliveryAttemptFailedV2>(),
    latest::<post::PostDeliveryUnconfirmedV2>(),
    latest::<post::PostRemovedV2>(),
    latest::<generation::GenerationModeChangedV1>(),
    latest::<generation::GenerationRequestedV1>(),
    latest::<generation::GenerationAttemptStartedV1>(),
    latest::<generation::GenerationAttemptFailedV1>(),
    latest::<generation::GenerationGeneratedV1>(),
    latest::<generation::GenerationFailedV1>(),
];

const fn latest<T: Latest>() -> (&'static str, u32) {
    (T::EVENT_TYPE, T::VERSION)
}

/// Turns a domain event into its stored form, always at the latest schema version.
pub fn encode(event: &DomainEvent) -> Encoded {
    match event {
        DomainEvent::Budget(event) => budget::encode(event),
        DomainEvent::Post(event) => post::encode(event),
        DomainEvent::Generation(event) => generation::encode(event),
    }
}

/// Reads a stored event of any known version back into a domain event, upcasting
/// older versions to the latest first.
pub fn decode(
    event_type: &str,
    schema_version: u32,
    data: &Value,
) -> Result<DomainEvent, DecodeError> {
    REGISTRY.decode(event_type, schema_version, data)
}

/// Every `(type, version)` that [`decode`] accepts, older versions included. Each has a
/// checked-in JSON Schema and a golden example.
pub fn event_versions() -> impl Iterator<Item = (&'static str, u32)> {
    REGISTRY.entries().iter().map(|e| (e.event_type, e.version))
}

/// The JSON Schema (draft 2020-12) of the `data` of one stored `(type, version)`.
pub fn event_schema(event_type: &str, schema_version: u32) -> Option<Value> {
    REGISTRY
        .entries()
        .iter()
        .find(|e| e.event_type == event_type && e.version == schema_version)
        .map(|e| (e.schema)().to_value())
}

/// Wraps the latest DTO of a type as a stored event. Accepting only [`Latest`] DTOs is
/// what makes `encode` impossible to leave on an old version.
fn encoded<T: Latest>(dto: T) -> Encoded {
    Encoded {
        event_type: T::EVENT_TYPE,
        schema_version: T::VERSION,
        data: to_data(&dto),
    }
}

/// Checks a stored amount through the domain's constructor.
fn micros(field: &'static str, raw: i64) -> Result<Micros, Failure> {
    Micros::new(raw).map_err(|source| Failure::Invalid { field, source })
}

/// Checks a stored channel slug through the domain's constructor.
fn channel(field: &'static str, raw: &str) -> Result<Channel, Failure> {
    Channel::new(raw).map_err(|source| Failure::Invalid { field, source })
}

/// Parses a stored `YYYY-MM` period through the domain's parser.
fn period(field: &'static str, raw: &str) -> Result<Period, Failure> {
    raw.parse()
        .map_err(|source| Failure::Invalid { field, source })
}

#[cfg(test)]
mod tests {
    //! Consistency of the registry with `EVENT_TYPES`: the parts of the table that the
    //! compiler cannot check.

    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_event_type_has_exactly_one_latest_version_and_it_is_listed() {
        let listed: BTreeSet<(&str, u32)> = EVENT_TYPES.iter().copied().collect();
        assert_eq!(
            listed.len(),
            EVENT_TYPES.len(),
            "EVENT_TYPES has duplicates"
        );
        let latest: Vec<(&str, u32)> = REGISTRY
            .entries()
            .iter()
            .filter(|e| e.is_latest())
            .map(|e| (e.event_type, e.version))
            .collect();
        assert_eq!(latest.iter().copied().collect::<BTreeSet<_>>(), listed);
        assert_eq!(latest.len(), listed.len(), "a type has two latest versions");
    }

    #[test]
    fn every_type_keeps_every_version_from_one_to_its_latest() {
        for &(event_type, latest) in EVENT_TYPES {
            let versions: Vec<u32> = REGISTRY
                .entries()
                .iter()
                .filter(|e| e.event_type == event_type)
                .map(|e| e.version)
                .collect();
            let expected: Vec<u32> = (1..=latest).collect();
            assert_eq!(versions, expected, "versions of {event_type}");
        }
    }

    #[test]
    fn every_registered_type_is_listed_in_event_types() {
        for entry in REGISTRY.entries() {
            assert!(
                EVENT_TYPES.iter().any(|(t, _)| *t == entry.event_type),
                "{} is registered but not in EVENT_TYPES",
                entry.event_type
            );
        }
    }
}
