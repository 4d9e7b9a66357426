//! Bad stored data is refused with the error that says what is wrong with it: unknown
//! type or version, the wrong shape (malformed), or a value the domain refuses.

use domain::ValueError;
use schemas::{DecodeError, decode};
use serde_json::{Value, json};

/// Decodes v1 data that must fail to be Malformed, and returns serde's explanation.
fn malformed(event_type: &str, data: Value) -> String {
    match decode(event_type, 1, &data) {
        Err(DecodeError::Malformed {
            event_type: t,
            schema_version: 1,
            source,
        }) if t == event_type => source.to_string(),
        other => panic!("{event_type} {data} should be malformed, got {other:?}"),
    }
}

/// Decodes v1 data that must hold an invalid value, and returns the field and reason.
fn invalid(event_type: &str, data: Value) -> (&'static str, ValueError) {
    invalid_at(event_type, 1, 1, data)
}

/// Decodes data stored at version `stored` that must hold an invalid value, found at
/// version `version` (older data is checked once upcast to the version that meets the
/// domain), and returns the field and reason.
fn invalid_at(
    event_type: &str,
    stored: u32,
    version: u32,
    data: Value,
) -> (&'static str, ValueError) {
    match decode(event_type, stored, &data) {
        Err(DecodeError::InvalidValue {
            event_type: t,
            schema_version,
            field,
            source,
        }) if t == event_type && schema_version == version => (field, source),
        other => panic!("{event_type} {data} should hold an invalid value, got {other:?}"),
    }
}

const RESERVATION: &str = "0193a4b2-7c1e-7d3a-9f20-4c5b6a7d8e91";

#[test]
fn an_unknown_field_is_malformed() {
    let why = malformed(
        "budget.released",
        json!({ "reservation_id": RESERVATION, "amount_micros": 5, "memo": "x" }),
    );
    assert!(why.contains("unknown field `memo`"), "{why}");
}

#[test]
fn an_unknown_field_in_an_event_without_data_is_malformed() {
    let why = malformed("post.cancelled", json!({ "why": "changed our mind" }));
    assert!(why.contains("unknown field `why`"), "{why}");
}

#[test]
fn a_missing_field_is_malformed() {
    let why = malformed("budget.released", json!({ "reservation_id": RESERVATION }));
    assert!(why.contains("missing field `amount_micros`"), "{why}");
}

#[test]
fn an_amount_written_as_a_string_is_malformed() {
    malformed(
        "budget.released",
        json!({ "reservation_id": RESERVATION, "amount_micros": "5" }),
    );
}

#[test]
fn an_amount_with_a_fraction_is_malformed() {
    malformed(
        "budget.released",
        json!({ "reservation_id": RESERVATION, "amount_micros": 1.5 }),
    );
}

#[test]
fn a_reservation_id_that_is_not_a_uuid_is_malformed() {
    malformed(
        "budget.released",
        json!({ "reservation_id": "res-42", "amount_micros": 5 }),
    );
}

#[test]
fn a_timestamp_that_is_not_rfc_3339_is_malformed() {
    malformed("post.scheduled", json!({ "publish_at": "next Tuesday" }));
}

#[test]
fn an_unknown_trigger_is_malformed() {
    malformed("post.publish_requested", json!({ "trigger": "cron" }));
}

#[test]
fn a_threshold_above_255_is_malformed() {
    malformed(
        "budget.threshold_crossed",
        json!({ "threshold_pct": 300, "committed_micros": 1, "hard_limit_micros": 2 }),
    );
}

#[test]
fn data_that_is_not_an_object_is_malformed() {
    malformed("post.edited", json!(null));
    malformed("post.edited", json!(["body"]));
}

#[test]
fn a_negative_amount_is_an_invalid_value() {
    let got = invalid(
        "budget.reserved",
        json!({
            "reservation_id": RESERVATION,
            "amount_micros": -1,
            "purpose": "draft",
            "expires_at": "2026-11-03T09:15:00Z"
        }),
    );
    assert_eq!(got, ("amount_micros", ValueError::NegativeAmount));
}

#[test]
fn a_negative_hard_limit_is_an_invalid_value_named_by_its_wire_field() {
    let got = invalid(
        "budget.limits_set",
        json!({ "soft_limit_micros": 0, "hard_limit_micros": -5, "alert_thresholds_pct": [] }),
    );
    assert_eq!(got, ("hard_limit_micros", ValueError::NegativeAmount));
}

#[test]
fn a_channel_with_capitals_is_an_invalid_value() {
    let got = invalid_at(
        "post.created",
        2,
        2,
        json!({ "channels": ["linkedin", "LinkedIn"], "body": "Hello" }),
    );
    assert_eq!(got, ("channels", ValueError::BadChannel));
}

#[test]
fn an_empty_channel_is_an_invalid_value() {
    let got = invalid_at(
        "post.created",
        2,
        2,
        json!({ "channels": [""], "body": "Hello" }),
    );
    assert_eq!(got, ("channels", ValueError::BadChannel));
}

#[test]
fn a_bad_channel_of_the_first_version_is_refused_once_upcast() {
    // The upcaster cannot fail, so the value is checked where v2 meets the domain.
    let got = invalid_at(
        "post.created",
        1,
        2,
        json!({ "channel": "LinkedIn", "body": "Hello" }),
    );
    assert_eq!(got, ("channels", ValueError::BadChannel));
}

#[test]
fn a_bad_target_channel_on_a_delivery_event_is_an_invalid_value() {
    let got = invalid_at(
        "post.delivery_attempt_started",
        2,
        2,
        json!({ "channel": "Mastodon", "attempt": 1, "network": "mastodon" }),
    );
    assert_eq!(got, ("channel", ValueError::BadChannel));
}

#[test]
fn a_month_thirteen_is_an_invalid_value() {
    let got = invalid(
        "budget.limits_set",
        json!({
            "soft_limit_micros": 1,
            "hard_limit_micros": 2,
            "alert_thresholds_pct": [],
            "inherited_from": "2026-13"
        }),
    );
    assert_eq!(got, ("inherited_from", ValueError::BadPeriod));
}

#[test]
fn a_period_with_a_two_digit_year_is_an_invalid_value() {
    let got = invalid(
        "budget.limits_set",
        json!({
            "soft_limit_micros": 1,
            "hard_limit_micros": 2,
            "alert_thresholds_pct": [],
            "inherited_from": "26-01"
        }),
    );
    assert_eq!(got, ("inherited_from", ValueError::BadPeriod));
}

#[test]
fn an_unknown_event_type_is_reported_as_such() {
    for event_type in ["budget.deleted", "Budget.Reserved", ""] {
        let err = decode(event_type, 1, &json!({}));
        assert!(
            matches!(err, Err(DecodeError::UnknownType { event_type: ref t }) if t == event_type),
            "{err:?}"
        );
    }
}

#[test]
fn a_version_newer_than_the_latest_or_zero_is_an_unknown_version() {
    for version in [0, 2, u32::MAX] {
        let err = decode("budget.released", version, &json!({}));
        assert!(
            matches!(
                err,
                Err(DecodeError::UnknownVersion { schema_version, latest: 1, .. })
                    if schema_version == version
            ),
            "{err:?}"
        );
    }
}

#[test]
fn error_messages_name_the_event_and_the_field() {
    let err = decode(
        "budget.released",
        1,
        &json!({ "reservation_id": RESERVATION, "amount_micros": -3 }),
    )
    .expect_err("a negative amount is refused");
    assert_eq!(
        err.to_string(),
        "budget.released v1 has an invalid `amount_micros`"
    );
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("amount must not be negative"));
}
