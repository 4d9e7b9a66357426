//! The Kafka message format, pinned: a golden envelope, its headers and key.
//!
//! Consumers in other processes (and other languages) read these messages, so the
//! format is a stored format like the events themselves: a change that is not an
//! added field is a new `envelope_version`. This file fails when the JSON, the
//! headers or the key of version 2 drift, checks that a version 1 message (the same
//! value) still decodes, and that a decoder refuses a version it does not know. No
//! broker is needed.

use chrono::{DateTime, Utc};
use eventlog::RecordedEvent;
use eventlog::kafka::{
    DecodeError, ENVELOPE_VERSION, decode_value, encode_value, message_headers, message_key,
};
use rdkafka::message::Headers;
use serde_json::json;
use uuid::Uuid;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp is valid RFC 3339")
        .with_timezone(&Utc)
}

fn sample() -> RecordedEvent {
    RecordedEvent {
        global_position: 42,
        event_id: Uuid::parse_str("01936f0e-8d2c-7a4b-9c1d-2e3f4a5b6c7d").expect("uuid"),
        tenant_id: Uuid::parse_str("7f3a9c2e-1b4d-4e6f-8a0b-1c2d3e4f5a6b").expect("uuid"),
        stream_id: "tenant/7f3a9c2e-1b4d-4e6f-8a0b-1c2d3e4f5a6b/post/5d1e".to_owned(),
        version: 3,
        event_type: "post.scheduled".to_owned(),
        schema_version: 2,
        occurred_at: at("2026-11-02T09:30:00.123456Z"),
        recorded_at: at("2026-11-02T09:30:00.200001Z"),
        correlation_id: Uuid::parse_str("0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f").expect("uuid"),
        causation_id: None,
        actor: "user:alice".to_owned(),
        data: json!({ "at": "2026-11-03T08:00:00Z", "network": "mastodon" }),
    }
}

#[test]
fn the_version_2_envelope_is_exactly_the_documented_json() {
    let value = encode_value(&sample()).expect("encodes");
    let actual: serde_json::Value = serde_json::from_slice(&value).expect("value is JSON");
    let golden = json!({
        "envelope_version": 2,
        "global_position": 42,
        "event_id": "01936f0e-8d2c-7a4b-9c1d-2e3f4a5b6c7d",
        "tenant_id": "7f3a9c2e-1b4d-4e6f-8a0b-1c2d3e4f5a6b",
        "stream_id": "tenant/7f3a9c2e-1b4d-4e6f-8a0b-1c2d3e4f5a6b/post/5d1e",
        "version": 3,
        "type": "post.scheduled",
        "schema_version": 2,
        "occurred_at": "2026-11-02T09:30:00.123456Z",
        "recorded_at": "2026-11-02T09:30:00.200001Z",
        "correlation_id": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
        "causation_id": null,
        "actor": "user:alice",
        "data": { "at": "2026-11-03T08:00:00Z", "network": "mastodon" }
    });
    assert_eq!(actual, golden);
    assert_eq!(ENVELOPE_VERSION, 2);
}

/// What the previous release's relay wrote: the same value at version 1 (its eight
/// headers are not read). A consumer of this build reads it to the same event, so
/// consumers can be upgraded before the relay.
#[test]
fn a_version_1_value_decodes_to_the_same_event() {
    let mut value: serde_json::Value =
        serde_json::from_slice(&encode_value(&sample()).expect("encodes")).expect("json");
    value["envelope_version"] = json!(1);
    let bytes = serde_json::to_vec(&value).expect("json");
    assert_eq!(decode_value(Some(&bytes)).expect("decodes"), sample());
}

#[test]
fn an_encoded_event_decodes_to_the_same_event() {
    let mut event = sample();
    event.causation_id = Some(Uuid::now_v7());
    let value = encode_value(&event).expect("encodes");
    assert_eq!(decode_value(Some(&value)).expect("decodes"), event);
}

#[test]
fn a_field_added_later_to_version_2_is_ignored() {
    let mut value: serde_json::Value =
        serde_json::from_slice(&encode_value(&sample()).expect("encodes")).expect("json");
    value["trace_id"] = json!("abc");
    let bytes = serde_json::to_vec(&value).expect("json");
    assert_eq!(decode_value(Some(&bytes)).expect("decodes"), sample());
}

#[test]
fn an_unknown_envelope_version_is_refused() {
    let mut value: serde_json::Value =
        serde_json::from_slice(&encode_value(&sample()).expect("encodes")).expect("json");
    for unknown in [0, 3] {
        value["envelope_version"] = json!(unknown);
        let bytes = serde_json::to_vec(&value).expect("json");
        assert!(matches!(
            decode_value(Some(&bytes)),
            Err(DecodeError::UnknownVersion(v)) if v == unknown
        ));
    }
    assert!(matches!(decode_value(None), Err(DecodeError::Empty)));
    assert!(matches!(
        decode_value(Some(b"{")),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn the_key_is_the_tenant_and_the_headers_name_the_event() {
    let event = sample();
    assert_eq!(message_key(&event), "7f3a9c2e-1b4d-4e6f-8a0b-1c2d3e4f5a6b");
    let headers = message_headers(&event);
    let actual: Vec<(String, String)> = headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value.expect("header has a value")).expect("utf-8");
            (h.key.to_owned(), value.to_owned())
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("event_type", "post.scheduled"),
        ("position", "42"),
        ("envelope_version", "2"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(actual, expected);
}
