//! The generation aggregate, as given / when / then: request, attempts, outcome.

use domain::generation::{
    AttemptCost, AttemptReason, Command, Economy, Event, Priority, Rejection, Request, State,
    Status, decide, evolve,
};
use domain::pricing::{ModelRef, Usage};
use domain::{Channel, Micros, Period, ReservationId};
use uuid::Uuid;

fn given(events: &[Event]) -> State {
    events.iter().fold(State::default(), evolve)
}

fn model() -> ModelRef {
    ModelRef::new("openai", "gpt-4o-mini")
}

fn request() -> Request {
    Request {
        brief: "Spring sale".into(),
        channel: Channel::new("linkedin").expect("slug"),
        campaign_id: None,
        priority: Priority::Core,
        requested_model: None,
        model: model(),
        fallback_model: None,
        max_output_tokens: 200,
        estimated_input_tokens: 40,
        reservation_id: ReservationId::from_uuid(Uuid::from_u128(1)),
        period: Period::new(2026, 11).expect("month"),
        reserved: Micros::new(500).expect("amount"),
        price_version: "v1".into(),
    }
}

fn cost(micros: i64) -> AttemptCost {
    AttemptCost {
        usage: Usage {
            input_tokens: 40,
            cached_input_tokens: 0,
            output_tokens: 100,
        },
        cost: Micros::new(micros).expect("amount"),
        latency_ms: 10,
        price_version: "v1".into(),
    }
}

fn start(attempt: u32) -> Command {
    Command::StartAttempt {
        attempt,
        model: model(),
        reason: if attempt == 1 {
            AttemptReason::Primary
        } else {
            AttemptReason::Retry
        },
    }
}

fn started(attempt: u32) -> Event {
    match decide(&given(&[Event::Requested(request())]), start(1)) {
        Ok(mut events) if attempt == 1 => events.remove(0),
        _ => Event::AttemptStarted {
            attempt,
            model: model(),
            reason: AttemptReason::Retry,
        },
    }
}

fn failed(attempt: u32, micros: i64) -> Event {
    Event::AttemptFailed {
        attempt,
        model: model(),
        error: "rate_limited".into(),
        message: "slow down".into(),
        retryable: true,
        outcome: cost(micros),
    }
}

#[test]
fn a_request_is_recorded_and_pending() {
    let events = decide(
        &State::default(),
        Command::Request {
            request: request(),
            economy: None,
        },
    )
    .expect("accepted");
    assert_eq!(events, vec![Event::Requested(request())]);
    assert_eq!(given(&events).status, Status::Pending);
}

#[test]
fn a_request_in_economy_mode_records_why_it_runs_on_the_cheaper_model() {
    let economy = Economy {
        requested: ModelRef::new("openai", "gpt-4o"),
        budget_used: Micros::new(90).expect("amount"),
        soft_limit: Micros::new(80).expect("amount"),
    };
    let events = decide(
        &State::default(),
        Command::Request {
            request: request(),
            economy: Some(economy.clone()),
        },
    )
    .expect("accepted");
    assert_eq!(events[0], Event::Requested(request()));
    assert_eq!(
        events[1],
        Event::ModeChanged {
            requested: economy.requested,
            model: model(),
            budget_used: economy.budget_used,
            soft_limit: economy.soft_limit,
        }
    );
}

#[test]
fn a_second_request_with_the_same_id_is_refused() {
    let state = given(&[Event::Requested(request())]);
    let again = Command::Request {
        request: request(),
        economy: None,
    };
    assert_eq!(decide(&state, again), Err(Rejection::AlreadyExists));
}

#[test]
fn a_blank_or_huge_brief_and_a_zero_output_ceiling_are_refused() {
    for brief in ["", "   ", &"x".repeat(4_001)] {
        let command = Command::Request {
            request: Request {
                brief: brief.to_owned(),
                ..request()
            },
            economy: None,
        };
        assert_eq!(decide(&State::default(), command), Err(Rejection::BadBrief));
    }
    let command = Command::Request {
        request: Request {
            max_output_tokens: 0,
            ..request()
        },
        economy: None,
    };
    assert_eq!(
        decide(&State::default(), command),
        Err(Rejection::BadMaxOutputTokens)
    );
}

#[test]
fn attempts_start_in_order_one_at_a_time() {
    let state = given(&[Event::Requested(request())]);
    assert_eq!(
        decide(&state, start(2)),
        Err(Rejection::AttemptOutOfOrder {
            attempt: 2,
            expected: 1
        })
    );
    let state = given(&[Event::Requested(request()), started(1)]);
    assert_eq!(state.in_flight, Some((1, model())));
    assert_eq!(decide(&state, start(2)), Err(Rejection::AttemptInFlight(1)));
}

#[test]
fn an_attempt_that_is_not_in_flight_cannot_be_recorded() {
    let state = given(&[Event::Requested(request()), started(1), failed(1, 0)]);
    let record = Command::RecordGenerated {
        attempt: 1,
        text: "hi".into(),
        outcome: cost(5),
    };
    assert_eq!(
        decide(&state, record),
        Err(Rejection::AttemptNotInFlight(1))
    );
}

#[test]
fn a_success_after_a_failed_attempt_adds_both_costs() {
    let state = given(&[
        Event::Requested(request()),
        started(1),
        failed(1, 7),
        started(2),
    ]);
    let events = decide(
        &state,
        Command::RecordGenerated {
            attempt: 2,
            text: "Spring!".into(),
            outcome: cost(30),
        },
    )
    .expect("recorded");
    let state = events.iter().fold(state, evolve);
    assert_eq!(state.status, Status::Generated);
    assert_eq!(state.cost, Micros::new(37).expect("amount"));
    assert_eq!(state.attempts, 2);
    assert_eq!(state.in_flight, None);
}

#[test]
fn giving_up_records_the_attempts_and_their_cost() {
    let state = given(&[Event::Requested(request()), started(1), failed(1, 3)]);
    let events = decide(
        &state,
        Command::Fail {
            reason: "provider_timeout".into(),
        },
    )
    .expect("recorded");
    assert_eq!(
        events,
        vec![Event::Failed {
            reason: "provider_timeout".into(),
            attempts: 1,
            cost: Micros::new(3).expect("amount"),
        }]
    );
}

#[test]
fn a_generation_cannot_give_up_while_an_attempt_is_in_flight() {
    let state = given(&[Event::Requested(request()), started(1)]);
    let fail = Command::Fail { reason: "x".into() };
    assert_eq!(decide(&state, fail), Err(Rejection::AttemptInFlight(1)));
}

#[test]
fn a_finished_generation_takes_no_further_command() {
    let state = given(&[
        Event::Requested(request()),
        started(1),
        Event::Generated {
            attempt: 1,
            model: model(),
            text: "t".into(),
            outcome: cost(1),
        },
    ]);
    assert_eq!(
        decide(&state, start(2)),
        Err(Rejection::Finished(Status::Generated))
    );
    let fail = Command::Fail { reason: "x".into() };
    assert_eq!(
        decide(&state, fail),
        Err(Rejection::Finished(Status::Generated))
    );
}

#[test]
fn commands_on_a_missing_generation_answer_not_found() {
    assert_eq!(
        decide(&State::default(), start(1)),
        Err(Rejection::NotFound)
    );
}
