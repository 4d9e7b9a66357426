//! The budget ledger's rules, one test each: given these events, when this command,
//! then these events or this rejection.
//!
//! Every test runs at the same instant, `NOW`, in November 2026; a test that needs
//! time to have passed says so through the expiry times in its history instead of
//! moving a clock. The only outside fact a test may add is the previous month's
//! limits, through `inheriting`.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use domain::budget::{
    BudgetStatus, Command, Ctx, Event, Limits, MAX_PURPOSE_CHARS, MAX_THRESHOLDS, MAX_TTL,
    Rejection, ReservationOutcome, State, decide, evolve, status_of,
};
use domain::{Micros, Period, ReservationId};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The helper and the vocabulary the tests are written in.
// ---------------------------------------------------------------------------

/// A command, and the limits of an earlier month that the command side looked up for
/// it (none unless a test says `inheriting`).
struct When {
    command: Command,
    inherited_limits: Option<(Period, Limits)>,
}

impl From<Command> for When {
    fn from(command: Command) -> Self {
        When {
            command,
            inherited_limits: None,
        }
    }
}

fn inheriting(command: Command, from: Period, limits: Limits) -> When {
    When {
        command,
        inherited_limits: Some((from, limits)),
    }
}

/// Folds `given` from the empty ledger, decides `when` at `NOW` in November 2026, and
/// compares the outcome with `then`.
#[track_caller]
fn check(given: &[Event], when: impl Into<When>, then: Result<Vec<Event>, Rejection>) {
    let when = when.into();
    let ctx = Ctx {
        now: now(),
        period: november(),
        inherited_limits: when.inherited_limits,
    };
    let got = decide(&fold(given), when.command, &ctx);
    assert_eq!(got, then);
}

fn fold(events: &[Event]) -> State {
    events.iter().fold(State::default(), evolve)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 15, 12, 0, 0)
        .single()
        .expect("a fixed valid date")
}

fn november() -> Period {
    Period::new(2026, 11).expect("a fixed valid period")
}

