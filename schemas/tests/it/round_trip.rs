//! Every domain event survives `encode`, a trip through JSON text, and `decode`
//! unchanged: what projections and replays read back is exactly what `decide` produced.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use domain::pricing::{ModelRef, Usage};
use domain::{CampaignId, Channel, Micros, Period, ReservationId, budget, generation, post};
use proptest::prelude::*;
use schemas::{DomainEvent, EVENT_TYPES, decode, encode};
use uuid::Uuid;

fn micros() -> impl Strategy<Value = Micros> {
    prop_oneof![Just(0), 0..=1_000_000_000_i64, 0..=i64::MAX]
        .prop_map(|v| Micros::new(v).expect("the strategy yields no negative amount"))
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn reservation_id() -> impl Strategy<Value = ReservationId> {
    uuid().prop_map(ReservationId::from_uuid)
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // From 1970 to the end of 9999, the range RFC 3339 can write, with nanoseconds.
    (0_i64..=253_402_300_799, 0_u32..1_000_000_000).prop_map(|(secs, nanos)| {
        DateTime::from_timestamp(secs, nanos).expect("the strategy stays in chrono's range")
    })
}

fn period() -> impl Strategy<Value = Period> {
    (1970_i32..=9999, 1_u32..=12)
        .prop_map(|(y, m)| Period::new(y, m).expect("the strategy yields valid months"))
}

fn channel() -> impl Strategy<Value = Channel> {
    "[a-z0-9_-]{1,64}".prop_map(|s| Channel::new(&s).expect("the regex matches valid slugs"))
}

fn budget_event() -> impl Strategy<Value = budget::Event> {
    use budget::Event::*;
    prop_oneof![
        (
            micros(),
            micros(),
            prop::collection::vec(any::<u8>(), 0..12),
            prop::option::of(period())
        )
            .prop_map(
                |(soft, hard, alert_thresholds_pct, inherited_from)| LimitsSet {
                    soft,
                    hard,
                    alert_thresholds_pct,
                    inherited_from,
                }
            ),
        (reservation_id(), micros(), any::<String>(), timestamp()).prop_map(
            |(reservation_id, amount, purpose, expires_at)| Reserved {
                reservation_id,
                amount,
                purpose,
                expires_at,
            }
        ),
        (reservation_id(), micros(), micros()).prop_map(|(reservation_id, reserved, actual)| {
            Committed {
                reservation_id,
                reserved,
                actual,
            }
        }),
        (reservation_id(), micros(), micros(), micros()).prop_map(
            |(reservation_id, reserved, actual, overrun)| Overrun {
                reservation_id,
                reserved,
                actual,
                overrun,
            }
        ),
        (reservation_id(), micros()).prop_map(|(reservation_id, amount)| Released {
            reservation_id,
            amount
        }),
        (reservation_id(), micros(), timestamp()).prop_map(
            |(reservation_id, amount, expired_at)| Expired {
                reservation_id,
                amount,
                expired_at,
            }
        ),
        (any::<u8>(), micros(), micros()).prop_map(|(threshold_pct, committed, hard)| {
            ThresholdCrossed {
                threshold_pct,
                committed,
                hard,
            }
        }),
    ]
}

fn post_event() -> impl Strategy<Value = post::Event> {
    use post::Event::*;
    let target = || prop::option::of(channel());
    prop_oneof![
        (
            prop::collection::vec(channel(), 0..12),
            any::<String>(),
            prop::option::of(uuid().prop_map(CampaignId::from_uuid))
        )
            .prop_map(|(channels, body, campaign_id)| Created {
                channels,
                body,
                campaign_id,
            }),
        any::<String>().prop_map(|body| Edited { body }),
        timestamp().prop_map(|publish_at| Scheduled { publish_at }),
        (
            prop_oneof![
                Just(post::PublishTrigger::Manual),
                Just(post::PublishTrigger::Schedule)
            ],
            target()
        )
            .prop_map(|(trigger, channel)| PublishRequested { trigger, channel }),
        (target(), any::<String>(), prop::option::of(any::<String>())).prop_map(
            |(channel, network_post_id, url)| Published {
                channel,
                network_post_id,
                url,
            }
        ),
        (target(), any::<String>()).prop_map(|(channel, reason)| PublishFailed { channel, reason }),
        Just(Cancelled),
        (target(), any::<u32>(), any::<String>()).prop_map(|(channel, attempt, network)| {
            DeliveryAttemptStarted {
                channel,
                attempt,
                network,
            }
        }),
        (
            target(),
            any::<u32>(),
            any::<String>(),
            any::<String>(),
            prop::option::of(timestamp())
        )
            .prop_map(
                |(channel, attempt, code, reason, retry_at)| DeliveryAttemptFailed {
                    channel,
                    attempt,
                    code,
                    reason,
                    retry_at,
                }
            ),
        (target(), any::<u32>(), any::<String>()).prop_map(|(channel, attempt, reason)| {
            DeliveryUnconfirmed {
                channel,
                attempt,
                reason,
            }
        }),
        (target(), any::<String>()).prop_map(|(channel, network_post_id)| Removed {
            channel,
            network_post_id
        }),
    ]
}

fn model() -> impl Strategy<Value = ModelRef> {
    (any::<String>(), any::<String>()).prop_map(|(p, m)| ModelRef::new(p, m))
}

fn attempt_cost() -> impl Strategy<Value = generation::AttemptCost> {
    (
        any::<(u64, u64, u64)>(),
        micros(),
        any::<u64>(),
        any::<String>(),
    )
        .prop_map(
            |(
                (input_tokens, cached_input_tokens, output_tokens),
                cost,
                latency_ms,
                price_version,
            )| {
                generation::AttemptCost {
                    usage: Usage {
                        input_tokens,
                        cached_input_tokens,
                        output_tokens,
                    },
                    cost,
                    latency_ms,
                    price_version,
                }
            },
        )
}

fn generation_request() -> impl Strategy<Value = generation::Request> {
    (
        (
            any::<String>(),
            channel(),
            prop::option::of(uuid().prop_map(CampaignId::from_uuid)),
        ),
        (
            prop_oneof![
                Just(generation::Priority::Core),
                Just(generation::Priority::NonCore)
            ],
            prop::option::of(any::<String>()),
            model(),
            prop::option::of(model()),
        ),
        (
            any::<u32>(),
            any::<u64>(),
            reservation_id(),
            period(),
            micros(),
            any::<String>(),
        ),
    )
        .prop_map(
            |(
                (brief, channel, campaign_id),
                (priority, requested_model, model, fallback_model),
                (
                    max_output_tokens,
                    estimated_input_tokens,
                    reservation_id,
                    period,
                    reserved,
                    price_version,
                ),
            )| generation::Request {
                brief,
                channel,
                campaign_id,
                priority,
                requested_model,
                model,
                fallback_model,
                max_output_tokens,
                estimated_input_tokens,
                reservation_id,
                period,
                reserved,
                price_version,
            },
        )
}

fn generation_event() -> impl Strategy<Value = generation::Event> {
    use generation::Event::*;
    prop_oneof![
        (model(), model(), micros(), micros()).prop_map(
            |(requested, model, budget_used, soft_limit)| ModeChanged {
                requested,
                model,
                budget_used,
                soft_limit,
            }
        ),
        generation_request().prop_map(Requested),
        (
            any::<u32>(),
            model(),
            prop_oneof![
                Just(generation::AttemptReason::Primary),
                Just(generation::AttemptReason::Fallback),
                Just(generation::AttemptReason::Retry)
            ]
        )
            .prop_map(|(attempt, model, reason)| AttemptStarted {
                attempt,
                model,
                reason
            }),
        (
            any::<u32>(),
            model(),
            any::<(String, String, bool)>(),
            attempt_cost()
        )
            .prop_map(|(attempt, model, (error, message, retryable), outcome)| {
                AttemptFailed {
                    attempt,
                    model,
                    error,
                    message,
                    retryable,
                    outcome,
                }
            }),
        (any::<u32>(), model(), any::<String>(), attempt_cost()).prop_map(
            |(attempt, model, text, outcome)| Generated {
                attempt,
                model,
                text,
                outcome,
            }
        ),
        (any::<String>(), any::<u32>(), micros()).prop_map(|(reason, attempts, cost)| Failed {
            reason,
            attempts,
            cost,
        }),
    ]
}

fn domain_event() -> impl Strategy<Value = DomainEvent> {
    prop_oneof![
        budget_event().prop_map(DomainEvent::Budget),
        post_event().prop_map(DomainEvent::Post),
        generation_event().prop_map(DomainEvent::Generation),
    ]
}

/// Encodes, writes the data as JSON text as the event store does, reads it back, decodes.
fn round_trip(event: &DomainEvent) -> DomainEvent {
    let encoded = encode(event);
    let text = serde_json::to_string(&encoded.data).expect("a JSON value always prints");
    let data: serde_json::Value = serde_json::from_str(&text).expect("printed JSON parses");
    decode(encoded.event_type, encoded.schema_version, &data)
        .unwrap_or_else(|e| panic!("{event:?} encoded as {text} does not decode: {e:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_domain_event_decodes_to_itself_after_encoding(event in domain_event()) {
        prop_assert_eq!(round_trip(&event), event);
    }

    #[test]
    fn encode_always_writes_the_latest_version_of_a_listed_type(event in domain_event()) {
        let encoded = encode(&event);
        prop_assert!(EVENT_TYPES.contains(&(encoded.event_type, encoded.schema_version)));
    }
}

/// One event of every kind, with fixed values.
fn one_of_each() -> Vec<DomainEvent> {
    let id = ReservationId::from_uuid(Uuid::from_u128(7));
    let at = DateTime::from_timestamp(1_793_000_000, 0).expect("a 2026 timestamp");
    let usd = |n: i64| Micros::new(n * 1_000_000).expect("positive");
    vec![
        budget::Event::LimitsSet {
            soft: usd(400),
            hard: usd(500),
            alert_thresholds_pct: vec![50, 80],
            inherited_from: None,
        }
        .into(),
        budget::Event::Reserved {
            reservation_id: id,
            amount: usd(1),
            purpose: "draft".into(),
            expires_at: at,
        }
        .into(),
        budget::Event::Committed {
            reservation_id: id,
            reserved: usd(1),
            actual: usd(1),
        }
        .into(),
        budget::Event::Overrun {
            reservation_id: id,
            reserved: usd(1),
            actual: usd(2),
            overrun: usd(1),
        }
        .into(),
        budget::Event::Released {
            reservation_id: id,
            amount: usd(1),
        }
        .into(),
        budget::Event::Expired {
            reservation_id: id,
            amount: usd(1),
            expired_at: at,
        }
        .into(),
        budget::Event::ThresholdCrossed {
            threshold_pct: 80,
            committed: usd(400),
            hard: usd(500),
        }
        .into(),
        post::Event::Created {
            channels: vec![linkedin(), Channel::new("mastodon").expect("a valid slug")],
            body: "Hello".into(),
            campaign_id: None,
        }
        .into(),
        post::Event::Edited {
            body: "Hello!".into(),
        }
        .into(),
        post::Event::Scheduled { publish_at: at }.into(),
        post::Event::PublishRequested {
            trigger: post::PublishTrigger::Schedule,
            channel: None,
        }
        .into(),
        post::Event::Published {
            channel: Some(linkedin()),
            network_post_id: "urn:li:share:1".into(),
            url: None,
        }
        .into(),
        post::Event::PublishFailed {
            channel: Some(linkedin()),
            reason: "token expired".into(),
        }
        .into(),
        post::Event::Cancelled.into(),
        post::Event::DeliveryAttemptStarted {
            channel: Some(linkedin()),
            attempt: 1,
            network: "mastodon".into(),
        }
        .into(),
        post::Event::DeliveryAttemptFailed {
            channel: Some(linkedin()),
            attempt: 1,
            code: "network_unavailable".into(),
            reason: "503 Service Unavailable".into(),
            retry_at: Some(at),
        }
        .into(),
        post::Event::DeliveryUnconfirmed {
            channel: Some(linkedin()),
            attempt: 2,
            reason: "timeout".into(),
        }
        .into(),
        post::Event::Removed {
            channel: Some(linkedin()),
            network_post_id: "n-1".into(),
        }
        .into(),
        generation::Event::ModeChanged {
            requested: gpt(),
            model: mini(),
            budget_used: usd(420),
            soft_limit: usd(400),
        }
        .into(),
        generation::Event::Requested(generation::Request {
            brief: "Spring sale teaser".into(),
            channel: Channel::new("linkedin").expect("a valid slug"),
            campaign_id: None,
            priority: generation::Priority::NonCore,
            requested_model: Some("gpt-4o".into()),
            model: mini(),
            fallback_model: None,
            max_output_tokens: 400,
            estimated_input_tokens: 60,
            reservation_id: id,
            period: Period::new(2026, 11).expect("a valid month"),
            reserved: usd(1),
            price_version: "2026-11".into(),
        })
        .into(),
        generation::Event::AttemptStarted {
            attempt: 1,
            model: mini(),
            reason: generation::AttemptReason::Primary,
        }
        .into(),
        generation::Event::AttemptFailed {
            attempt: 1,
            model: mini(),
            error: "rate_limited".into(),
            message: "slow down".into(),
            retryable: true,
            outcome: cost(0),
        }
        .into(),
        generation::Event::Generated {
            attempt: 2,
            model: mini(),
            text: "Spring is here.".into(),
            outcome: cost(1_234),
        }
        .into(),
        generation::Event::Failed {
            reason: "provider_timeout".into(),
            attempts: 3,
            cost: usd(0),
        }
        .into(),
    ]
}

fn linkedin() -> Channel {
    Channel::new("linkedin").expect("a valid slug")
}

fn gpt() -> ModelRef {
    ModelRef::new("openai", "gpt-4o")
}

fn mini() -> ModelRef {
    ModelRef::new("openai", "gpt-4o-mini")
}

fn cost(micros: i64) -> generation::AttemptCost {
    generation::AttemptCost {
        usage: Usage {
            input_tokens: 50,
            cached_input_tokens: 10,
            output_tokens: 20,
        },
        cost: Micros::new(micros).expect("positive"),
        latency_ms: 840,
        price_version: "2026-11".into(),
    }
}

#[test]
fn every_listed_event_type_is_written_by_some_domain_event() {
    let events = one_of_each();
    let written: BTreeSet<(&str, u32)> = events
        .iter()
        .map(|e| {
            let encoded = encode(e);
            (encoded.event_type, encoded.schema_version)
        })
        .collect();
    let listed: BTreeSet<(&str, u32)> = EVENT_TYPES.iter().copied().collect();
    assert_eq!(written, listed);
    for event in &events {
        assert_eq!(&round_trip(event), event);
    }
}

#[test]
fn optional_fields_are_left_out_when_absent_and_null_is_read_as_absent() {
    let event: DomainEvent = post::Event::Published {
        channel: None,
        network_post_id: "urn:li:share:1".into(),
        url: None,
    }
    .into();
    let encoded = encode(&event);
    assert_eq!(
        encoded.data,
        serde_json::json!({ "network_post_id": "urn:li:share:1" })
    );
    let with_null = serde_json::json!({ "network_post_id": "urn:li:share:1", "url": null });
    assert_eq!(
        decode("post.published", 1, &with_null).ok(),
        Some(event.clone())
    );
    let with_nulls = serde_json::json!({
        "channel": null, "network_post_id": "urn:li:share:1", "url": null
    });
    assert_eq!(decode("post.published", 2, &with_nulls).ok(), Some(event));
}
