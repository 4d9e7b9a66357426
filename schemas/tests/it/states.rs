//! The stored form of folded states (snapshots): golden files of every format, refusal
//! of data no valid stream folds to, and the property a snapshot exists for — folding
//! the rest of a stream onto the decoded snapshot of any prefix gives exactly the state
//! of folding the whole stream.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use domain::budget::{self, Command, Ctx};
use domain::{Channel, Micros, Period, ReservationId, post};
use proptest::prelude::*;
use schemas::states::{
    BUDGET_STATE, POST_STATE, STATE_FORMATS, StateDecodeError, StateFormat, StoredState,
    decode_budget_state, decode_post_state, encode_budget_state, encode_post_state,
    list_budget_settled, state_detail_schema,
};
use serde_json::Value;
use uuid::Uuid;

use crate::{crate_path, file_names};

fn golden_name(format: StateFormat) -> String {
    format!("{}.v{}.json", format.name, format.version)
}

fn golden_detail_name(format: StateFormat) -> String {
    format!("{}.v{}.detail.json", format.name, format.version)
}

fn read_golden_file(name: &str) -> String {
    std::fs::read_to_string(crate_path(&format!("golden/states/{name}")))
        .unwrap_or_else(|e| panic!("write golden/states/{name} by hand: {e}"))
}

fn read_golden(format: StateFormat) -> String {
    read_golden_file(&golden_name(format))
}

/// The golden detail of a format that has one.
fn read_golden_detail(format: StateFormat) -> Option<String> {
    state_detail_schema(format).map(|_| read_golden_file(&golden_detail_name(format)))
}

