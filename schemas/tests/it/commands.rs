//! Command bodies accept what their schema documents and nothing else: the examples
//! published in the schemas parse, unknown fields and missing required fields are
//! refused, and optional fields may be left out.

use chrono::{TimeZone, Utc};
use schemas::commands::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

fn via<T: DeserializeOwned + Serialize>(body: &Value) -> Result<Value, serde_json::Error> {
    let parsed = T::deserialize(body)?;
    Ok(serde_json::to_value(parsed).expect("a command body always serializes"))
}

/// Parses `body` as the named command and writes it back as JSON.
fn parse(name: &str, body: &Value) -> Result<Value, serde_json::Error> {
    match name {
        "set-budget-limits" => via::<SetBudgetLimits>(body),
        "reserve-budget" => via::<ReserveBudget>(body),
        "commit-budget" => via::<CommitBudget>(body),
        "release-budget" => via::<ReleaseBudget>(body),
        "create-post" => via::<CreatePost>(body),
        "edit-post" => via::<EditPost>(body),
        "schedule-post" => via::<SchedulePost>(body),
        "publish-post" => via::<PublishPost>(body),
        "cancel-post" => via::<CancelPost>(body),
        "retry-delivery" => via::<RetryDelivery>(body),
        "resolve-unconfirmed" => via::<ResolveUnconfirmed>(body),
        "generate-content" => via::<GenerateContent>(body),
        other => panic!("the test has no parser for {other}"),
    }
}

fn schema(name: &str) -> Value {
    command_schema(name).unwrap_or_else(|| panic!("{name} has no schema"))
}

/// The example published in a command's schema.
fn example(name: &str) -> Value {
    let schema = schema(name);
    let examples = schema["examples"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        examples.len(),
        1,
        "{name} should publish exactly one example"
    );
    examples[0].clone()
}

fn required_fields(name: &str) -> Vec<String> {
    schema(name)["required"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no required fields"))
        .iter()
        .map(|f| f.as_str().expect("field names are strings").to_owned())
        .collect()
}

#[test]
fn the_published_example_of_every_command_parses_and_writes_back_unchanged() {
    for name in COMMANDS {
        let example = example(name);
        let parsed = parse(name, &example).unwrap_or_else(|e| panic!("{name} example: {e}"));
        assert_eq!(parsed, example, "{name}");
    }
}

#[test]
fn every_command_refuses_an_unknown_field() {
    for name in COMMANDS {
        let mut body = example(name);
        body["prioritty"] = json!("high");
        let err = parse(name, &body).expect_err(name);
        assert!(
            err.to_string().contains("unknown field `prioritty`"),
            "{name}: {err}"
        );
    }
}

#[test]
fn every_command_refuses_a_body_missing_any_required_field() {
    for name in COMMANDS {
        for field in required_fields(name) {
            let mut body = example(name);
            body.as_object_mut()
                .expect("examples are objects")
                .remove(&field);
            let err = parse(name, &body).expect_err(&format!("{name} without {field}"));
            assert!(
                err.to_string()
                    .contains(&format!("missing field `{field}`")),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn the_required_fields_are_exactly_the_ones_the_api_promises() {
    let expected: &[(&str, &[&str])] = &[
        (
            "set-budget-limits",
            &["soft_limit_micros", "hard_limit_micros"],
        ),
        (
            "reserve-budget",
            &["amount_micros", "purpose", "ttl_seconds"],
        ),
        ("commit-budget", &["reservation_id", "actual_micros"]),
        ("release-budget", &["reservation_id"]),
        // And exactly one of `channel` and `channels`, which the schema says with `oneOf`.
        ("create-post", &["body"]),
        ("edit-post", &["post_id", "body"]),
        ("schedule-post", &["post_id", "publish_at"]),
        ("publish-post", &["post_id"]),
        ("cancel-post", &["post_id"]),
        ("retry-delivery", &["post_id"]),
        ("resolve-unconfirmed", &["post_id", "outcome"]),
        (
            "generate-content",
            &["brief", "channel", "max_output_tokens", "priority"],
        ),
    ];
    assert_eq!(expected.len(), COMMANDS.len());
    for (name, fields) in expected {
        let mut required = required_fields(name);
        required.sort();
        let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        fields.sort();
        assert_eq!(required, fields, "{name}");
    }
}

#[test]
fn set_budget_limits_defaults_to_no_thresholds_and_the_current_month() {
    let body: SetBudgetLimits =
        serde_json::from_value(json!({ "soft_limit_micros": 1, "hard_limit_micros": 2 }))
            .expect("a minimal body parses");
    assert_eq!(
        body,
        SetBudgetLimits {
            soft_limit_micros: 1,
            hard_limit_micros: 2,
            alert_thresholds_pct: vec![],
            period: None,
        }
    );
}

#[test]
fn reserve_budget_reads_a_null_reservation_id_as_absent() {
    let body: ReserveBudget = serde_json::from_value(json!({
        "amount_micros": 25_000,
        "purpose": "draft",
        "ttl_seconds": 600,
        "reservation_id": null
    }))
    .expect("null is allowed for an optional field");
    assert_eq!(body.reservation_id, None);
}

#[test]
fn create_post_takes_a_client_chosen_post_id() {
    let id = Uuid::from_u128(42);
    let body: CreatePost = serde_json::from_value(json!({
        "channel": "newsletter-eu",
        "body": "Hello",
        "post_id": id.to_string()
    }))
    .expect("a body with a post id parses");
    assert_eq!(body.post_id, Some(id));
    assert_eq!(body.campaign_id, None);
}

#[test]
fn schedule_post_converts_an_offset_timestamp_to_utc() {
    let body: SchedulePost = serde_json::from_value(json!({
        "post_id": Uuid::from_u128(1).to_string(),
        "publish_at": "2026-11-03T10:00:00+01:00"
    }))
    .expect("an RFC 3339 timestamp with an offset parses");
    let nine_utc = Utc.with_ymd_and_hms(2026, 11, 3, 9, 0, 0).single();
    assert_eq!(Some(body.publish_at), nine_utc);
}

#[test]
fn amounts_must_be_whole_numbers() {
    for amount in [json!(1.5), json!("25000"), json!(null)] {
        let body = json!({ "amount_micros": amount, "purpose": "draft", "ttl_seconds": 600 });
        assert!(parse("reserve-budget", &body).is_err(), "{body}");
    }
}

#[test]
fn expected_version_must_be_a_non_negative_integer() {
    let body = json!({ "post_id": Uuid::from_u128(1).to_string(), "expected_version": -1 });
    assert!(parse("publish-post", &body).is_err());
}

#[test]
fn schemas_document_units_and_limits_for_api_users() {
    let reserve = schema("reserve-budget");
    assert_eq!(
        reserve["properties"]["ttl_seconds"]["maximum"],
        json!(604_800)
    );
    assert_eq!(reserve["properties"]["purpose"]["maxLength"], json!(200));
    assert_eq!(reserve["additionalProperties"], json!(false));
    let limits = schema("set-budget-limits");
    assert_eq!(
        limits["properties"]["alert_thresholds_pct"]["maxItems"],
        json!(10)
    );
    let description = limits["properties"]["hard_limit_micros"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(description.contains("micro-USD"), "{description}");
}
