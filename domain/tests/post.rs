//! A post's life cycle, one test per rule: given these events, when this command, then
//! these events or this rejection.
//!
//! The transitions are also checked as a whole table, every state against every
//! command, so that a move made legal or illegal by accident shows up as one wrong cell.
//! Every test runs at the same instant, `NOW`.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use domain::post::{
    Action, Command, Ctx, Event, MAX_BODY_CHARS, PublishTrigger, Rejection, Resolution, State,
    Status, decide, evolve,
};
use domain::{CampaignId, Channel};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The helper and the vocabulary the tests are written in.
// ---------------------------------------------------------------------------

/// Folds `given` from an absent post, decides `when` at `NOW`, and compares the outcome
/// with `then`.
#[track_caller]
fn check(given: &[Event], when: Command, then: Result<Vec<Event>, Rejection>) {
    let got = decide(&fold(given), when, &Ctx { now: now() });
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

fn linkedin() -> Channel {
    Channel::new("linkedin").expect("a valid channel")
}

fn campaign() -> CampaignId {
    CampaignId::from_uuid(Uuid::from_u128(7))
}

fn create(body: &str) -> Command {
    Command::Create {
        channel: linkedin(),
        body: body.into(),
        campaign_id: Some(campaign()),
    }
}

fn created() -> Event {
    Event::Created {
        channel: linkedin(),
        body: "Hello".into(),
        campaign_id: Some(campaign()),
    }
}

fn edit(body: &str) -> Command {
    Command::Edit { body: body.into() }
}

fn edited(body: &str) -> Event {
    Event::Edited { body: body.into() }
}

fn tomorrow() -> DateTime<Utc> {
    now() + TimeDelta::days(1)
}

fn schedule(publish_at: DateTime<Utc>) -> Command {
    Command::Schedule { publish_at }
}

fn scheduled(publish_at: DateTime<Utc>) -> Event {
    Event::Scheduled { publish_at }
}

fn publish() -> Command {
    Command::Publish {
        trigger: PublishTrigger::Manual,
    }
}

fn publish_requested() -> Event {
    Event::PublishRequested {
        trigger: PublishTrigger::Manual,
    }
}

fn record_published(network_post_id: &str) -> Command {
    Command::RecordPublished {
        network_post_id: network_post_id.into(),
        url: Some("https://example.com/p/1".into()),
    }
}

fn published(network_post_id: &str) -> Event {
    Event::Published {
        network_post_id: network_post_id.into(),
        url: Some("https://example.com/p/1".into()),
    }
}

fn record_failed(reason: &str) -> Command {
    Command::RecordFailed {
        reason: reason.into(),
    }
}

fn failed(reason: &str) -> Event {
    Event::PublishFailed {
        reason: reason.into(),
    }
}

fn refused(from: Status, action: Action) -> Result<Vec<Event>, Rejection> {
    Err(Rejection::InvalidTransition { from, action })
}

/// A history that leaves a post in `status`.
fn history(status: Status) -> Vec<Event> {
    match status {
        Status::Absent => vec![],
        Status::Draft => vec![created()],
        Status::Scheduled => vec![created(), scheduled(tomorrow())],
        Status::Publishing => vec![created(), publish_requested()],
        Status::Published => vec![created(), publish_requested(), published("n-1")],
        Status::Failed => vec![created(), publish_requested(), failed("rate limited")],
        Status::Cancelled => vec![created(), Event::Cancelled],
        Status::RetryScheduled => vec![
            created(),
            publish_requested(),
            attempt_started(1),
            attempt_failed(1, Some(now() + TimeDelta::seconds(30))),
        ],
        Status::Unconfirmed => vec![
            created(),
            publish_requested(),
            attempt_started(1),
            unconfirmed(1),
        ],
        Status::Removed => vec![
            created(),
            publish_requested(),
            published("n-1"),
            Event::Removed {
                network_post_id: "n-1".into(),
            },
        ],
    }
}

fn start_attempt() -> Command {
    Command::StartAttempt {
        network: "mastodon".into(),
    }
}

fn attempt_started(attempt: u32) -> Event {
    Event::DeliveryAttemptStarted {
        attempt,
        network: "mastodon".into(),
    }
}

fn attempt_failed(attempt: u32, retry_at: Option<DateTime<Utc>>) -> Event {
    Event::DeliveryAttemptFailed {
        attempt,
        code: "network_unavailable".into(),
        reason: "503".into(),
        retry_at,
    }
}

fn record_attempt_failed(retry_at: Option<DateTime<Utc>>) -> Command {
    Command::RecordAttemptFailed {
        code: "network_unavailable".into(),
        reason: "503".into(),
        retry_at,
    }
}

fn unconfirmed(attempt: u32) -> Event {
    Event::DeliveryUnconfirmed {
        attempt,
        reason: "timeout".into(),
    }
}

const EXISTING: [Status; 6] = [
    Status::Draft,
    Status::Scheduled,
    Status::Publishing,
    Status::Published,
    Status::Failed,
    Status::Cancelled,
];

// ---------------------------------------------------------------------------
// Creating.
// ---------------------------------------------------------------------------

#[test]
fn creating_a_post_records_it_as_a_draft() {
    check(&[], create("Hello"), Ok(vec![created()]));
}

#[test]
fn a_post_may_be_created_outside_any_campaign() {
    let command = Command::Create {
        channel: linkedin(),
        body: "Hello".into(),
        campaign_id: None,
    };
    let event = Event::Created {
        channel: linkedin(),
        body: "Hello".into(),
        campaign_id: None,
    };
    check(&[], command, Ok(vec![event]));
}

#[test]
fn creating_a_post_that_exists_is_refused_whatever_its_state() {
    for status in EXISTING {
        check(
            &history(status),
            create("Hello"),
            Err(Rejection::AlreadyExists),
        );
    }
}

#[test]
fn an_existing_post_is_reported_before_a_bad_body() {
    check(&[created()], create(""), Err(Rejection::AlreadyExists));
}

#[test]
fn an_empty_body_is_refused() {
    check(&[], create(""), Err(Rejection::BadBody));
}

#[test]
fn a_body_of_only_white_space_is_refused() {
    check(&[], create(" \n\t "), Err(Rejection::BadBody));
}

#[test]
fn a_body_of_the_maximum_length_in_characters_is_accepted() {
    // 'é' is two bytes: the limit counts characters, not bytes.
    let body = "é".repeat(MAX_BODY_CHARS);
    let event = Event::Created {
        channel: linkedin(),
        body: body.clone(),
        campaign_id: Some(campaign()),
    };
    check(&[], create(&body), Ok(vec![event]));
}

#[test]
fn a_body_one_character_too_long_is_refused() {
    check(
        &[],
        create(&"x".repeat(MAX_BODY_CHARS + 1)),
        Err(Rejection::BadBody),
    );
}

// ---------------------------------------------------------------------------
// Commands on a post that does not exist.
// ---------------------------------------------------------------------------

#[test]
fn editing_a_post_that_does_not_exist_is_refused() {
    check(&[], edit("Hi"), Err(Rejection::NotFound));
}

#[test]
fn scheduling_a_post_that_does_not_exist_is_refused() {
    check(&[], schedule(tomorrow()), Err(Rejection::NotFound));
}

#[test]
fn publishing_a_post_that_does_not_exist_is_refused() {
    check(&[], publish(), Err(Rejection::NotFound));
}

#[test]
fn cancelling_a_post_that_does_not_exist_is_refused() {
    check(&[], Command::Cancel, Err(Rejection::NotFound));
}

#[test]
fn recording_the_publication_of_a_post_that_does_not_exist_is_refused() {
    check(&[], record_published("n-1"), Err(Rejection::NotFound));
}

#[test]
fn recording_the_failure_of_a_post_that_does_not_exist_is_refused() {
    check(&[], record_failed("boom"), Err(Rejection::NotFound));
}

#[test]
fn a_missing_post_is_reported_before_a_bad_argument() {
    check(&[], edit(""), Err(Rejection::NotFound));
}

// ---------------------------------------------------------------------------
// Editing.
// ---------------------------------------------------------------------------

#[test]
fn editing_a_draft_records_the_new_body() {
    check(&[created()], edit("Hi"), Ok(vec![edited("Hi")]));
}

#[test]
fn editing_a_scheduled_post_records_the_new_body() {
    check(
        &history(Status::Scheduled),
        edit("Hi"),
        Ok(vec![edited("Hi")]),
    );
}

#[test]
fn editing_to_an_empty_body_is_refused() {
    check(&[created()], edit("   "), Err(Rejection::BadBody));
}

#[test]
fn editing_to_a_body_one_character_too_long_is_refused() {
    check(
        &[created()],
        edit(&"x".repeat(MAX_BODY_CHARS + 1)),
        Err(Rejection::BadBody),
    );
}

#[test]
fn editing_a_post_being_published_is_refused() {
    check(
        &history(Status::Publishing),
        edit("Hi"),
        refused(Status::Publishing, Action::Edit),
    );
}

// ---------------------------------------------------------------------------
// Scheduling.
// ---------------------------------------------------------------------------

#[test]
fn scheduling_a_draft_records_the_time() {
    check(
        &[created()],
        schedule(tomorrow()),
        Ok(vec![scheduled(tomorrow())]),
    );
}

#[test]
fn rescheduling_a_scheduled_post_records_the_new_time() {
    let later = tomorrow() + TimeDelta::hours(1);
    check(
        &history(Status::Scheduled),
        schedule(later),
        Ok(vec![scheduled(later)]),
    );
}

#[test]
fn scheduling_one_second_ahead_is_accepted() {
    let soon = now() + TimeDelta::seconds(1);
    check(&[created()], schedule(soon), Ok(vec![scheduled(soon)]));
}

#[test]
fn scheduling_for_exactly_now_is_refused() {
    check(
        &[created()],
        schedule(now()),
        Err(Rejection::PublishTimeInPast),
    );
}

#[test]
fn scheduling_in_the_past_is_refused() {
    check(
        &[created()],
        schedule(now() - TimeDelta::seconds(1)),
        Err(Rejection::PublishTimeInPast),
    );
}

#[test]
fn rescheduling_into_the_past_is_refused() {
    check(
        &history(Status::Scheduled),
        schedule(now() - TimeDelta::days(1)),
        Err(Rejection::PublishTimeInPast),
    );
}

#[test]
fn scheduling_a_cancelled_post_is_refused_before_its_time_is_checked() {
    check(
        &history(Status::Cancelled),
        schedule(now() - TimeDelta::days(1)),
        refused(Status::Cancelled, Action::Schedule),
    );
}

// ---------------------------------------------------------------------------
// Publishing.
// ---------------------------------------------------------------------------

#[test]
fn publishing_a_draft_by_hand_starts_publishing() {
    check(&[created()], publish(), Ok(vec![publish_requested()]));
}

#[test]
fn a_scheduled_post_that_falls_due_starts_publishing() {
    check(
        &history(Status::Scheduled),
        Command::Publish {
            trigger: PublishTrigger::Schedule,
        },
        Ok(vec![Event::PublishRequested {
            trigger: PublishTrigger::Schedule,
        }]),
    );
}

#[test]
fn publishing_a_failed_post_again_is_allowed() {
    check(
        &history(Status::Failed),
        publish(),
        Ok(vec![publish_requested()]),
    );
}

#[test]
fn publishing_a_published_post_again_is_refused() {
    check(
        &history(Status::Published),
        publish(),
        refused(Status::Published, Action::Publish),
    );
}

#[test]
fn publishing_a_post_already_being_published_is_refused() {
    check(
        &history(Status::Publishing),
        publish(),
        refused(Status::Publishing, Action::Publish),
    );
}

// ---------------------------------------------------------------------------
// Cancelling.
// ---------------------------------------------------------------------------

#[test]
fn cancelling_a_draft_records_it() {
    check(&[created()], Command::Cancel, Ok(vec![Event::Cancelled]));
}

#[test]
fn cancelling_a_scheduled_post_records_it() {
    check(
        &history(Status::Scheduled),
        Command::Cancel,
        Ok(vec![Event::Cancelled]),
    );
}

#[test]
fn cancelling_a_post_being_published_is_refused() {
    check(
        &history(Status::Publishing),
        Command::Cancel,
        refused(Status::Publishing, Action::Cancel),
    );
}

// ---------------------------------------------------------------------------
// Recording the network's answer.
// ---------------------------------------------------------------------------

#[test]
fn recording_the_publication_of_a_post_being_published_records_it() {
    check(
        &history(Status::Publishing),
        record_published("n-1"),
        Ok(vec![published("n-1")]),
    );
}

#[test]
fn a_publication_may_be_recorded_without_a_url() {
    check(
        &history(Status::Publishing),
        Command::RecordPublished {
            network_post_id: "n-1".into(),
            url: None,
        },
        Ok(vec![Event::Published {
            network_post_id: "n-1".into(),
            url: None,
        }]),
    );
}

#[test]
fn an_empty_network_post_id_is_refused() {
    check(
        &history(Status::Publishing),
        record_published(""),
        Err(Rejection::EmptyNetworkId),
    );
}

#[test]
fn a_network_post_id_of_only_white_space_is_refused() {
    check(
        &history(Status::Publishing),
        record_published("  "),
        Err(Rejection::EmptyNetworkId),
    );
}

#[test]
fn recording_the_failure_of_a_post_being_published_records_it() {
    check(
        &history(Status::Publishing),
        record_failed("rate limited"),
        Ok(vec![failed("rate limited")]),
    );
}

#[test]
fn an_empty_failure_reason_is_refused() {
    check(
        &history(Status::Publishing),
        record_failed(""),
        Err(Rejection::EmptyReason),
    );
}

#[test]
fn a_failure_reason_of_only_white_space_is_refused() {
    check(
        &history(Status::Publishing),
        record_failed(" \n"),
        Err(Rejection::EmptyReason),
    );
}

#[test]
fn recording_an_outcome_for_a_draft_is_refused() {
    check(
        &[created()],
        record_published("n-1"),
        refused(Status::Draft, Action::RecordOutcome),
    );
}

#[test]
fn recording_an_outcome_twice_is_refused() {
    check(
        &history(Status::Published),
        record_failed("late"),
        refused(Status::Published, Action::RecordOutcome),
    );
}

#[test]
fn a_bad_outcome_for_a_post_not_being_published_is_refused_as_a_transition() {
    check(
        &[created()],
        record_failed(""),
        refused(Status::Draft, Action::RecordOutcome),
    );
}

// ---------------------------------------------------------------------------
// Every state against every command.
// ---------------------------------------------------------------------------

/// The commands that move a post, each with the action a refusal names, the event it
/// records when allowed, and the status that event leads to.
fn moves() -> Vec<(Command, Action, Event, Status)> {
    vec![
        (edit("Hi"), Action::Edit, edited("Hi"), Status::Draft),
        (
            schedule(tomorrow()),
            Action::Schedule,
            scheduled(tomorrow()),
            Status::Scheduled,
        ),
        (
            publish(),
            Action::Publish,
            publish_requested(),
            Status::Publishing,
        ),
        (
            Command::Cancel,
            Action::Cancel,
            Event::Cancelled,
            Status::Cancelled,
        ),
        (
            record_published("n-1"),
            Action::RecordOutcome,
            published("n-1"),
            Status::Published,
        ),
        (
            record_failed("boom"),
            Action::RecordOutcome,
            failed("boom"),
            Status::Failed,
        ),
    ]
}

/// Which commands each state allows. This is the life cycle in one place:
/// draft and scheduled may be edited, (re)scheduled, published or cancelled; a post
/// being published only waits for the network's answer; a failed post may be
/// published again; published and cancelled posts are final.
fn allowed(status: Status, action: Action) -> bool {
    match status {
        Status::Draft | Status::Scheduled => matches!(
            action,
            Action::Edit | Action::Schedule | Action::Publish | Action::Cancel
        ),
        Status::Publishing => action == Action::RecordOutcome,
        Status::Failed => action == Action::Publish,
        Status::Published | Status::Cancelled | Status::Absent => false,
        // The delivery states take only the delivery commands, tested below.
        Status::RetryScheduled | Status::Unconfirmed | Status::Removed => false,
    }
}

#[test]
fn every_state_allows_exactly_its_moves_and_refuses_the_rest_naming_state_and_action() {
    let mut legal = 0;
    let mut illegal = 0;
    for from in EXISTING {
        for (command, action, event, _) in moves() {
            let then = if allowed(from, action) {
                legal += 1;
                Ok(vec![event])
            } else {
                illegal += 1;
                refused(from, action)
            };
            check(&history(from), command, then);
        }
    }
    // Draft 4 + scheduled 4 + publishing 2 + failed 1 of the 6 × 6 cells.
    assert_eq!((legal, illegal), (11, 25));
}

#[test]
fn every_allowed_move_leads_to_the_status_it_names() {
    for from in EXISTING {
        for (_, action, event, to) in moves() {
            if !allowed(from, action) {
                continue;
            }
            let state = fold(&[history(from), vec![event]].concat());
            // An edit keeps the status the post had.
            let to = if action == Action::Edit { from } else { to };
            assert_eq!(state.status, to, "{from} then {action}");
        }
    }
}

// ---------------------------------------------------------------------------
// The state the events fold into, and the stable names.
// ---------------------------------------------------------------------------

#[test]
fn a_post_without_events_is_absent() {
    assert_eq!(fold(&[]).status, Status::Absent);
}

#[test]
fn a_scheduled_post_remembers_its_publish_time() {
    let later = tomorrow() + TimeDelta::hours(3);
    let state = fold(&[created(), scheduled(tomorrow()), scheduled(later)]);
    assert_eq!(state.status, Status::Scheduled);
    assert_eq!(state.publish_at, Some(later));
}

#[test]
fn editing_does_not_change_where_a_post_stands() {
    let state = fold(&[created(), scheduled(tomorrow()), edited("Hi")]);
    assert_eq!(state.status, Status::Scheduled);
    assert_eq!(state.publish_at, Some(tomorrow()));
}

#[test]
fn a_failed_post_published_again_goes_back_to_publishing() {
    let state = fold(&[history(Status::Failed), vec![publish_requested()]].concat());
    assert_eq!(state.status, Status::Publishing);
}

#[test]
fn every_status_has_its_stable_name() {
    let table = [
        (Status::Absent, "absent"),
        (Status::Draft, "draft"),
        (Status::Scheduled, "scheduled"),
        (Status::Publishing, "publishing"),
        (Status::Published, "published"),
        (Status::Failed, "failed"),
        (Status::Cancelled, "cancelled"),
        (Status::RetryScheduled, "failed_retryable"),
        (Status::Unconfirmed, "unconfirmed"),
        (Status::Removed, "removed"),
    ];
    for (status, name) in table {
        assert_eq!(status.as_str(), name);
        assert_eq!(status.to_string(), name);
    }
}

#[test]
fn every_rejection_has_its_stable_code() {
    let table = [
        (Rejection::AlreadyExists, "post_already_exists"),
        (Rejection::NotFound, "post_not_found"),
        (Rejection::BadBody, "invalid_post_body"),
        (Rejection::PublishTimeInPast, "publish_time_in_past"),
        (Rejection::EmptyReason, "invalid_failure_reason"),
        (Rejection::EmptyNetworkId, "invalid_network_post_id"),
        (
            Rejection::InvalidTransition {
                from: Status::Draft,
                action: Action::Edit,
            },
            "invalid_post_transition",
        ),
        (Rejection::AttemptInFlight, "delivery_attempt_in_flight"),
        (Rejection::AttemptNotDue, "delivery_attempt_not_due"),
    ];
    for (rejection, code) in table {
        assert_eq!(rejection.code(), code, "{rejection:?}");
    }
}

#[test]
fn a_refused_transition_says_what_was_attempted_and_from_where() {
    let rejection = Rejection::InvalidTransition {
        from: Status::Published,
        action: Action::RecordOutcome,
    };
    assert_eq!(
        rejection.to_string(),
        "cannot record the outcome of a post that is published"
    );
}

// ---------------------------------------------------------------------------
// Delivery attempts: started before the network is called, then failed (retryable
// or permanent), unconfirmed or published; unconfirmed is never attempted again.
// ---------------------------------------------------------------------------

#[test]
fn a_post_being_published_starts_its_first_attempt() {
    check(
        &history(Status::Publishing),
        start_attempt(),
        Ok(vec![attempt_started(1)]),
    );
}

#[test]
fn a_second_attempt_is_refused_while_one_is_in_flight() {
    let given = [history(Status::Publishing), vec![attempt_started(1)]].concat();
    check(&given, start_attempt(), Err(Rejection::AttemptInFlight));
}

#[test]
fn a_transient_failure_schedules_the_next_attempt() {
    let given = [history(Status::Publishing), vec![attempt_started(1)]].concat();
    let at = now() + TimeDelta::seconds(30);
    check(
        &given,
        record_attempt_failed(Some(at)),
        Ok(vec![attempt_failed(1, Some(at))]),
    );
    assert_eq!(
        fold(&[given, vec![attempt_failed(1, Some(at))]].concat()).status,
        Status::RetryScheduled
    );
}

#[test]
fn a_permanent_failure_fails_the_post() {
    let given = [history(Status::Publishing), vec![attempt_started(1)]].concat();
    let state = fold(&[given, vec![attempt_failed(1, None)]].concat());
    assert_eq!(state.status, Status::Failed);
}

#[test]
fn the_next_attempt_is_refused_before_it_is_due() {
    let mut given = history(Status::RetryScheduled);
    given[3] = attempt_failed(1, Some(now() + TimeDelta::seconds(1)));
    check(&given, start_attempt(), Err(Rejection::AttemptNotDue));
}

#[test]
fn the_next_attempt_starts_once_it_is_due_with_the_next_number() {
    let mut given = history(Status::RetryScheduled);
    given[3] = attempt_failed(1, Some(now()));
    check(&given, start_attempt(), Ok(vec![attempt_started(2)]));
}

#[test]
fn a_failure_without_an_attempt_in_flight_is_refused() {
    check(
        &history(Status::Publishing),
        record_attempt_failed(None),
        refused(Status::Publishing, Action::RecordOutcome),
    );
}

#[test]
fn an_attempt_with_an_unknown_outcome_is_unconfirmed() {
    let given = [history(Status::Publishing), vec![attempt_started(1)]].concat();
    check(
        &given,
        Command::RecordUnconfirmed {
            reason: "timeout".into(),
        },
        Ok(vec![unconfirmed(1)]),
    );
}

#[test]
fn an_unconfirmed_delivery_is_never_attempted_again() {
    check(
        &history(Status::Unconfirmed),
        start_attempt(),
        refused(Status::Unconfirmed, Action::StartAttempt),
    );
    check(
        &history(Status::Unconfirmed),
        Command::RetryDelivery,
        refused(Status::Unconfirmed, Action::Retry),
    );
}

#[test]
fn an_operator_resolves_an_unconfirmed_delivery_as_published() {
    check(
        &history(Status::Unconfirmed),
        Command::ResolveUnconfirmed {
            outcome: Resolution::Published {
                network_post_id: "n-1".into(),
                url: Some("https://example.com/p/1".into()),
            },
        },
        Ok(vec![published("n-1")]),
    );
}

#[test]
fn an_operator_resolves_an_unconfirmed_delivery_as_failed() {
    check(
        &history(Status::Unconfirmed),
        Command::ResolveUnconfirmed {
            outcome: Resolution::Failed {
                reason: "not on the timeline".into(),
            },
        },
        Ok(vec![failed("not on the timeline")]),
    );
}

#[test]
fn only_an_unconfirmed_delivery_can_be_resolved() {
    check(
        &history(Status::Published),
        Command::ResolveUnconfirmed {
            outcome: Resolution::Failed { reason: "x".into() },
        },
        refused(Status::Published, Action::Resolve),
    );
}

#[test]
fn an_operator_retries_a_failed_or_waiting_delivery() {
    for status in [Status::Failed, Status::RetryScheduled] {
        check(
            &history(status),
            Command::RetryDelivery,
            Ok(vec![publish_requested()]),
        );
    }
    check(
        &history(Status::Published),
        Command::RetryDelivery,
        refused(Status::Published, Action::Retry),
    );
}

#[test]
fn a_confirmation_publishes_an_unconfirmed_post_and_is_ignored_once_published() {
    let confirm = || Command::ConfirmDelivery {
        network_post_id: "n-1".into(),
        url: Some("https://example.com/p/1".into()),
    };
    check(
        &history(Status::Unconfirmed),
        confirm(),
        Ok(vec![published("n-1")]),
    );
    check(
        &history(Status::RetryScheduled),
        confirm(),
        Ok(vec![published("n-1")]),
    );
    check(&history(Status::Published), confirm(), Ok(vec![]));
    check(
        &history(Status::Draft),
        confirm(),
        refused(Status::Draft, Action::Confirm),
    );
}

#[test]
fn a_removal_is_recorded_once_on_a_published_post() {
    let remove = || Command::RecordRemoved {
        network_post_id: "n-1".into(),
    };
    check(
        &history(Status::Published),
        remove(),
        Ok(vec![Event::Removed {
            network_post_id: "n-1".into(),
        }]),
    );
    check(&history(Status::Removed), remove(), Ok(vec![]));
    check(
        &history(Status::Scheduled),
        remove(),
        refused(Status::Scheduled, Action::Remove),
    );
}
