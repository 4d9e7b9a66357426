//! Golden examples: one realistic stored `data` per `(type, version)` under `golden/`.
//!
//! They are written by hand once and never changed, because they stand for events that
//! are already in someone's log. Every one must keep decoding, whatever the code turns
//! into; one of the latest version must also re-encode to exactly the same JSON, which
//! catches a renamed or reformatted field before it reaches a database.

use schemas::{EVENT_TYPES, decode, encode, event_versions};
use serde_json::Value;

use crate::{crate_path, file_names};

fn golden_name(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}.json")
}

fn read_golden(name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(crate_path(&format!("golden/{name}"))).ok()?;
    let data =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden/{name} is not JSON: {e}"));
    Some(data)
}

fn is_latest(event_type: &str, version: u32) -> bool {
    EVENT_TYPES.contains(&(event_type, version))
}

#[test]
fn every_registered_version_has_a_golden_example() {
    let missing: Vec<String> = event_versions()
        .map(|(t, v)| golden_name(t, v))
        .filter(|name| read_golden(name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "write a realistic stored `data` example by hand for each of: golden/{}",
        missing.join(", golden/")
    );
}

#[test]
fn every_golden_example_belongs_to_a_registered_version() {
    let known: Vec<String> = event_versions().map(|(t, v)| golden_name(t, v)).collect();
    for name in file_names("golden") {
        assert!(
            known.contains(&name),
            "golden/{name} matches no registered (type, version)"
        );
    }
}

#[test]
fn every_golden_example_decodes_and_the_latest_ones_re_encode_unchanged() {
    for (event_type, version) in event_versions() {
        let name = golden_name(event_type, version);
        let Some(data) = read_golden(&name) else {
            continue; // reported by `every_registered_version_has_a_golden_example`
        };
        let event = decode(event_type, version, &data)
            .unwrap_or_else(|e| panic!("golden/{name} no longer decodes: {e}: {e:?}"));
        if is_latest(event_type, version) {
            let encoded = encode(&event);
            assert_eq!(
                (encoded.event_type, encoded.schema_version),
                (event_type, version),
                "golden/{name} re-encodes as another type or version"
            );
            assert_eq!(encoded.data, data, "golden/{name} re-encodes differently");
        }
    }
}

/// Decodes a golden example into its domain event.
fn golden_event(event_type: &str, version: u32) -> schemas::DomainEvent {
    let name = golden_name(event_type, version);
    let data = read_golden(&name).unwrap_or_else(|| panic!("golden/{name} is missing"));
    decode(event_type, version, &data)
        .unwrap_or_else(|e| panic!("golden/{name} no longer decodes: {e}"))
}

#[test]
fn a_post_of_one_channel_stored_in_the_first_version_upcasts_to_a_list_of_one() {
    use domain::Channel;
    use domain::post::Event;
    let schemas::DomainEvent::Post(Event::Created { channels, .. }) =
        golden_event("post.created", 1)
    else {
        panic!("post.created decodes to another event");
    };
    assert_eq!(
        channels,
        vec![Channel::new("linkedin").expect("a valid slug")]
    );
}

#[test]
fn delivery_events_of_the_first_version_upcast_to_the_posts_first_channel() {
    use domain::post::Event;
    for event_type in [
        "post.publish_requested",
        "post.published",
        "post.publish_failed",
        "post.delivery_attempt_started",
        "post.delivery_attempt_failed",
        "post.delivery_unconfirmed",
        "post.removed",
    ] {
        let schemas::DomainEvent::Post(event) = golden_event(event_type, 1) else {
            panic!("{event_type} decodes to another aggregate's event");
        };
        let channel = match event {
            Event::PublishRequested { channel, .. }
            | Event::Published { channel, .. }
            | Event::PublishFailed { channel, .. }
            | Event::DeliveryAttemptStarted { channel, .. }
            | Event::DeliveryAttemptFailed { channel, .. }
            | Event::DeliveryUnconfirmed { channel, .. }
            | Event::Removed { channel, .. } => channel,
            other => panic!("{event_type} decodes to {other:?}"),
        };
        assert_eq!(channel, None, "{event_type} v1 names no channel");
        // Its second version names the target.
        let schemas::DomainEvent::Post(event) = golden_event(event_type, 2) else {
            panic!("{event_type} decodes to another aggregate's event");
        };
        let named = match event {
            Event::PublishRequested { channel, .. }
            | Event::Published { channel, .. }
            | Event::PublishFailed { channel, .. }
            | Event::DeliveryAttemptStarted { channel, .. }
            | Event::DeliveryAttemptFailed { channel, .. }
            | Event::DeliveryUnconfirmed { channel, .. }
            | Event::Removed { channel, .. } => channel,
            other => panic!("{event_type} decodes to {other:?}"),
        };
        assert!(
            named.is_some(),
            "golden/{event_type}.v2.json names its target"
        );
    }
}