/// Decodes with the reader of `format` (completing the state with its detail) and
/// encodes the result again.
fn round_trip(
    format: StateFormat,
    data: &str,
    detail: Option<&str>,
) -> Result<StoredState, StateDecodeError> {
    match format {
        BUDGET_STATE => {
            let mut state = decode_budget_state(data)?;
            list_budget_settled(&mut state, detail.expect("budget.state has a detail"))?;
            Ok(encode_budget_state(&state).expect("a listed state encodes"))
        }
        POST_STATE => decode_post_state(data).map(|s| StoredState {
            data: encode_post_state(&s),
            detail: None,
        }),
        other => panic!("no reader for {other:?}"),
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON text")
}

#[test]
fn every_state_format_has_a_golden_example_that_decodes_and_re_encodes_unchanged() {
    for &format in STATE_FORMATS {
        let text = read_golden(format);
        let detail = read_golden_detail(format);
        let encoded = round_trip(format, &text, detail.as_deref()).unwrap_or_else(|e| {
            panic!(
                "golden/states/{} no longer decodes: {e:?}",
                golden_name(format)
            )
        });
        assert_eq!(
            json(&encoded.data),
            json(&text),
            "{} re-encodes differently",
            golden_name(format)
        );
        assert_eq!(
            encoded.detail.as_deref().map(json),
            detail.as_deref().map(json),
            "{}'s detail re-encodes differently",
            golden_name(format)
        );
    }
}

#[test]
fn every_golden_state_belongs_to_a_known_format() {
    let mut known: Vec<String> = STATE_FORMATS.iter().map(|f| golden_name(*f)).collect();
    known.extend(
        STATE_FORMATS
            .iter()
            .filter(|f| state_detail_schema(**f).is_some())
            .map(|f| golden_detail_name(*f)),
    );
    for name in file_names("golden/states") {
        assert!(
            known.contains(&name),
            "golden/states/{name} matches no state format"
        );
    }
}

/// The `settled` string of a budget state's detail holding these records (id, outcome
/// byte).
fn settled(records: &[(&str, u8)]) -> Value {
    use base64::Engine as _;
    let mut bytes = Vec::new();
    for (id, outcome) in records {
        bytes.extend_from_slice(Uuid::parse_str(id).expect("uuid").as_bytes());
        bytes.push(*outcome);
    }
    Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The data of a budget state that has settled these reservations (committed), and
/// holds `open` open.
fn head_settling(ids: &[&str], open: &[&str]) -> String {
    let id = |text: &&str| ReservationId::from_uuid(Uuid::parse_str(text).expect("uuid"));
    let state = budget::State::from_parts(budget::Parts {
        settled: ids
            .iter()
            .map(|text| (id(text), budget::ReservationOutcome::Committed))
            .collect(),
        ..budget::Parts::default()
    })
    .expect("consistent parts");
    let mut data = json(&encode_budget_state(&state).expect("listed").data);
    for text in open {
        data["open"]
            .as_array_mut()
            .expect("a list")
            .push(serde_json::json!({
                "reservation_id": text,
                "amount_micros": 10,
                "purpose": "test",
                "expires_at": "2026-11-03T09:25:00Z",
            }));
    }
    data.to_string()
}

/// A state from `head`, listed with a detail whose `settled` is `value`.
fn listed_with(head: &str, value: Value) -> Result<budget::State, StateDecodeError> {
    let mut state = decode_budget_state(head)?;
    let detail = serde_json::json!({ "settled": value }).to_string();
    list_budget_settled(&mut state, &detail).map(|()| state)
}

#[test]
fn a_budget_state_with_a_reservation_both_open_and_settled_is_refused() {
    let a = "0193a4a0-1111-7c3a-8d20-1a2b3c4d5e6f";
    // The filter alone cannot tell; the list, once read, can.
    let head = head_settling(&[a], &[a]);
    let result = listed_with(&head, settled(&[(a, 1)]));
    assert!(
        matches!(result, Err(StateDecodeError::Inconsistent { .. })),
        "{result:?}"
    );
}

#[test]
fn a_budget_state_whose_settled_reservations_are_out_of_order_or_garbled_is_refused() {
    let a = "0193a4a0-1111-7c3a-8d20-1a2b3c4d5e6f";
    let b = "0193a4a1-2222-7c3a-8d20-1a2b3c4d5e6f";
    let c = "0193a4a2-3333-7c3a-8d20-1a2b3c4d5e6f";
    let head = head_settling(&[a, b], &[]);
    let decoded = listed_with(&head, settled(&[(a, 1), (b, 2)])).expect("in order");
    assert_eq!(decoded.settled.iter().expect("listed").count(), 2);
    for (records, what) in [
        (settled(&[(b, 1), (a, 2)]), "out of order"),
        (settled(&[(a, 1), (a, 2)]), "repeated"),
        (settled(&[(a, 1)]), "shorter than its filter"),
        (settled(&[(a, 1), (c, 2)]), "not the filter's ids"),
    ] {
        let result = listed_with(&head, records);
        assert!(
            matches!(result, Err(StateDecodeError::Inconsistent { .. })),
            "{what}: {result:?}"
        );
    }
    let truncated = {
        use base64::Engine as _;
        let id = Uuid::parse_str(a).expect("uuid");
        base64::engine::general_purpose::STANDARD.encode(id.as_bytes())
    };
    for (records, what) in [
        (settled(&[(a, 4)]), "an unknown outcome"),
        (Value::from("not base64!"), "not base64"),
        (Value::from(truncated), "not whole records"),
        (Value::from(7), "not a string"),
    ] {
        let result = listed_with(&head, records);
        assert!(
            matches!(result, Err(StateDecodeError::Malformed { .. })),
            "{what}: {result:?}"
        );
    }
    // A filter that is not one.
    for (filter, what) in [
        (
            serde_json::json!({"count": 0, "hashes": 7, "bits": "AAAA"}),
            "too small",
        ),
        (
            serde_json::json!({"count": 0, "hashes": 0, "bits": "AAAAAAAAAAA="}),
            "no probes",
        ),
        (
            serde_json::json!({"count": 0, "hashes": 7, "bits": "not base64!"}),
            "not base64",
        ),
    ] {
        let mut data = json(&head);
        data["settled_filter"] = filter;
        let result = decode_budget_state(&data.to_string());
        assert!(
            matches!(result, Err(StateDecodeError::Malformed { .. })),
            "{what}: {result:?}"
        );
    }
    // A v2 state (the settled list in the data) is not a v3 one.
    let mut v2 = json(&read_golden(BUDGET_STATE));
    let object = v2.as_object_mut().expect("an object");
    object.remove("settled_filter");
    object.insert("settled".into(), settled(&[(a, 1)]));
    assert!(matches!(
        decode_budget_state(&v2.to_string()),
        Err(StateDecodeError::Malformed { .. })
    ));
}

#[test]
fn a_budget_state_with_a_negative_amount_or_an_unknown_field_is_refused() {
    let golden: Value = serde_json::from_str(&read_golden(BUDGET_STATE)).expect("JSON");
    let mut negative = golden.clone();
    negative["committed_micros"] = Value::from(-1);
    assert!(matches!(
        decode_budget_state(&negative.to_string()),
        Err(StateDecodeError::InvalidValue {
            field: "committed_micros",
            ..
        })
    ));
    let mut extra = golden;
    extra["reserved_micros"] = Value::from(25_000);
    assert!(matches!(
        decode_budget_state(&extra.to_string()),
        Err(StateDecodeError::Malformed { .. })
    ));
    assert!(matches!(
        decode_budget_state("[null, 0, 0]"),
        Err(StateDecodeError::Malformed { .. })
    ));
    assert!(matches!(
        decode_post_state(
            r#"{"status": "draft", "targets": [{"channel": "Not A Slug", "attempts": 0}]}"#
        ),
        Err(StateDecodeError::InvalidValue {
            field: "targets.channel",
            ..
        })
    ));
    // A v1 post state (one delivery, before several targets) is not a v2 one.
    assert!(matches!(
        decode_post_state(r#"{"status": "draft", "attempts": 0, "in_flight": false}"#),
        Err(StateDecodeError::Malformed { .. })
    ));
}

/// A budget command in small terms: ids from a pool of six, so settled ids are reused.
#[derive(Debug, Clone)]
enum Step {
    Reserve { id: u8, amount: i64, ttl_secs: i64 },
    Commit { id: u8, actual: i64 },
    Release { id: u8 },
    SetLimits { thresholds: Vec<u8> },
    ExpireDue,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..6u8, 1..=300_000i64, 1..=7_200i64)
            .prop_map(|(id, amount, ttl_secs)| Step::Reserve { id, amount, ttl_secs }),
        3 => (0..6u8, 0..=400_000i64).prop_map(|(id, actual)| Step::Commit { id, actual }),
        2 => (0..6u8).prop_map(|id| Step::Release { id }),
        1 => prop::collection::vec(1..=100u8, 0..=3).prop_map(|thresholds| Step::SetLimits { thresholds }),
        1 => Just(Step::ExpireDue),
    ]
}

fn m(micros: i64) -> Micros {
    Micros::new(micros).expect("generated amounts are not negative")
}

fn command(step: &Step) -> Command {
    let id = |n: u8| ReservationId::from_uuid(Uuid::from_u128(u128::from(n) + 1));
    match step {
        Step::Reserve {
            id: n,
            amount,
            ttl_secs,
        } => Command::Reserve {
            reservation_id: id(*n),
            amount: m(*amount),
            purpose: "generate".into(),
            ttl: TimeDelta::seconds(*ttl_secs),
        },
        Step::Commit { id: n, actual } => Command::Commit {
            reservation_id: id(*n),
            actual: m(*actual),
        },
        Step::Release { id: n } => Command::Release {
            reservation_id: id(*n),
        },
        Step::SetLimits { thresholds } => Command::SetLimits {
            soft: m(600_000),
            hard: m(1_000_000),
            alert_thresholds_pct: thresholds.clone(),
        },
        Step::ExpireDue => Command::ExpireDue,
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .expect("a fixed valid date")
}

/// A stream `decide` accepts: limits first, then whatever the steps lead to.
fn valid_budget_stream(steps: &[(i64, Step)]) -> Vec<budget::Event> {
    let mut log = vec![budget::Event::LimitsSet {
        soft: m(600_000),
        hard: m(1_000_000),
        alert_thresholds_pct: vec![50, 90],
        inherited_from: None,
    }];
    let mut state = budget::evolve(budget::State::default(), &log[0]);
    let mut now = start();
    for (advance, step) in steps {
        now += TimeDelta::seconds(*advance);
        let ctx = Ctx {
            now,
            period: Period::containing(now),
            inherited_limits: None,
        };
        if let Ok(events) = budget::decide(&state, command(step), &ctx) {
            for event in events {
                state = budget::evolve(state, &event);
                log.push(event);
            }
        }
    }
    log
}

fn post_status() -> impl Strategy<Value = post::Status> {
    use post::Status::*;
    prop::sample::select(vec![
        Absent,
        Draft,
        Scheduled,
        Publishing,
        RetryScheduled,
        Unconfirmed,
        Published,
        PartiallyPublished,
        Failed,
        Cancelled,
        Removed,
    ])
}

fn delivery_state() -> impl Strategy<Value = Option<post::DeliveryState>> {
    use post::DeliveryState::*;
    prop::option::of(prop::sample::select(vec![
        Pending,
        Publishing,
        FailedRetryable,
        Unconfirmed,
        Published,
        FailedPermanent,
        Removed,
    ]))
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    (0_i64..=253_402_300_799, 0_u32..1_000_000_000).prop_map(|(secs, nanos)| {
        DateTime::from_timestamp(secs, nanos).expect("the strategy stays in chrono's range")
    })
}

fn target() -> impl Strategy<Value = post::Target> {
    (
        "[a-z0-9_-]{1,64}",
        delivery_state(),
        any::<u32>(),
        prop::option::of(timestamp()),
        prop::option::of("[0-9]{1,20}"),
    )
        .prop_map(
            |(channel, delivery, attempts, retry_at, network_post_id)| post::Target {
                channel: Channel::new(&channel).expect("the strategy makes valid slugs"),
                delivery,
                attempts,
                retry_at,
                network_post_id,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn folding_the_tail_onto_a_decoded_snapshot_of_any_prefix_equals_folding_the_whole_stream(
        steps in prop::collection::vec((0..=3_600i64, step()), 1..80),
        split in any::<prop::sample::Index>(),
    ) {
        let log = valid_budget_stream(&steps);
        let whole = log.iter().fold(budget::State::default(), budget::evolve);
        let at = split.index(log.len() + 1);
        let head = log[..at].iter().fold(budget::State::default(), budget::evolve);
        let stored = encode_budget_state(&head).expect("a folded state is listed");
        let detail = stored.detail.expect("budget.state has a detail");
        let snapshot = decode_budget_state(&stored.data);
        prop_assert!(snapshot.is_ok(), "the snapshot of a valid prefix decodes: {:?}", snapshot.err());
        let restored = snapshot.unwrap_or_default();
        // Listed at once, it is the prefix's state.
        let mut listed = restored.clone();
        prop_assert!(list_budget_settled(&mut listed, &detail).is_ok());
        prop_assert_eq!(&listed, &head);
        // Listed only after the tail is folded on, as the command side may do it, it is
        // the whole stream's.
        let mut resumed = log[at..].iter().fold(restored, budget::evolve);
        prop_assert!(list_budget_settled(&mut resumed, &detail).is_ok());
        prop_assert_eq!(resumed, whole);
    }

    #[test]
    fn a_ledger_from_a_snapshot_decides_as_the_folded_one_or_asks_for_its_list(
        steps in prop::collection::vec((0..=3_600i64, step()), 1..80),
        next in step(),
        advance in 0..=3_600i64,
    ) {
        let log = valid_budget_stream(&steps);
        let folded = log.iter().fold(budget::State::default(), budget::evolve);
        let stored = encode_budget_state(&folded).expect("a folded state is listed");
        let mut restored = decode_budget_state(&stored.data).unwrap_or_default();
        let now = start() + TimeDelta::seconds(advance + steps.iter().map(|(a, _)| a).sum::<i64>());
        let ctx = Ctx { now, period: Period::containing(now), inherited_limits: None };
        let command = command(&next);
        let expected = budget::decide(&folded, command.clone(), &ctx);
        if budget::needs_settled_list(&restored, &command) {
            let id = command.reservation_id().expect("only a named reservation needs the list");
            prop_assert_eq!(
                budget::decide(&restored, command.clone(), &ctx),
                Err(budget::Rejection::SettledUnlisted(id))
            );
            prop_assert!(list_budget_settled(&mut restored, &stored.detail.unwrap_or_default()).is_ok());
        }
        prop_assert_eq!(budget::decide(&restored, command, &ctx), expected);
    }

    #[test]
    fn a_post_state_survives_its_stored_form(
        status in post_status(),
        publish_at in prop::option::of(timestamp()),
        targets in prop::collection::vec(target(), 0..=10),
    ) {
        let state = post::State { status, publish_at, targets };
        let decoded = decode_post_state(&encode_post_state(&state));
        prop_assert_eq!(decoded.ok(), Some(state));
    }
}
