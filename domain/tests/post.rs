//! A post's life cycle, one test per rule: given these events, when this command, then
//! these events or this rejection.
//!
//! The transitions are also checked as a whole table, every state against every
//! command, so that a move made legal or illegal by accident shows up as one wrong cell.
//! Every test runs at the same instant, `NOW`.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use domain::post::{
    Action, Command, Ctx, DeliveryState, Event, MAX_BODY_CHARS, MAX_TARGETS, PublishTrigger,
    Rejection, Resolution, State, Status, decide, evolve, status_of,
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

fn channel(slug: &str) -> Channel {
    Channel::new(slug).expect("a valid channel")
}

fn mastodon() -> Channel {
    channel("mastodon")
}

fn create(body: &str) -> Command {
    Command::Create {
        channels: vec![linkedin()],
        body: body.into(),
        campaign_id: Some(campaign()),
    }
}

fn created() -> Event {
    Event::Created {
        channels: vec![linkedin()],
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
        channel: None,
    }
}

/// The event of an operator's retry of one target.
fn retry_requested(on: Channel) -> Event {
    Event::PublishRequested {
        trigger: PublishTrigger::Manual,
        channel: Some(on),
    }
}

fn record_published(network_post_id: &str) -> Command {
    Command::RecordPublished {
        channel: linkedin(),
        network_post_id: network_post_id.into(),
        url: Some("https://example.com/p/1".into()),
    }
}

fn published(network_post_id: &str) -> Event {
    published_on(linkedin(), network_post_id)
}

fn published_on(on: Channel, network_post_id: &str) -> Event {
    Event::Published {
        channel: Some(on),
        network_post_id: network_post_id.into(),
        url: Some("https://example.com/p/1".into()),
    }
}

fn record_failed(reason: &str) -> Command {
    Command::RecordFailed {
        channel: linkedin(),
        reason: reason.into(),
    }
}

fn failed(reason: &str) -> Event {
    failed_on(linkedin(), reason)
}

fn failed_on(on: Channel, reason: &str) -> Event {
    Event::PublishFailed {
        channel: Some(on),
        reason: reason.into(),
    }
}

fn refused(from: Status, action: Action) -> Result<Vec<Event>, Rejection> {
    Err(Rejection::InvalidTransition { from, action })
}

/// A delivery command refused by the state of the (only) target's delivery.
fn refused_delivery(from: DeliveryState, action: Action) -> Result<Vec<Event>, Rejection> {
    Err(Rejection::InvalidDeliveryTransition {
        channel: linkedin(),
        from,
        action,
    })
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
                channel: Some(linkedin()),
                network_post_id: "n-1".into(),
            },
        ],
        Status::PartiallyPublished => vec![
            created_for(&[linkedin(), mastodon()]),
            publish_requested(),
            published("n-1"),
            failed_on(mastodon(), "refused"),
        ],
    }
}

fn created_for(channels: &[Channel]) -> Event {
    Event::Created {
        channels: channels.to_vec(),
        body: "Hello".into(),
        campaign_id: None,
    }
}

fn start_attempt() -> Command {
    start_attempt_on(linkedin())
}

fn start_attempt_on(on: Channel) -> Command {
    Command::StartAttempt {
        channel: on,
        network: "mastodon".into(),
    }
}

fn attempt_started(attempt: u32) -> Event {
    attempt_started_on(linkedin(), attempt)
}

fn attempt_started_on(on: Channel, attempt: u32) -> Event {
    Event::DeliveryAttemptStarted {
        channel: Some(on),
        attempt,
        network: "mastodon".into(),
    }
}

fn attempt_failed(attempt: u32, retry_at: Option<DateTime<Utc>>) -> Event {
    attempt_failed_on(linkedin(), attempt, retry_at)
}

fn attempt_failed_on(on: Channel, attempt: u32, retry_at: Option<DateTime<Utc>>) -> Event {
    Event::DeliveryAttemptFailed {
        channel: Some(on),
        attempt,
        code: "network_unavailable".into(),
        reason: "503".into(),
        retry_at,
    }
}

fn record_attempt_failed(retry_at: Option<DateTime<Utc>>) -> Command {
    record_attempt_failed_on(linkedin(), retry_at)
}

