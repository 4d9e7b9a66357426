//! The machinery behind `decode`: a table of every `(type, version)` ever stored and the
//! step that brings each one closer to the domain.
//!
//! An entry is either the *latest* version of its type, decoded straight into the domain
//! event, or an *older* version with an upcaster that rewrites its data into the next
//! version. Decoding walks that chain one version at a time, so an upcaster is written
//! once, against its neighbour, and never has to know about later versions. The table
//! itself lives next to the DTOs in `events.rs`; this module knows nothing about any
//! particular event, which is what lets the unit tests below drive it with a fake chain.

use std::borrow::Cow;

use domain::ValueError;
use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::DecodeError;
use crate::events::DomainEvent;

/// A DTO that is the stored shape of one `(type, version)`.
pub(crate) trait Version: Serialize + DeserializeOwned + JsonSchema {
    const EVENT_TYPE: &'static str;
    const VERSION: u32;
}

/// The latest version of a type: the one `encode` writes and every decode ends at.
pub(crate) trait Latest: Version {
    /// Validates the values and builds the domain event.
    fn into_domain(self) -> Result<DomainEvent, Failure>;
}

/// An older version, which decoding rewrites into the next one.
pub(crate) trait Upcast: Version {
    type Next: Version;
    /// Says in the next version's terms what this old data meant.
    fn upcast(self) -> Self::Next;
}

/// A decode failure before it is told which event it happened to.
#[derive(Debug)]
pub(crate) enum Failure {
    Malformed(serde_json::Error),
    Invalid {
        field: &'static str,
        source: ValueError,
    },
}

impl Failure {
    fn at(self, event_type: &str, schema_version: u32) -> DecodeError {
        let event_type = event_type.to_owned();
        match self {
            Failure::Malformed(source) => DecodeError::Malformed {
                event_type,
                schema_version,
                source,
            },
            Failure::Invalid { field, source } => DecodeError::InvalidValue {
                event_type,
                schema_version,
                field,
                source,
            },
        }
    }
}

/// Reads a DTO out of stored data.
pub(crate) fn parse<T: DeserializeOwned>(data: &Value) -> Result<T, Failure> {
    // Serde's derived structs also accept a JSON array of the field values in order.
    // Stored data is always an object, as the schemas say, so anything else is refused
    // here rather than read by position.
    if !data.is_object() {
        return Err(Failure::Malformed(serde::de::Error::custom(
            "event data must be a JSON object",
        )));
    }
    T::deserialize(data).map_err(Failure::Malformed)
}

/// Writes a DTO as stored data.
pub(crate) fn to_data<T: Serialize>(dto: &T) -> Value {
    // Serializing into a `Value` fails only for maps with non-string keys or a
    // `Serialize` impl that reports an error; the DTOs are plain structs of strings,
    // numbers, UUIDs and timestamps, so neither can happen.
    serde_json::to_value(dto).expect("a DTO always serializes to JSON")
}

#[derive(Clone, Copy)]
enum Step {
    Decode(fn(&Value) -> Result<DomainEvent, Failure>),
    Upcast(fn(&Value) -> Result<Value, Failure>),
}

/// One `(type, version)` in the registry.
pub(crate) struct Entry {
    pub(crate) event_type: &'static str,
    pub(crate) version: u32,
    /// The JSON Schema of this version's data.
    pub(crate) schema: fn() -> Schema,
    step: Step,
}

impl Entry {
    /// The latest version of `T`'s type.
    pub(crate) const fn latest<T: Latest>() -> Self {
        Self {
            event_type: T::EVENT_TYPE,
            version: T::VERSION,
            schema: schema_of::<T>,
            step: Step::Decode(decode_step::<T>),
        }
    }

    /// An older version, upcast to `T::Next`. Evaluated while compiling, so a chain that
    /// skips a version or changes type does not build.
    pub(crate) const fn upcast<T: Upcast>() -> Self {
        assert!(
            <T::Next as Version>::VERSION == T::VERSION + 1,
            "an upcaster must lead to the next version"
        );
        assert!(
            same_str(T::EVENT_TYPE, <T::Next as Version>::EVENT_TYPE),
            "an upcaster must keep the event type"
        );
        Self {
            event_type: T::EVENT_TYPE,
            version: T::VERSION,
            schema: schema_of::<T>,
            step: Step::Upcast(upcast_step::<T>),
        }
    }

    pub(crate) fn is_latest(&self) -> bool {
        matches!(self.step, Step::Decode(_))
    }
}

fn schema_of<T: JsonSchema>() -> Schema {
    schemars::schema_for!(T)
}

fn decode_step<T: Latest>(data: &Value) -> Result<DomainEvent, Failure> {
    parse::<T>(data)?.into_domain()
}

fn upcast_step<T: Upcast>(data: &Value) -> Result<Value, Failure> {
    Ok(to_data(&parse::<T>(data)?.upcast()))
}

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Every `(type, version)` a reader understands.
pub(crate) struct Registry {
    entries: &'static [Entry],
}

impl Registry {
    pub(crate) const fn new(entries: &'static [Entry]) -> Self {
        Self { entries }
    }