fn october() -> Period {
    Period::new(2026, 10).expect("a fixed valid period")
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn hour() -> TimeDelta {
    TimeDelta::hours(1)
}

fn m(micros: i64) -> Micros {
    Micros::new(micros).expect("test amounts are not negative")
}

fn id(n: u128) -> ReservationId {
    ReservationId::from_uuid(Uuid::from_u128(n))
}

const A: u128 = 1;
const B: u128 = 2;
const C: u128 = 3;

fn set_limits(soft: i64, hard: i64, thresholds: &[u8]) -> Command {
    Command::SetLimits {
        soft: m(soft),
        hard: m(hard),
        alert_thresholds_pct: thresholds.to_vec(),
    }
}

fn limits_set(soft: i64, hard: i64, thresholds: &[u8]) -> Event {
    Event::LimitsSet {
        soft: m(soft),
        hard: m(hard),
        alert_thresholds_pct: thresholds.to_vec(),
        inherited_from: None,
    }
}

/// The limits most tests start from: soft 80, hard 100, no alerts.
fn limits() -> Event {
    limits_set(80, 100, &[])
}

fn reserve(n: u128, amount: i64) -> Command {
    Command::Reserve {
        reservation_id: id(n),
        amount: m(amount),
        purpose: "generate a post".into(),
        ttl: hour(),
    }
}

fn reserve_for(ttl: TimeDelta) -> Command {
    Command::Reserve {
        reservation_id: id(A),
        amount: m(10),
        purpose: "generate a post".into(),
        ttl,
    }
}

fn reserve_with_purpose(purpose: &str) -> Command {
    Command::Reserve {
        reservation_id: id(A),
        amount: m(10),
        purpose: purpose.into(),
        ttl: hour(),
    }
}

/// A reservation made by `reserve(n, amount)` at `NOW`.
fn reserved(n: u128, amount: i64) -> Event {
    reserved_until(n, amount, now() + hour())
}

fn reserved_until(n: u128, amount: i64, expires_at: DateTime<Utc>) -> Event {
    Event::Reserved {
        reservation_id: id(n),
        amount: m(amount),
        purpose: "generate a post".into(),
        expires_at,
    }
}

fn commit(n: u128, actual: i64) -> Command {
    Command::Commit {
        reservation_id: id(n),
        actual: m(actual),
    }
}

fn committed(n: u128, reserved: i64, actual: i64) -> Event {
    Event::Committed {
        reservation_id: id(n),
        reserved: m(reserved),
        actual: m(actual),
    }
}

fn overrun(n: u128, reserved: i64, actual: i64) -> Event {
    Event::Overrun {
        reservation_id: id(n),
        reserved: m(reserved),
        actual: m(actual),
        overrun: m(actual - reserved),
    }
}

fn release(n: u128) -> Command {
    Command::Release {
        reservation_id: id(n),
    }
}

fn released(n: u128, amount: i64) -> Event {
    Event::Released {
        reservation_id: id(n),
        amount: m(amount),
    }
}

/// The sweep (or a later command) expired the reservation at `NOW`.
fn expired(n: u128, amount: i64) -> Event {
    Event::Expired {
        reservation_id: id(n),
        amount: m(amount),
        expired_at: now(),
    }
}

fn crossed(threshold_pct: u8, committed: i64, hard: i64) -> Event {
    Event::ThresholdCrossed {
        threshold_pct,
        committed: m(committed),
        hard: m(hard),
    }
}

fn exceeded(requested: i64, available: i64) -> Result<Vec<Event>, Rejection> {
    Err(Rejection::BudgetExceeded {
        requested: m(requested),
        available: m(available),
    })
}

fn already(n: u128, outcome: ReservationOutcome) -> Result<Vec<Event>, Rejection> {
    Err(Rejection::AlreadySettled { id: id(n), outcome })
}

// ---------------------------------------------------------------------------
// Setting limits.
// ---------------------------------------------------------------------------

#[test]
fn setting_limits_on_a_new_month_records_them() {
    check(
        &[],
        set_limits(80, 100, &[50]),
        Ok(vec![limits_set(80, 100, &[50])]),
    );
}

#[test]
fn a_hard_limit_of_zero_is_refused() {
    check(&[], set_limits(0, 0, &[]), Err(Rejection::HardLimitZero));
}

#[test]
fn a_soft_limit_above_the_hard_limit_is_refused() {
    check(
        &[],
        set_limits(101, 100, &[]),
        Err(Rejection::SoftAboveHard {
            soft: m(101),
            hard: m(100),
        }),
    );
}

#[test]
fn a_soft_limit_equal_to_the_hard_limit_is_accepted() {
    check(
        &[],
        set_limits(100, 100, &[]),
        Ok(vec![limits_set(100, 100, &[])]),
    );
}

#[test]
fn a_soft_limit_of_zero_is_accepted() {
    check(
        &[],
        set_limits(0, 100, &[]),
        Ok(vec![limits_set(0, 100, &[])]),
    );
}

#[test]
fn no_thresholds_at_all_is_accepted() {
    check(&[], set_limits(80, 100, &[]), Ok(vec![limits()]));
}

#[test]
fn a_threshold_of_zero_percent_is_refused() {
    check(
        &[],
        set_limits(80, 100, &[0, 50]),
        Err(Rejection::BadThresholds),
    );
}

#[test]
fn a_threshold_above_one_hundred_percent_is_refused() {
    check(
        &[],
        set_limits(80, 100, &[50, 101]),
        Err(Rejection::BadThresholds),
    );
}

#[test]
fn thresholds_of_one_and_one_hundred_percent_are_accepted() {
    check(
        &[],
        set_limits(80, 100, &[100, 1]),
        Ok(vec![limits_set(80, 100, &[1, 100])]),
    );
}

#[test]
fn more_than_the_maximum_number_of_distinct_thresholds_is_refused() {
    let eleven: Vec<u8> = (1..=11).collect();
    assert_eq!(eleven.len(), MAX_THRESHOLDS + 1);
    check(
        &[],
        set_limits(80, 100, &eleven),
        Err(Rejection::BadThresholds),
    );
}

#[test]
fn exactly_the_maximum_number_of_thresholds_is_accepted() {
    let ten: Vec<u8> = (1..=10).collect();
    assert_eq!(ten.len(), MAX_THRESHOLDS);
    check(
        &[],
        set_limits(80, 100, &ten),
        Ok(vec![limits_set(80, 100, &ten)]),
    );
}

#[test]
fn thresholds_are_recorded_sorted_and_without_duplicates() {
    check(
        &[],
        set_limits(80, 100, &[90, 50, 90, 75, 50]),
        Ok(vec![limits_set(80, 100, &[50, 75, 90])]),
    );
}

#[test]
fn duplicate_thresholds_do_not_count_towards_the_maximum() {
    let twelve_entries = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 50, 50];
    check(
        &[],
        set_limits(80, 100, &twelve_entries),
        Ok(vec![limits_set(
            80,
            100,
            &[10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
        )]),
    );
}

#[test]
fn new_limits_replace_the_old_ones() {
    check(
        &[limits()],
        set_limits(150, 200, &[]),
        Ok(vec![limits_set(150, 200, &[])]),
    );
}

#[test]
fn limits_below_the_money_already_held_are_accepted() {
    check(
        &[limits(), reserved(A, 60)],
        set_limits(10, 50, &[]),
        Ok(vec![limits_set(10, 50, &[])]),
    );
}

#[test]
fn setting_limits_first_expires_the_reservations_that_are_due() {
    check(
        &[limits(), reserved_until(A, 30, now())],
        set_limits(80, 100, &[]),
        Ok(vec![expired(A, 30), limits()]),
    );
}

#[test]
fn limits_that_put_committed_spend_past_a_threshold_announce_it() {
    check(
        &[limits(), reserved(A, 60), committed(A, 60, 60)],
        set_limits(80, 100, &[50, 75]),
        Ok(vec![limits_set(80, 100, &[50, 75]), crossed(50, 60, 100)]),
    );
}

#[test]
fn limits_set_below_committed_spend_announce_every_threshold_it_passes() {
    check(
        &[limits(), reserved(A, 60), committed(A, 60, 60)],
        set_limits(40, 50, &[80, 100]),
        Ok(vec![
            limits_set(40, 50, &[80, 100]),
            crossed(80, 60, 50),
            crossed(100, 60, 50),
        ]),
    );
}

#[test]
fn new_limits_do_not_announce_a_threshold_again() {
    check(
        &[
            limits_set(80, 100, &[50]),
            reserved(A, 60),
            committed(A, 60, 60),
            crossed(50, 60, 100),
        ],
        set_limits(40, 50, &[50, 100]),
        Ok(vec![limits_set(40, 50, &[50, 100]), crossed(100, 60, 50)]),
    );
}

// ---------------------------------------------------------------------------
// Reserving: what a request must look like.
// ---------------------------------------------------------------------------

#[test]
fn a_reservation_within_the_limit_is_admitted_until_now_plus_its_ttl() {
    check(&[limits()], reserve(A, 10), Ok(vec![reserved(A, 10)]));
}

#[test]
fn a_reservation_of_zero_is_refused() {
    check(&[limits()], reserve(A, 0), Err(Rejection::AmountZero));
}

#[test]
fn a_negative_ttl_is_refused() {
    check(&[limits()], reserve_for(secs(-1)), Err(Rejection::BadTtl));
}

#[test]
fn a_ttl_of_zero_is_refused() {
    check(
        &[limits()],
        reserve_for(TimeDelta::zero()),
        Err(Rejection::BadTtl),
    );
}

#[test]
fn a_ttl_just_under_one_second_is_refused() {
    check(
        &[limits()],
        reserve_for(TimeDelta::milliseconds(999)),
        Err(Rejection::BadTtl),
    );
}

#[test]
fn a_ttl_of_one_second_is_accepted() {
    check(
        &[limits()],
        reserve_for(secs(1)),
        Ok(vec![reserved_until(A, 10, now() + secs(1))]),
    );
}

#[test]
fn a_ttl_of_seven_days_is_accepted() {
    assert_eq!(MAX_TTL, TimeDelta::days(7));
    check(
        &[limits()],
        reserve_for(MAX_TTL),
        Ok(vec![reserved_until(A, 10, now() + MAX_TTL)]),
    );
}

#[test]
fn a_ttl_one_second_over_seven_days_is_refused() {
    check(
        &[limits()],
        reserve_for(MAX_TTL + secs(1)),
        Err(Rejection::BadTtl),
    );
}

#[test]
fn an_empty_purpose_is_refused() {
    check(
        &[limits()],
        reserve_with_purpose(""),
        Err(Rejection::BadPurpose),
    );
}

#[test]
fn a_purpose_of_only_white_space_is_refused() {
    check(
        &[limits()],
        reserve_with_purpose(" \t\n "),
        Err(Rejection::BadPurpose),
    );
}

#[test]
fn a_purpose_of_the_maximum_length_in_characters_is_accepted() {
    // 'é' is two bytes: the limit counts characters, not bytes.
    let purpose = "é".repeat(MAX_PURPOSE_CHARS);
    check(
        &[limits()],
        reserve_with_purpose(&purpose),
        Ok(vec![Event::Reserved {
            reservation_id: id(A),
            amount: m(10),
            purpose,
            expires_at: now() + hour(),
        }]),
    );
}

#[test]
fn a_purpose_one_character_too_long_is_refused() {
    let purpose = "x".repeat(MAX_PURPOSE_CHARS + 1);
    check(
        &[limits()],
        reserve_with_purpose(&purpose),
        Err(Rejection::BadPurpose),
    );
}

#[test]
fn an_open_reservation_id_cannot_be_reused() {
    check(
        &[limits(), reserved(A, 10)],
        reserve(A, 10),
        Err(Rejection::ReservationExists(id(A))),
    );
}

#[test]
fn a_committed_reservation_id_cannot_be_reused() {
    check(
        &[limits(), reserved(A, 10), committed(A, 10, 10)],
        reserve(A, 10),
        Err(Rejection::ReservationExists(id(A))),
    );
}

#[test]
fn a_released_reservation_id_cannot_be_reused() {
    check(
        &[limits(), reserved(A, 10), released(A, 10)],
        reserve(A, 10),
        Err(Rejection::ReservationExists(id(A))),
    );
}

#[test]
fn an_expired_reservation_id_cannot_be_reused() {
    check(
        &[limits(), reserved_until(A, 10, now()), expired(A, 10)],
        reserve(A, 10),
        Err(Rejection::ReservationExists(id(A))),
    );
}

#[test]
fn a_due_but_unswept_reservation_id_cannot_be_reused() {
    check(
        &[limits(), reserved_until(A, 10, now() - secs(1))],
        reserve(A, 10),
        Err(Rejection::ReservationExists(id(A))),
    );
}

// ---------------------------------------------------------------------------
// Reserving: which limits apply.
// ---------------------------------------------------------------------------

#[test]
fn a_reservation_in_a_month_without_limits_is_refused() {
    check(&[], reserve(A, 10), Err(Rejection::NotConfigured));
}

#[test]
fn a_malformed_request_is_reported_before_missing_limits() {
    check(&[], reserve(A, 0), Err(Rejection::AmountZero));
}

#[test]
fn a_month_without_limits_inherits_the_earlier_months_and_records_it() {
    check(
        &[],
        inheriting(reserve(A, 10), october(), limits_of(80, 100, &[50])),
        Ok(vec![
            Event::LimitsSet {
                soft: m(80),
                hard: m(100),
                alert_thresholds_pct: vec![50],
                inherited_from: Some(october()),
            },
            reserved(A, 10),
        ]),
    );
}

#[test]
fn an_inherited_hard_limit_refuses_a_reservation_above_it() {
    check(
        &[],
        inheriting(reserve(A, 101), october(), limits_of(80, 100, &[])),
        exceeded(101, 100),
    );
}

#[test]
fn a_month_with_its_own_limits_ignores_inherited_ones() {
    check(
        &[limits()],
        inheriting(reserve(A, 10), october(), limits_of(1, 1, &[])),
        Ok(vec![reserved(A, 10)]),
    );
}

fn limits_of(soft: i64, hard: i64, thresholds: &[u8]) -> Limits {
    Limits {
        soft: m(soft),
        hard: m(hard),
        alert_thresholds_pct: thresholds.to_vec(),
    }
}

// ---------------------------------------------------------------------------
// Reserving: admission against the hard limit.
// ---------------------------------------------------------------------------

#[test]
fn a_reservation_that_fills_the_budget_exactly_is_admitted() {
    check(
        &[
            limits(),
            reserved(A, 60),
            committed(A, 60, 60),
            reserved(B, 30),
        ],
        reserve(C, 10),
        Ok(vec![reserved(C, 10)]),
    );
}

#[test]
fn a_reservation_past_the_hard_limit_by_one_micro_is_refused() {
    check(
        &[
            limits(),
            reserved(A, 60),
            committed(A, 60, 60),
            reserved(B, 30),
        ],
        reserve(C, 11),
        exceeded(11, 10),
    );
}

#[test]
fn a_reservation_of_the_whole_hard_limit_on_an_empty_ledger_is_admitted() {
    check(&[limits()], reserve(A, 100), Ok(vec![reserved(A, 100)]));
}

#[test]
fn a_reservation_past_the_soft_limit_but_within_the_hard_limit_is_admitted() {
    check(
        &[limits(), reserved(A, 75)],
        reserve(B, 10),
        Ok(vec![reserved(B, 10)]),
    );
}

#[test]
fn a_reservation_in_a_full_ledger_is_refused() {
    check(&[limits(), reserved(A, 100)], reserve(B, 1), exceeded(1, 0));
}

#[test]
fn a_due_reservation_is_expired_first_and_its_amount_admits_a_new_one() {
    check(
        &[limits(), reserved_until(A, 100, now() - secs(1))],
        reserve(B, 100),
        Ok(vec![expired(A, 100), reserved(B, 100)]),
    );
}

#[test]
fn a_reservation_due_exactly_now_counts_as_due() {
    check(
        &[limits(), reserved_until(A, 100, now())],
        reserve(B, 100),
        Ok(vec![expired(A, 100), reserved(B, 100)]),
    );
}

#[test]
fn a_reservation_due_one_second_from_now_still_holds_its_amount() {
    check(
        &[limits(), reserved_until(A, 100, now() + secs(1))],
        reserve(B, 1),
        exceeded(1, 0),
    );
}

#[test]
fn a_refused_reservation_expires_nothing() {
    // Expiry that was only decided on the way to a refusal is not recorded: the
    // command has no effect at all. The next command or sweep expires it.
    check(
        &[limits(), reserved_until(A, 50, now()), reserved(B, 50)],
        reserve(C, 51),
        exceeded(51, 50),
    );
}

#[test]
fn no_reservation_is_admitted_while_an_overrun_holds_the_ledger_past_its_hard_limit() {
    check(
        &[
            limits(),
            reserved(A, 90),
            committed(A, 90, 150),
            overrun(A, 90, 150),
        ],
        reserve(B, 1),
        exceeded(1, 0),
    );
}

// ---------------------------------------------------------------------------
// Committing.
// ---------------------------------------------------------------------------

#[test]
fn committing_less_than_reserved_records_the_actual_cost() {
    check(
        &[limits(), reserved(A, 30)],
        commit(A, 20),
        Ok(vec![committed(A, 30, 20)]),
    );
}

#[test]
fn committing_exactly_the_reserved_amount_records_no_overrun() {
    check(
        &[limits(), reserved(A, 30)],
        commit(A, 30),
        Ok(vec![committed(A, 30, 30)]),
    );
}

#[test]
fn committing_nothing_settles_the_reservation_at_zero() {
    check(
        &[limits(), reserved(A, 30)],
        commit(A, 0),
        Ok(vec![committed(A, 30, 0)]),
    );
}

#[test]
fn committing_more_than_reserved_records_the_overrun() {
    check(
        &[limits(), reserved(A, 30)],
        commit(A, 45),
        Ok(vec![committed(A, 30, 45), overrun(A, 30, 45)]),
    );
}

#[test]
fn committing_past_the_hard_limit_is_recorded_because_the_cost_is_a_fact() {
    check(
        &[limits(), reserved(A, 90)],
        commit(A, 150),
        Ok(vec![committed(A, 90, 150), overrun(A, 90, 150)]),
    );
}

#[test]
fn committing_an_expired_reservation_records_the_whole_cost_as_overrun() {
    check(
        &[limits(), reserved_until(A, 30, now()), expired(A, 30)],
        commit(A, 20),
        Ok(vec![committed(A, 0, 20), overrun(A, 0, 20)]),
    );
}

#[test]
fn committing_nothing_on_an_expired_reservation_records_no_overrun() {
    check(
        &[limits(), reserved_until(A, 30, now()), expired(A, 30)],
        commit(A, 0),
        Ok(vec![committed(A, 0, 0)]),
    );
}

#[test]
fn committing_a_due_but_unswept_reservation_uses_its_hold() {
    check(
        &[limits(), reserved_until(A, 30, now() - secs(1))],
        commit(A, 20),
        Ok(vec![committed(A, 30, 20)]),
    );
}

#[test]
fn committing_first_expires_the_other_reservations_that_are_due() {
    check(
        &[limits(), reserved_until(A, 10, now()), reserved(B, 30)],
        commit(B, 30),
        Ok(vec![expired(A, 10), committed(B, 30, 30)]),
    );
}

#[test]
fn committing_an_unknown_reservation_is_refused() {
    check(
        &[limits()],
        commit(A, 10),
        Err(Rejection::ReservationNotFound(id(A))),
    );
}

#[test]
fn committing_a_committed_reservation_is_refused_as_already_committed() {
    check(
        &[limits(), reserved(A, 30), committed(A, 30, 30)],
        commit(A, 30),
        already(A, ReservationOutcome::Committed),
    );
}

#[test]
fn committing_an_expired_reservation_twice_is_refused_as_already_committed() {
    check(
        &[
            limits(),
            reserved_until(A, 30, now()),
            expired(A, 30),
            committed(A, 0, 20),
            overrun(A, 0, 20),
        ],
        commit(A, 20),
        already(A, ReservationOutcome::Committed),
    );
}

#[test]
fn committing_a_released_reservation_is_refused_as_already_released() {
    check(
        &[limits(), reserved(A, 30), released(A, 30)],
        commit(A, 30),
        already(A, ReservationOutcome::Released),
    );
}

// ---------------------------------------------------------------------------
// Alert thresholds, reached by committed spend.
// ---------------------------------------------------------------------------

#[test]
fn a_commit_that_reaches_a_threshold_exactly_announces_it() {
    check(
        &[limits_set(80, 100, &[50]), reserved(A, 50)],
        commit(A, 50),
        Ok(vec![committed(A, 50, 50), crossed(50, 50, 100)]),
    );
}

#[test]
fn a_commit_one_micro_short_of_a_threshold_announces_nothing() {
    check(
        &[limits_set(80, 100, &[50]), reserved(A, 50)],
        commit(A, 49),
        Ok(vec![committed(A, 50, 49)]),
    );
}

#[test]
fn a_commit_past_several_thresholds_announces_each_in_ascending_order() {
    check(
        &[limits_set(80, 100, &[50, 75, 90]), reserved(A, 80)],
        commit(A, 80),
        Ok(vec![
            committed(A, 80, 80),
            crossed(50, 80, 100),
            crossed(75, 80, 100),
        ]),
    );
}

#[test]
fn a_threshold_is_announced_only_once() {
    check(
        &[
            limits_set(80, 100, &[50]),
            reserved(A, 50),
            committed(A, 50, 50),
            crossed(50, 50, 100),
            reserved(B, 10),
        ],
        commit(B, 10),
        Ok(vec![committed(B, 10, 10)]),
    );
}

#[test]
fn an_overrun_is_announced_before_the_thresholds_it_crosses() {
    check(
        &[limits_set(80, 100, &[100]), reserved(A, 90)],
        commit(A, 120),
        Ok(vec![
            committed(A, 90, 120),
            overrun(A, 90, 120),
            crossed(100, 120, 100),
        ]),
    );
}

#[test]
fn reserved_money_does_not_reach_a_threshold() {
    check(
        &[limits_set(80, 100, &[50])],
        reserve(A, 100),
        Ok(vec![reserved(A, 100)]),
    );
}

// ---------------------------------------------------------------------------
// Releasing.
// ---------------------------------------------------------------------------

#[test]
fn releasing_an_open_reservation_gives_back_its_amount() {
    check(
        &[limits(), reserved(A, 30)],
        release(A),
        Ok(vec![released(A, 30)]),
    );
}

#[test]
fn releasing_a_due_but_unswept_reservation_gives_back_its_amount() {
    check(
        &[limits(), reserved_until(A, 30, now() - secs(1))],
        release(A),
        Ok(vec![released(A, 30)]),
    );
}

#[test]
fn releasing_first_expires_the_other_reservations_that_are_due() {
    check(
        &[limits(), reserved_until(A, 10, now()), reserved(B, 30)],
        release(B),
        Ok(vec![expired(A, 10), released(B, 30)]),
    );
}

#[test]
fn releasing_an_unknown_reservation_is_refused() {
    check(
        &[limits()],
        release(A),
        Err(Rejection::ReservationNotFound(id(A))),
    );
}

#[test]
fn releasing_a_committed_reservation_is_refused_as_already_committed() {
    check(
        &[limits(), reserved(A, 30), committed(A, 30, 30)],
        release(A),
        already(A, ReservationOutcome::Committed),
    );
}

#[test]
fn releasing_a_released_reservation_is_refused_as_already_released() {
    check(
        &[limits(), reserved(A, 30), released(A, 30)],
        release(A),
        already(A, ReservationOutcome::Released),
    );
}

#[test]
fn releasing_an_expired_reservation_is_refused_as_already_expired() {
    check(
        &[limits(), reserved_until(A, 30, now()), expired(A, 30)],
        release(A),
        already(A, ReservationOutcome::Expired),
    );
}

// ---------------------------------------------------------------------------
// Expiring.
// ---------------------------------------------------------------------------

#[test]
fn expiring_an_empty_ledger_emits_nothing() {
    check(&[], Command::ExpireDue, Ok(vec![]));
}

#[test]
fn expiring_when_nothing_is_due_emits_nothing() {
    check(
        &[limits(), reserved_until(A, 30, now() + secs(1))],
        Command::ExpireDue,
        Ok(vec![]),
    );
}

#[test]
fn expiring_expires_every_due_reservation_and_no_other() {
    check(
        &[
            limits(),
            reserved_until(C, 10, now() - hour()),
            reserved_until(A, 20, now()),
            reserved_until(B, 30, now() + secs(1)),
        ],
        Command::ExpireDue,
        Ok(vec![expired(A, 20), expired(C, 10)]),
    );
}

#[test]
fn expiring_leaves_settled_reservations_alone() {
    check(
        &[
            limits(),
            reserved_until(A, 10, now() - hour()),
            committed(A, 10, 10),
            reserved_until(B, 10, now() - hour()),
            released(B, 10),
        ],
        Command::ExpireDue,
        Ok(vec![]),
    );
}

// ---------------------------------------------------------------------------
// The state the events fold into.
// ---------------------------------------------------------------------------

#[test]
fn a_reservation_is_held_until_it_is_settled() {
    let state = fold(&[limits(), reserved(A, 30), reserved(B, 20)]);
    assert_eq!(state.reserved, m(50));
    assert_eq!(state.committed, m(0));
    assert_eq!(state.open.len(), 2);
    assert!(state.settled.is_empty());
}

#[test]
fn a_commit_moves_the_actual_cost_from_held_to_spent() {
    let state = fold(&[
        limits(),
        reserved(A, 30),
        reserved(B, 20),
        committed(A, 30, 45),
    ]);
    assert_eq!(state.reserved, m(20));
    assert_eq!(state.committed, m(45));
    assert_eq!(
        state.settled.get(&id(A)),
        Ok(Some(&ReservationOutcome::Committed))
    );
    assert!(!state.open.contains_key(&id(A)));
}

#[test]
fn a_release_and_an_expiry_free_their_hold_and_spend_nothing() {
    let state = fold(&[
        limits(),
        reserved(A, 30),
        reserved(B, 20),
        released(A, 30),
        expired(B, 20),
    ]);
    assert_eq!(state.reserved, m(0));
    assert_eq!(state.committed, m(0));
    assert_eq!(
        state.settled.get(&id(A)),
        Ok(Some(&ReservationOutcome::Released))
    );
    assert_eq!(
        state.settled.get(&id(B)),
        Ok(Some(&ReservationOutcome::Expired))
    );
}

#[test]
fn committing_after_expiry_records_the_reservation_as_committed() {
    let state = fold(&[
        limits(),
        reserved(A, 30),
        expired(A, 30),
        committed(A, 0, 20),
        overrun(A, 0, 20),
    ]);
    assert_eq!(state.committed, m(20));
    assert_eq!(state.reserved, m(0));
    assert_eq!(
        state.settled.get(&id(A)),
        Ok(Some(&ReservationOutcome::Committed))
    );
}

#[test]
fn a_crossed_threshold_is_remembered() {
    let state = fold(&[limits_set(80, 100, &[50]), crossed(50, 50, 100)]);
    assert!(state.thresholds_crossed.contains(&50));
}

#[test]
fn available_money_is_the_hard_limit_less_spent_and_held() {
    let state = fold(&[
        limits(),
        reserved(A, 30),
        committed(A, 30, 25),
        reserved(B, 20),
    ]);
    assert_eq!(state.available(), m(55));
}

#[test]
fn no_money_is_available_without_limits() {
    assert_eq!(State::default().available(), m(0));
}

#[test]
fn available_money_is_zero_not_negative_after_an_overrun() {
    let state = fold(&[limits(), reserved(A, 90), committed(A, 90, 150)]);
    assert_eq!(state.available(), m(0));
}

#[test]
fn a_ledger_without_limits_reports_the_hard_limit_reached() {
    assert_eq!(status_of(None, m(0), m(0)), BudgetStatus::HardReached);
    assert_eq!(State::default().status(), BudgetStatus::HardReached);
}

#[test]
fn a_ledger_at_or_below_its_soft_limit_reports_ok() {
    let l = limits_of(80, 100, &[]);
    assert_eq!(status_of(Some(&l), m(0), m(0)), BudgetStatus::Ok);
    assert_eq!(status_of(Some(&l), m(50), m(30)), BudgetStatus::Ok);
}

#[test]
fn a_ledger_past_its_soft_limit_reports_soft_exceeded_counting_held_money() {
    let l = limits_of(80, 100, &[]);
    assert_eq!(
        status_of(Some(&l), m(50), m(31)),
        BudgetStatus::SoftExceeded
    );
    assert_eq!(status_of(Some(&l), m(99), m(0)), BudgetStatus::SoftExceeded);
}

#[test]
fn a_ledger_at_or_past_its_hard_limit_reports_hard_reached() {
    let l = limits_of(80, 100, &[]);
    assert_eq!(status_of(Some(&l), m(60), m(40)), BudgetStatus::HardReached);
    assert_eq!(status_of(Some(&l), m(150), m(0)), BudgetStatus::HardReached);
}

#[test]
fn a_ledger_whose_soft_limit_equals_its_hard_limit_goes_from_ok_to_hard_reached() {
    let l = limits_of(100, 100, &[]);
    assert_eq!(status_of(Some(&l), m(99), m(0)), BudgetStatus::Ok);
    assert_eq!(status_of(Some(&l), m(100), m(0)), BudgetStatus::HardReached);
}

#[test]
fn the_state_and_the_shared_function_agree_on_the_status() {
    let state = fold(&[limits(), reserved(A, 85)]);
    assert_eq!(state.status(), BudgetStatus::SoftExceeded);
    assert_eq!(
        state.status(),
        status_of(state.limits.as_ref(), state.committed, state.reserved)
    );
}

#[test]
fn every_status_has_its_stable_name() {
    assert_eq!(BudgetStatus::Ok.as_str(), "ok");
    assert_eq!(BudgetStatus::SoftExceeded.as_str(), "soft_exceeded");
    assert_eq!(BudgetStatus::HardReached.as_str(), "hard_reached");
}

#[test]
fn every_rejection_has_its_stable_code() {
    let table = [
        (Rejection::HardLimitZero, "hard_limit_zero"),
        (
            Rejection::SoftAboveHard {
                soft: m(2),
                hard: m(1),
            },
            "soft_limit_above_hard_limit",
        ),
        (Rejection::BadThresholds, "invalid_alert_thresholds"),
        (Rejection::NotConfigured, "budget_not_configured"),
        (Rejection::AmountZero, "amount_not_positive"),
        (Rejection::BadTtl, "invalid_ttl"),
        (Rejection::BadPurpose, "invalid_purpose"),
        (
            Rejection::ReservationExists(id(A)),
            "reservation_already_exists",
        ),
        (
            Rejection::BudgetExceeded {
                requested: m(2),
                available: m(1),
            },
            "budget_exceeded",
        ),
        (
            Rejection::ReservationNotFound(id(A)),
            "reservation_not_found",
        ),
        (
            Rejection::AlreadySettled {
                id: id(A),
                outcome: ReservationOutcome::Expired,
            },
            "reservation_already_settled",
        ),
    ];
    for (rejection, code) in table {
        assert_eq!(rejection.code(), code, "{rejection:?}");
    }
}

#[test]
fn an_already_settled_rejection_names_how_the_reservation_ended() {
    let rejection = Rejection::AlreadySettled {
        id: id(A),
        outcome: ReservationOutcome::Released,
    };
    assert_eq!(
        rejection.to_string(),
        format!("reservation {} is already released", id(A))
    );
}

// ---------------------------------------------------------------------------
// The settled reservations: a snapshot's sorted list plus what settled since.
// ---------------------------------------------------------------------------

#[test]
fn settled_reservations_from_a_snapshot_and_since_it_read_as_one_set_in_id_order() {
    use domain::budget::Settled;
    let outcome = ReservationOutcome::Committed;
    let mut settled =
        Settled::from_sorted(vec![(id(1), outcome), (id(3), outcome), (id(5), outcome)])
            .expect("sorted");
    settled.insert(id(2), ReservationOutcome::Released);
    settled.insert(id(6), ReservationOutcome::Expired);
    // Settled again after the snapshot (a replayed reservation): the newer outcome.
    settled.insert(id(3), ReservationOutcome::Expired);
    let listed: Vec<(u128, ReservationOutcome)> = settled
        .iter()
        .expect("a listed set iterates")
        .map(|(id, o)| (id.as_uuid().as_u128(), *o))
        .collect();
    assert_eq!(
        listed,
        vec![
            (1, outcome),
            (2, ReservationOutcome::Released),
            (3, ReservationOutcome::Expired),
            (5, outcome),
            (6, ReservationOutcome::Expired),
        ]
    );
    assert_eq!(settled.get(&id(5)), Ok(Some(&outcome)));
    assert_eq!(settled.get(&id(3)), Ok(Some(&ReservationOutcome::Expired)));
    assert_eq!(settled.get(&id(4)), Ok(None));
    let rebuilt: Settled = listed.iter().map(|(n, o)| (id(*n), *o)).collect();
    assert_eq!(settled, rebuilt, "equal however they were built");
}

#[test]
fn a_settled_list_out_of_order_or_repeated_is_refused() {
    use domain::budget::{Settled, StateError};
    let outcome = ReservationOutcome::Committed;
    assert_eq!(
        Settled::from_sorted(vec![(id(2), outcome), (id(1), outcome)]).err(),
        Some(StateError::SettledOutOfOrder(id(1)))
    );
    assert_eq!(
        Settled::from_sorted(vec![(id(1), outcome), (id(1), outcome)]).err(),
        Some(StateError::SettledOutOfOrder(id(1)))
    );
    assert!(Settled::from_sorted(Vec::new()).expect("empty").is_empty());
}

// ---------------------------------------------------------------------------
// A ledger from a snapshot that carries only a filter of its settled ids.
// ---------------------------------------------------------------------------

/// The same ledger as a cold load from a snapshot leaves it: the settled
/// reservations known only by a filter of their ids, the list left in the store.
fn from_snapshot(given: &[Event]) -> State {
    use domain::budget::{Parts, Settled, SettledFilter};
    let state = fold(given);
    let ids: Vec<ReservationId> = state
        .settled
        .iter()
        .expect("a folded ledger is listed")
        .map(|(id, _)| *id)
        .collect();
    let parts = state.parts();
    State::from_parts(Parts {
        limits: parts.limits.cloned(),
        committed: parts.committed,
        open: parts.open.clone(),
        settled: Settled::filtered(SettledFilter::build(ids.len(), &ids)),
        thresholds_crossed: parts.thresholds_crossed.clone(),
    })
    .expect("a folded ledger's parts are consistent")
}

/// The settled list of the ledger `given` folds to, as the snapshot's detail holds it.
fn settled_list(given: &[Event]) -> Vec<(ReservationId, ReservationOutcome)> {
    fold(given)
        .settled
        .iter()
        .expect("a folded ledger is listed")
        .map(|(id, outcome)| (*id, *outcome))
        .collect()
}

fn decide_now(state: &State, command: Command) -> Result<Vec<Event>, Rejection> {
    let ctx = Ctx {
        now: now(),
        period: november(),
        inherited_limits: None,
    };
    decide(state, command, &ctx)
}

fn settled_history() -> Vec<Event> {
    vec![
        limits(),
        reserved(A, 30),
        committed(A, 30, 25),
        reserved(B, 20),
        released(B, 20),
        reserved(C, 10),
    ]
}

/// `command` on the ledger decoded from a snapshot (no settled list) needs no list,
/// and decides as on the folded ledger.
fn decides_without_the_settled_list(command: Command) {
    let state = from_snapshot(&settled_history());
    assert!(!state.settled.is_listed());
    assert!(!domain::budget::needs_settled_list(&state, &command));
    assert_eq!(
        decide_now(&state, command.clone()),
        decide_now(&fold(&settled_history()), command)
    );
}

#[test]
fn a_ledger_from_a_snapshot_reserves_a_new_id_without_its_settled_list() {
    decides_without_the_settled_list(reserve(9, 10));
}

#[test]
fn a_ledger_from_a_snapshot_settles_an_open_reservation_without_its_settled_list() {
    decides_without_the_settled_list(commit(C, 10));
}

#[test]
fn a_ledger_from_a_snapshot_needs_its_settled_list_for_an_id_the_filter_may_hold() {
    for command in [reserve(A, 10), commit(A, 10), release(B)] {
        let mut state = from_snapshot(&settled_history());
        assert!(domain::budget::needs_settled_list(&state, &command));
        let id = command.reservation_id().expect("each names a reservation");
        assert_eq!(
            decide_now(&state, command.clone()),
            Err(Rejection::SettledUnlisted(id)),
            "{command:?} cannot be answered without the list"
        );
        state
            .settled
            .list(settled_list(&settled_history()))
            .expect("the list the filter came from");
        assert!(!domain::budget::needs_settled_list(&state, &command));
        assert_eq!(
            decide_now(&state, command.clone()),
            decide_now(&fold(&settled_history()), command),
            "once listed it answers as the folded ledger"
        );
    }
}

#[test]
fn a_settled_list_that_is_not_the_one_its_filter_came_from_is_refused() {
    use domain::budget::StateError;
    let mut state = from_snapshot(&settled_history());
    let mut short = settled_list(&settled_history());
    short.pop();
    assert_eq!(
        state.settled.list(short),
        Err(StateError::ListNotFiltered {
            listed: 1,
            filtered: 2
        })
    );
    let other = vec![
        (id(A), ReservationOutcome::Committed),
        (id(0xdead_beef), ReservationOutcome::Released),
    ];
    assert_eq!(
        state.settled.list(other),
        Err(StateError::NotInFilter(id(0xdead_beef)))
    );
    assert!(!state.settled.is_listed(), "a refused list changes nothing");
}

#[test]
fn what_settles_after_the_snapshot_answers_without_the_list() {
    let mut history = settled_history();
    let mut state = from_snapshot(&history);
    let later = committed(C, 10, 10);
    state = evolve(state, &later);
    history.push(later);
    let command = commit(C, 5);
    assert!(!domain::budget::needs_settled_list(&state, &command));
    assert_eq!(
        decide_now(&state, command.clone()),
        decide_now(&fold(&history), command)
    );
}