fn record_attempt_failed_on(on: Channel, retry_at: Option<DateTime<Utc>>) -> Command {
    Command::RecordAttemptFailed {
        channel: on,
        code: "network_unavailable".into(),
        reason: "503".into(),
        retry_at,
    }
}

fn unconfirmed(attempt: u32) -> Event {
    unconfirmed_on(linkedin(), attempt)
}

fn unconfirmed_on(on: Channel, attempt: u32) -> Event {
    Event::DeliveryUnconfirmed {
        channel: Some(on),
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
        channels: vec![linkedin()],
        body: "Hello".into(),
        campaign_id: None,
    };
    let event = Event::Created {
        channels: vec![linkedin()],
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
        channels: vec![linkedin()],
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
            channel: None,
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
            channel: linkedin(),
            network_post_id: "n-1".into(),
            url: None,
        },
        Ok(vec![Event::Published {
            channel: Some(linkedin()),
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
        refused_delivery(DeliveryState::Published, Action::RecordOutcome),
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
        Status::RetryScheduled
        | Status::Unconfirmed
        | Status::Removed
        | Status::PartiallyPublished => false,
    }
}

/// How a state refuses an action: a delivery command on a post whose delivery started
/// names the target's delivery state, anything else the post's status.
fn refusal(from: Status, action: Action) -> Result<Vec<Event>, Rejection> {
    let delivery = match from {
        Status::Publishing => Some(DeliveryState::Pending),
        Status::Published => Some(DeliveryState::Published),
        Status::Failed => Some(DeliveryState::FailedPermanent),
        _ => None,
    };
    match delivery {
        Some(delivery) if action == Action::RecordOutcome => refused_delivery(delivery, action),
        _ => refused(from, action),
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
                refusal(from, action)
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
        (Status::PartiallyPublished, "partially_published"),
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
        (Rejection::BadChannels, "invalid_post_channels"),
        (
            Rejection::UnknownChannel(linkedin()),
            "unknown_post_channel",
        ),
        (Rejection::ChannelRequired, "channel_required"),
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
        (
            Rejection::InvalidDeliveryTransition {
                channel: linkedin(),
                from: DeliveryState::Unconfirmed,
                action: Action::Retry,
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
        refused_delivery(DeliveryState::Pending, Action::RecordOutcome),
    );
}

#[test]
fn an_attempt_with_an_unknown_outcome_is_unconfirmed() {
    let given = [history(Status::Publishing), vec![attempt_started(1)]].concat();
    check(
        &given,
        Command::RecordUnconfirmed {
            channel: linkedin(),
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
        refused_delivery(DeliveryState::Unconfirmed, Action::StartAttempt),
    );
    check(
        &history(Status::Unconfirmed),
        Command::RetryDelivery { channel: None },
        refused_delivery(DeliveryState::Unconfirmed, Action::Retry),
    );
}

#[test]
fn an_operator_resolves_an_unconfirmed_delivery_as_published() {
    check(
        &history(Status::Unconfirmed),
        Command::ResolveUnconfirmed {
            channel: None,
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
            channel: Some(linkedin()),
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
            channel: None,
            outcome: Resolution::Failed { reason: "x".into() },
        },
        refused_delivery(DeliveryState::Published, Action::Resolve),
    );
}

#[test]
fn an_operator_retries_a_failed_or_waiting_delivery() {
    for status in [Status::Failed, Status::RetryScheduled] {
        check(
            &history(status),
            Command::RetryDelivery { channel: None },
            Ok(vec![retry_requested(linkedin())]),
        );
    }
    check(
        &history(Status::Published),
        Command::RetryDelivery { channel: None },
        refused_delivery(DeliveryState::Published, Action::Retry),
    );
}

#[test]
fn a_confirmation_publishes_an_unconfirmed_post_and_is_ignored_once_published() {
    let confirm = || Command::ConfirmDelivery {
        channel: None,
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
        channel: None,
        network_post_id: "n-1".into(),
    };
    check(
        &history(Status::Published),
        remove(),
        Ok(vec![Event::Removed {
            channel: Some(linkedin()),
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

// ---------------------------------------------------------------------------
// Several targets: one delivery per channel, each with its own attempts, and the
// post's status derived from all of them.
// ---------------------------------------------------------------------------

fn two_targets() -> Vec<Channel> {
    vec![linkedin(), mastodon()]
}

/// A post for LinkedIn and Mastodon whose publishing was requested.
fn publishing_to_both() -> Vec<Event> {
    vec![created_for(&two_targets()), publish_requested()]
}

fn create_for(channels: Vec<Channel>) -> Command {
    Command::Create {
        channels,
        body: "Hello".into(),
        campaign_id: None,
    }
}

fn deliveries(state: &State) -> Vec<Option<DeliveryState>> {
    state.targets.iter().map(|t| t.delivery).collect()
}

#[test]
fn a_post_may_target_several_channels_in_the_order_given() {
    let channels = vec![mastodon(), linkedin(), channel("newsletter-eu")];
    check(
        &[],
        create_for(channels.clone()),
        Ok(vec![created_for(&channels)]),
    );
    let state = fold(&[created_for(&channels)]);
    let order: Vec<&Channel> = state.targets.iter().map(|t| &t.channel).collect();
    assert_eq!(order, channels.iter().collect::<Vec<_>>());
    assert_eq!(deliveries(&state), [None, None, None]);
}

#[test]
fn a_post_without_channels_is_refused() {
    check(&[], create_for(vec![]), Err(Rejection::BadChannels));
}

#[test]
fn a_post_naming_a_channel_twice_is_refused() {
    check(
        &[],
        create_for(vec![linkedin(), mastodon(), linkedin()]),
        Err(Rejection::BadChannels),
    );
}

#[test]
fn a_post_may_have_the_maximum_number_of_channels_but_not_one_more() {
    let many = |n: usize| {
        (0..n)
            .map(|i| channel(&format!("c{i}")))
            .collect::<Vec<_>>()
    };
    check(
        &[],
        create_for(many(MAX_TARGETS)),
        Ok(vec![created_for(&many(MAX_TARGETS))]),
    );
    check(
        &[],
        create_for(many(MAX_TARGETS + 1)),
        Err(Rejection::BadChannels),
    );
}

#[test]
fn publishing_starts_a_delivery_to_every_target() {
    let state = fold(&publishing_to_both());
    assert_eq!(state.status, Status::Publishing);
    assert_eq!(
        deliveries(&state),
        [Some(DeliveryState::Pending), Some(DeliveryState::Pending)]
    );
}

#[test]
fn each_target_counts_its_own_attempts() {
    let given = [
        publishing_to_both(),
        vec![
            attempt_started_on(linkedin(), 1),
            attempt_failed_on(linkedin(), 1, Some(now())),
        ],
    ]
    .concat();
    check(
        &given,
        start_attempt_on(mastodon()),
        Ok(vec![attempt_started_on(mastodon(), 1)]),
    );
    check(
        &given,
        start_attempt_on(linkedin()),
        Ok(vec![attempt_started_on(linkedin(), 2)]),
    );
}

#[test]
fn an_attempt_in_flight_on_one_target_does_not_hold_up_another() {
    let given = [
        publishing_to_both(),
        vec![attempt_started_on(linkedin(), 1)],
    ]
    .concat();
    check(
        &given,
        start_attempt_on(linkedin()),
        Err(Rejection::AttemptInFlight),
    );
    check(
        &given,
        start_attempt_on(mastodon()),
        Ok(vec![attempt_started_on(mastodon(), 1)]),
    );
}

#[test]
fn a_delivery_command_for_a_channel_the_post_does_not_target_is_refused() {
    check(
        &publishing_to_both(),
        start_attempt_on(channel("x")),
        Err(Rejection::UnknownChannel(channel("x"))),
    );
}

#[test]
fn one_target_failing_for_good_while_the_other_published_makes_the_post_partially_published() {
    let given = [
        publishing_to_both(),
        vec![
            attempt_started_on(linkedin(), 1),
            published("n-1"),
            attempt_started_on(mastodon(), 1),
        ],
    ]
    .concat();
    check(
        &given,
        record_attempt_failed_on(mastodon(), None),
        Ok(vec![attempt_failed_on(mastodon(), 1, None)]),
    );
    let state = fold(&[given, vec![attempt_failed_on(mastodon(), 1, None)]].concat());
    assert_eq!(state.status, Status::PartiallyPublished);
    assert_eq!(
        deliveries(&state),
        [
            Some(DeliveryState::Published),
            Some(DeliveryState::FailedPermanent)
        ]
    );
}

#[test]
fn every_target_published_makes_the_post_published() {
    let state = fold(
        &[
            publishing_to_both(),
            vec![published("n-1"), published_on(mastodon(), "m-1")],
        ]
        .concat(),
    );
    assert_eq!(state.status, Status::Published);
}

#[test]
fn the_post_stays_publishing_while_any_target_is_still_in_flight() {
    let state = fold(&[publishing_to_both(), vec![published("n-1")]].concat());
    assert_eq!(state.status, Status::Publishing);
}

#[test]
fn the_derived_status_follows_its_rules_for_every_mix_of_target_states() {
    use DeliveryState::*;
    let table: &[(&[DeliveryState], Status)] = &[
        (&[Pending], Status::Publishing),
        (&[Publishing], Status::Publishing),
        (&[FailedRetryable], Status::RetryScheduled),
        (&[Unconfirmed], Status::Unconfirmed),
        (&[Published], Status::Published),
        (&[FailedPermanent], Status::Failed),
        (&[Removed], Status::Removed),
        (&[Published, Pending], Status::Publishing),
        (&[FailedRetryable, Publishing], Status::Publishing),
        (&[Unconfirmed, Pending], Status::Publishing),
        (&[Published, FailedRetryable], Status::RetryScheduled),
        (&[Unconfirmed, FailedRetryable], Status::RetryScheduled),
        (&[Published, Unconfirmed], Status::Unconfirmed),
        (&[FailedPermanent, Unconfirmed], Status::Unconfirmed),
        (&[Published, Published, Published], Status::Published),
        (&[Published, FailedPermanent], Status::PartiallyPublished),
        (
            &[FailedPermanent, Published, Removed],
            Status::PartiallyPublished,
        ),
        (&[Published, Removed], Status::PartiallyPublished),
        (&[Removed, FailedPermanent], Status::Removed),
        (&[Removed, Removed], Status::Removed),
        (&[FailedPermanent, FailedPermanent], Status::Failed),
    ];
    for (states, status) in table {
        assert_eq!(status_of(states.iter().copied()), *status, "{states:?}");
    }
}

#[test]
fn publishing_a_partially_published_post_again_is_refused() {
    check(
        &history(Status::PartiallyPublished),
        publish(),
        refused(Status::PartiallyPublished, Action::Publish),
    );
}

#[test]
fn publishing_a_failed_post_again_restarts_every_target() {
    let given = [
        publishing_to_both(),
        vec![failed("refused"), failed_on(mastodon(), "refused")],
    ]
    .concat();
    assert_eq!(fold(&given).status, Status::Failed);
    check(&given, publish(), Ok(vec![publish_requested()]));
    let state = fold(&[given, vec![publish_requested()]].concat());
    assert_eq!(
        deliveries(&state),
        [Some(DeliveryState::Pending), Some(DeliveryState::Pending)]
    );
}

#[test]
fn retrying_a_post_with_several_targets_needs_the_channel() {
    check(
        &history(Status::PartiallyPublished),
        Command::RetryDelivery { channel: None },
        Err(Rejection::ChannelRequired),
    );
    check(
        &history(Status::PartiallyPublished),
        Command::RetryDelivery {
            channel: Some(channel("x")),
        },
        Err(Rejection::UnknownChannel(channel("x"))),
    );
}

#[test]
fn retrying_one_target_leaves_the_other_untouched() {
    let given = history(Status::PartiallyPublished);
    check(
        &given,
        Command::RetryDelivery {
            channel: Some(mastodon()),
        },
        Ok(vec![retry_requested(mastodon())]),
    );
    check(
        &given,
        Command::RetryDelivery {
            channel: Some(linkedin()),
        },
        Err(Rejection::InvalidDeliveryTransition {
            channel: linkedin(),
            from: DeliveryState::Published,
            action: Action::Retry,
        }),
    );
    let state = fold(&[given, vec![retry_requested(mastodon())]].concat());
    assert_eq!(state.status, Status::Publishing);
    assert_eq!(
        deliveries(&state),
        [Some(DeliveryState::Published), Some(DeliveryState::Pending)]
    );
    assert_eq!(state.targets[0].network_post_id.as_deref(), Some("n-1"));
}

#[test]
fn resolving_one_unconfirmed_target_leaves_the_other_untouched() {
    let given = [
        publishing_to_both(),
        vec![
            attempt_started_on(linkedin(), 1),
            unconfirmed_on(linkedin(), 1),
            attempt_started_on(mastodon(), 1),
            unconfirmed_on(mastodon(), 1),
        ],
    ]
    .concat();
    let resolve = |channel| Command::ResolveUnconfirmed {
        channel,
        outcome: Resolution::Failed {
            reason: "not there".into(),
        },
    };
    check(&given, resolve(None), Err(Rejection::ChannelRequired));
    check(
        &given,
        resolve(Some(mastodon())),
        Ok(vec![failed_on(mastodon(), "not there")]),
    );
    let state = fold(&[given, vec![failed_on(mastodon(), "not there")]].concat());
    assert_eq!(state.status, Status::Unconfirmed);
    assert_eq!(
        deliveries(&state),
        [
            Some(DeliveryState::Unconfirmed),
            Some(DeliveryState::FailedPermanent)
        ]
    );
}

#[test]
fn an_unnamed_confirmation_lands_on_the_one_target_waiting_for_an_answer() {
    let confirm = |id: &str| Command::ConfirmDelivery {
        channel: None,
        network_post_id: id.into(),
        url: Some("https://example.com/p/1".into()),
    };
    let one_waiting = [
        publishing_to_both(),
        vec![
            published("n-1"),
            attempt_started_on(mastodon(), 1),
            unconfirmed_on(mastodon(), 1),
        ],
    ]
    .concat();
    check(
        &one_waiting,
        confirm("m-1"),
        Ok(vec![published_on(mastodon(), "m-1")]),
    );
    // A repeat of the confirmation already recorded changes nothing.
    check(&one_waiting, confirm("n-1"), Ok(vec![]));
    // Two deliveries waiting: the callback must name its channel.
    check(
        &publishing_to_both(),
        confirm("m-1"),
        Err(Rejection::ChannelRequired),
    );
    check(
        &publishing_to_both(),
        Command::ConfirmDelivery {
            channel: Some(mastodon()),
            network_post_id: "m-1".into(),
            url: None,
        },
        Ok(vec![Event::Published {
            channel: Some(mastodon()),
            network_post_id: "m-1".into(),
            url: None,
        }]),
    );
}

#[test]
fn an_unnamed_removal_lands_on_the_target_holding_the_network_id() {
    let given = [
        publishing_to_both(),
        vec![published("n-1"), published_on(mastodon(), "m-1")],
    ]
    .concat();
    let remove = |id: &str| Command::RecordRemoved {
        channel: None,
        network_post_id: id.into(),
    };
    let removed = Event::Removed {
        channel: Some(mastodon()),
        network_post_id: "m-1".into(),
    };
    check(&given, remove("m-1"), Ok(vec![removed.clone()]));
    check(&given, remove("unknown"), Err(Rejection::ChannelRequired));
    let state = fold(&[given, vec![removed]].concat());
    assert_eq!(state.status, Status::PartiallyPublished);
}

#[test]
fn delivery_events_without_a_channel_are_about_the_first_target() {
    // As stored before posts had several targets.
    let legacy = [
        created(),
        publish_requested(),
        Event::DeliveryAttemptStarted {
            channel: None,
            attempt: 1,
            network: "mastodon".into(),
        },
        Event::DeliveryAttemptFailed {
            channel: None,
            attempt: 1,
            code: "network_unavailable".into(),
            reason: "503".into(),
            retry_at: Some(now()),
        },
    ];
    let state = fold(&legacy);
    assert_eq!(state.status, Status::RetryScheduled);
    assert_eq!(state.targets[0].attempts, 1);
    assert_eq!(state.targets[0].retry_at, Some(now()));
    check(&legacy, start_attempt(), Ok(vec![attempt_started(2)]));
    let published = fold(
        &[
            legacy.to_vec(),
            vec![Event::Published {
                channel: None,
                network_post_id: "n-1".into(),
                url: None,
            }],
        ]
        .concat(),
    );
    assert_eq!(published.status, Status::Published);
}