    pub(crate) fn entries(&self) -> &'static [Entry] {
        self.entries
    }

    fn find(&self, event_type: &str, version: u32) -> Option<&'static Entry> {
        self.entries
            .iter()
            .find(|e| e.event_type == event_type && e.version == version)
    }

    pub(crate) fn latest_version(&self, event_type: &str) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.event_type == event_type && e.is_latest())
            .map(|e| e.version)
    }

    /// Upcasts `data` from `schema_version` to the latest version, one step at a time,
    /// then converts it to the domain event.
    pub(crate) fn decode(
        &self,
        event_type: &str,
        schema_version: u32,
        data: &Value,
    ) -> Result<DomainEvent, DecodeError> {
        let latest = self
            .latest_version(event_type)
            .ok_or_else(|| DecodeError::UnknownType {
                event_type: event_type.to_owned(),
            })?;
        let mut version = schema_version;
        let mut data = Cow::Borrowed(data);
        loop {
            let entry =
                self.find(event_type, version)
                    .ok_or_else(|| DecodeError::UnknownVersion {
                        event_type: event_type.to_owned(),
                        schema_version,
                        latest,
                    })?;
            match entry.step {
                Step::Decode(decode) => {
                    return decode(&data).map_err(|f| f.at(event_type, version));
                }
                Step::Upcast(upcast) => {
                    data = Cow::Owned(upcast(&data).map_err(|f| f.at(event_type, version))?);
                    // `Entry::upcast` guarantees the next version is exactly one higher.
                    version += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Drives the registry with a made-up history of `post.edited`, in which the body
    //! was first called `text` (v1), then gained an editor note (v2), which v3 dropped
    //! again. Production events have at most two versions so far; these tests prove a
    //! longer chain works the same way.

    use domain::post;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    const EDITED: &str = "post.edited";

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct EditedV1 {
        text: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct EditedV2 {
        body: String,
        note: Option<String>,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct EditedV3 {
        body: String,
    }

    impl Version for EditedV1 {
        const EVENT_TYPE: &'static str = EDITED;
        const VERSION: u32 = 1;
    }
    impl Version for EditedV2 {
        const EVENT_TYPE: &'static str = EDITED;
        const VERSION: u32 = 2;
    }
    impl Version for EditedV3 {
        const EVENT_TYPE: &'static str = EDITED;
        const VERSION: u32 = 3;
    }

    impl Upcast for EditedV1 {
        type Next = EditedV2;
        fn upcast(self) -> EditedV2 {
            EditedV2 {
                body: self.text,
                note: None,
            }
        }
    }

    impl Upcast for EditedV2 {
        type Next = EditedV3;
        fn upcast(self) -> EditedV3 {
            EditedV3 { body: self.body }
        }
    }

    impl Latest for EditedV3 {
        fn into_domain(self) -> Result<DomainEvent, Failure> {
            Ok(DomainEvent::Post(post::Event::Edited { body: self.body }))
        }
    }

    static HISTORY: Registry = Registry::new(&[
        Entry::upcast::<EditedV1>(),
        Entry::upcast::<EditedV2>(),
        Entry::latest::<EditedV3>(),
    ]);

    fn edited(body: &str) -> DomainEvent {
        DomainEvent::Post(post::Event::Edited { body: body.into() })
    }

    #[test]
    fn the_oldest_version_is_upcast_through_every_step_to_the_domain() {
        let decoded = HISTORY.decode(EDITED, 1, &json!({ "text": "Hello" }));
        assert_eq!(decoded.ok(), Some(edited("Hello")));
    }

    #[test]
    fn a_middle_version_starts_the_chain_where_it_stands() {
        let decoded = HISTORY.decode(EDITED, 2, &json!({ "body": "Hi", "note": "typo" }));
        assert_eq!(decoded.ok(), Some(edited("Hi")));
    }

    #[test]
    fn the_latest_version_is_decoded_directly() {
        let decoded = HISTORY.decode(EDITED, 3, &json!({ "body": "Hey" }));
        assert_eq!(decoded.ok(), Some(edited("Hey")));
    }

    #[test]
    fn old_data_in_a_newer_shape_is_malformed_at_its_own_version() {
        let err = HISTORY.decode(EDITED, 1, &json!({ "body": "Hello" }));
        assert!(
            matches!(
                err,
                Err(DecodeError::Malformed { ref event_type, schema_version: 1, .. })
                    if event_type == EDITED
            ),
            "{err:?}"
        );
    }

    #[test]
    fn versions_past_the_latest_or_below_one_are_unknown() {
        for version in [0, 4] {
            let err = HISTORY.decode(EDITED, version, &json!({ "body": "x" }));
            assert!(
                matches!(
                    err,
                    Err(DecodeError::UnknownVersion { schema_version, latest: 3, .. })
                        if schema_version == version
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_type_missing_from_the_registry_is_unknown() {
        let err = HISTORY.decode("post.created", 1, &json!({}));
        assert!(
            matches!(err, Err(DecodeError::UnknownType { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn the_registry_reports_the_latest_version_of_each_type() {
        assert_eq!(HISTORY.latest_version(EDITED), Some(3));
        assert_eq!(HISTORY.latest_version("post.created"), None);
    }
}
