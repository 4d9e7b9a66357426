//! The background workflows of the embedded deployment, driven over HTTP: the
//! publisher and the timers (scheduled posts and reservation expiry, on the command
//! side's manual clock), including restarts on the same data directory and the
//! missed-timer sweep at start.

use std::time::Duration;

use auth::Role;
use chrono::{TimeDelta, Utc};
use std::sync::Arc;

use cli::app::Stores;
use command_api::{Clock, CommandService, Envelope};
use domain::post::{Command, PublishTrigger};
use domain::{PostId, StreamName, TenantId};
use eventlog::RecordedEvent;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use crate::support::{ManualClock, TestApp, spawn_app, spawn_app_in};

/// How long a workflow gets to act before a test gives up on it.
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_post_is_delivered_by_the_in_process_publisher() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let token = app.token(tenant, Role::Editor);
    let post_id = create_post(&app, &token, "newsletter-eu").await;

    app.ok_command(&token, "publish-post", &json!({"post_id": post_id}))
        .await;
    let post = wait_for_post(&app, &token, post_id, |p| p["status"] == "published").await;

    assert_eq!(
        post["network_post_id"],
        format!("local-{post_id}"),
        "{post}"
    );
    assert_eq!(
        post["url"],
        format!("local://newsletter-eu/{post_id}"),
        "{post}"
    );
    assert_eq!(post["failure_reason"], Value::Null, "{post}");
    assert_eq!(
        event_types(&post_stream(&app, tenant, post_id).await),
        [
            "post.created",
            "post.publish_requested",
            "post.delivery_attempt_started",
            "post.published"
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_several_channels_is_delivered_to_each_of_them() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let token = app.token(tenant, Role::Editor);
    let answer = app
        .ok_command(
            &token,
            "create-post",
            &json!({"channels": ["newsletter-eu", "linkedin"], "body": "Winter release"}),
        )
        .await;
    let post_id: Uuid = answer["post_id"]
        .as_str()
        .expect("post id")
        .parse()
        .expect("uuid");
    app.ok_command(&token, "publish-post", &json!({"post_id": post_id}))
        .await;
    let post = wait_for_post(&app, &token, post_id, |p| p["status"] == "published").await;

    let targets = post["targets"].as_array().expect("targets");
    let channels: Vec<&Value> = targets.iter().map(|t| &t["channel"]).collect();
    assert_eq!(channels, [&json!("newsletter-eu"), &json!("linkedin")]);
    for target in targets {
        assert_eq!(target["state"], "published", "{post}");
        assert_eq!(target["network"], "local", "{post}");
        assert_eq!(
            target["attempts"].as_array().map(Vec::len),
            Some(1),
            "{post}"
        );
        let channel = target["channel"].as_str().expect("channel");
        assert_eq!(
            target["url"],
            format!("local://{channel}/{post_id}"),
            "{post}"
        );
    }
    assert_eq!(post["channel"], "newsletter-eu");
    assert_eq!(post["delivery"]["state"], "published");
    let types = event_types(&post_stream(&app, tenant, post_id).await);
    let count = |t: &str| types.iter().filter(|e| *e == t).count();
    assert_eq!(count("post.publish_requested"), 1, "{types:?}");
    assert_eq!(count("post.delivery_attempt_started"), 2, "{types:?}");
    assert_eq!(count("post.published"), 2, "{types:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timers_publish_a_due_post_but_not_a_rescheduled_or_cancelled_one() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let token = app.token(tenant, Role::Editor);
    let now = app.clock.now();

    let due = create_post(&app, &token, "linkedin").await;
    app.ok_command(
        &token,
        "schedule-post",
        &json!({"post_id": due, "publish_at": now + TimeDelta::minutes(2)}),
    )
    .await;
    // First scheduled before the due post, then moved past it: a timer that kept the
    // old time would start it first.
    let moved = create_post(&app, &token, "linkedin").await;
    app.ok_command(
        &token,
        "schedule-post",
        &json!({"post_id": moved, "publish_at": now + TimeDelta::minutes(1)}),
    )
    .await;
    app.ok_command(
        &token,
        "schedule-post",
        &json!({"post_id": moved, "publish_at": now + TimeDelta::minutes(10)}),
    )
    .await;
    let cancelled = create_post(&app, &token, "linkedin").await;
    app.ok_command(
        &token,
        "schedule-post",
        &json!({"post_id": cancelled, "publish_at": now + TimeDelta::minutes(1)}),
    )
    .await;
    let last = app
        .ok_command(&token, "cancel-post", &json!({"post_id": cancelled}))
        .await;
    // The timers the workflow reads include every change before time moves.
    let position = last["position"].as_u64().expect("position");
    app.ok_get(&token, &format!("/v1/posts?min_position={position}"))
        .await;

    app.clock.advance(TimeDelta::minutes(3));
    let published = wait_for_post(&app, &token, due, |p| p["status"] == "published").await;
    assert_eq!(published["network_post_id"], format!("local-{due}"));
    assert_eq!(
        event_types(&post_stream(&app, tenant, due).await),
        [
            "post.created",
            "post.scheduled",
            "post.publish_requested",
            "post.delivery_attempt_started",
            "post.published"
        ]
    );
    let head = app.event_count().await;
    let moved_view = app
        .ok_get(&token, &format!("/v1/posts/{moved}?min_position={head}"))
        .await;
    assert_eq!(
        moved_view["status"], "scheduled",
        "fired early: {moved_view}"
    );
    assert!(
        !event_types(&post_stream(&app, tenant, moved).await)
            .contains(&"post.publish_requested".to_owned()),
        "the rescheduled post was started before its new time"
    );

    // Once its new time comes, the moved post goes out; the cancelled one never does.
    app.clock.advance(TimeDelta::minutes(8));
    wait_for_post(&app, &token, moved, |p| p["status"] == "published").await;
    let head = app.event_count().await;
    let cancelled_view = app
        .ok_get(
            &token,
            &format!("/v1/posts/{cancelled}?min_position={head}"),
        )
        .await;
    assert_eq!(cancelled_view["status"], "cancelled", "{cancelled_view}");
    assert_eq!(
        event_types(&post_stream(&app, tenant, cancelled).await),
        ["post.created", "post.scheduled", "post.cancelled"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timers_expire_a_reservation_past_its_ttl_and_free_its_amount() {
    const HARD: i64 = 100_000;
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let editor = app.token(tenant, Role::Editor);
    let period = domain::Period::containing(app.clock.now()).to_string();
    app.ok_command(
        &admin,
        "set-budget-limits",
        &json!({"soft_limit_micros": HARD, "hard_limit_micros": HARD, "period": period}),
    )
    .await;
    let reserved = app
        .ok_command(
            &editor,
            "reserve-budget",
            &json!({"amount_micros": HARD, "purpose": "held too long", "ttl_seconds": 60}),
        )
        .await;
    let reservation_id = reserved["reservation_id"].as_str().expect("id").to_owned();
    let position = reserved["position"].as_u64().expect("position");
    let budget = app
        .ok_get(
            &editor,
            &format!("/v1/budget?period={period}&min_position={position}"),
        )
        .await;
    assert_eq!(budget["available_micros"], 0, "{budget}");

    // Not yet due: the timer leaves it alone.
    app.clock.advance(TimeDelta::seconds(59));
    let refused = app
        .command(
            &editor,
            "reserve-budget",
            &json!({"amount_micros": 1, "purpose": "too early", "ttl_seconds": 60}),
        )
        .await;
    crate::support::assert_problem(
        refused,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "budget_exceeded",
    )
    .await;

    app.clock.advance(TimeDelta::seconds(2));
    let listed = poll(
        &app,
        &editor,
        &format!("/v1/budget/reservations?period={period}&status=all"),
        |v| v["items"][0]["status"] == "expired",
    )
    .await;
    let row = &listed["items"][0];
    assert_eq!(row["reservation_id"], reservation_id.as_str(), "{listed}");
    assert_eq!(row["actual_micros"], Value::Null, "{listed}");

    let head = app.event_count().await;
    let budget = app
        .ok_get(
            &editor,
            &format!("/v1/budget?period={period}&min_position={head}"),
        )
        .await;
    assert_eq!(budget["reserved_micros"], 0, "{budget}");
    assert_eq!(budget["committed_micros"], 0, "{budget}");
    assert_eq!(budget["available_micros"], HARD, "{budget}");
    assert_eq!(budget["status"], "ok", "{budget}");

    // The timer did it, not a later command.
    let stream = StreamName::budget(
        TenantId::from_uuid(tenant),
        domain::Period::containing(app.clock.now()),
    );
    let events = app
        .stores
        .store
        .read_stream(tenant, stream.as_str(), 0)
        .await
        .expect("budget stream");
    let expired: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.event_type == "budget.expired")
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].actor, workflows::timers::ACTOR);

    // The freed amount can be held again.
    app.ok_command(
        &editor,
        "reserve-budget",
        &json!({"amount_micros": HARD, "purpose": "the same amount again", "ttl_seconds": 60}),
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_cut_off_by_a_restart_is_reconciled_and_never_delivered_blindly() {
    let dir = TempDir::new().expect("temp dir");
    let clock = ManualClock::new(Utc::now());
    let tenant = Uuid::now_v7();

    let app = spawn_app_in(dir.path().to_path_buf(), clock.clone()).await;
    let token = app.token(tenant, Role::Editor);
    let post_id = create_post(&app, &token, "linkedin").await;
    app.stop().await;

    // A process requested publishing and started an attempt, then died before it
    // could record the outcome: whether the network got the post is unknown.
    let stores = Stores::open(&crate::support::test_settings(dir.path().to_path_buf()))
        .await
        .expect("stores");
    let service = CommandService::new(stores.store.clone(), Arc::new(clock.clone()));
    let envelope = Envelope::system(TenantId::from_uuid(tenant), "test", None);
    let post = PostId::from_uuid(post_id);
    for command in [
        Command::Publish {
            trigger: PublishTrigger::Manual,
        },
        Command::StartAttempt {
            channel: domain::Channel::new("linkedin").expect("channel"),
            network: "local".into(),
        },
    ] {
        service
            .post(&envelope, post, None, command)
            .await
            .expect("command");
    }
    drop(service);
    drop(stores);

    // The restarted publisher records the attempt unconfirmed and asks the network,
    // which (being local) has it: published once, with no second attempt.
    let app = spawn_app_in(dir.path().to_path_buf(), clock.clone()).await;
    let token = app.token(tenant, Role::Editor);
    let view = wait_for_post(&app, &token, post_id, |p| p["status"] == "published").await;
    assert_eq!(view["network_post_id"], format!("local-{post_id}"));
    assert_eq!(
        event_types(&post_stream(&app, tenant, post_id).await),
        [
            "post.created",
            "post.publish_requested",
            "post.delivery_attempt_started",
            "post.delivery_unconfirmed",
            "post.published"
        ]
    );

    // The restarted publisher still delivers new work.
    let other = create_post(&app, &token, "linkedin").await;
    app.ok_command(&token, "publish-post", &json!({"post_id": other}))
        .await;
    wait_for_post(&app, &token, other, |p| p["status"] == "published").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_due_long_before_the_process_started_fire_in_the_sweep_at_start() {
    let dir = TempDir::new().expect("temp dir");
    let clock = ManualClock::new(Utc::now());
    let tenant = Uuid::now_v7();

    let app = spawn_app_in(dir.path().to_path_buf(), clock.clone()).await;
    let admin = app.token(tenant, Role::Admin);
    let editor = app.token(tenant, Role::Editor);
    let now = clock.now();
    let period = domain::Period::containing(now);
    app.ok_command(
        &admin,
        "set-budget-limits",
        &json!({"soft_limit_micros": 1_000, "hard_limit_micros": 1_000}),
    )
    .await;
    let held = app
        .ok_command(
            &editor,
            "reserve-budget",
            &json!({"amount_micros": 400, "purpose": "held", "ttl_seconds": 60}),
        )
        .await;
    let reservation_id = held["reservation_id"].as_str().expect("id").to_owned();
    let post_id = create_post(&app, &editor, "linkedin").await;
    let last = app
        .ok_command(
            &editor,
            "schedule-post",
            &json!({"post_id": post_id, "publish_at": now + TimeDelta::minutes(1)}),
        )
        .await;
    let position = last["position"].as_u64().expect("position");
    app.ok_get(&editor, &format!("/v1/posts?min_position={position}"))
        .await;
    app.stop().await;

    // Down for three days: both timers fell due long ago. The restarted process looks
    // for due work only once an hour, so what fires now is the sweep at start.
    clock.advance(TimeDelta::days(3));
    let app = crate::support::spawn_app_in_with(dir.path().to_path_buf(), clock.clone(), |s| {
        s.workflows.tick_ms = 3_600_000;
    })
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (post_events, budget_events) = loop {
        let post_events = post_stream(&app, tenant, post_id).await;
        let stream = StreamName::budget(TenantId::from_uuid(tenant), period);
        let budget_events = app
            .stores
            .store
            .read_stream(tenant, stream.as_str(), 0)
            .await
            .expect("budget stream");
        let fired = post_events
            .iter()
            .any(|e| e.event_type == "post.publish_requested")
            && budget_events
                .iter()
                .any(|e| e.event_type == "budget.expired");
        if fired {
            break (post_events, budget_events);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the missed timers did not fire at start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let requested: Vec<&RecordedEvent> = post_events
        .iter()
        .filter(|e| e.event_type == "post.publish_requested")
        .collect();
    assert_eq!(requested.len(), 1, "the post was started more than once");
    assert_eq!(requested[0].actor, workflows::timers::ACTOR);
    let expired: Vec<&RecordedEvent> = budget_events
        .iter()
        .filter(|e| e.event_type == "budget.expired")
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].actor, workflows::timers::ACTOR);
    assert_eq!(expired[0].data["reservation_id"], reservation_id.as_str());

    // The events that fired them clear both timers: nothing is due any more.
    let head = app.event_count().await;
    app.ok_get(&editor, &format!("/v1/posts?min_position={head}"))
        .await;
    let due = app
        .stores
        .models
        .due_timers(clock.now(), &projector::TimerCursor::default(), 100)
        .await
        .expect("due timers");
    assert!(
        due.iter().all(|t| t.tenant != tenant),
        "timers left after firing: {due:?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

async fn create_post(app: &TestApp, token: &str, channel: &str) -> Uuid {
    let answer = app
        .ok_command(
            token,
            "create-post",
            &json!({"channel": channel, "body": "Autumn release notes"}),
        )
        .await;
    answer["post_id"]
        .as_str()
        .expect("post id")
        .parse()
        .expect("uuid")
}

/// Polls `GET /v1/posts/{id}` until `done` holds.
async fn wait_for_post(
    app: &TestApp,
    token: &str,
    post_id: Uuid,
    done: impl Fn(&Value) -> bool,
) -> Value {
    poll(app, token, &format!("/v1/posts/{post_id}"), done).await
}

/// Polls a GET until its answer satisfies `done`, up to [`DEADLINE`].
async fn poll(app: &TestApp, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    app.poll_get(token, path, DEADLINE, done).await
}

async fn post_stream(app: &TestApp, tenant: Uuid, post_id: Uuid) -> Vec<RecordedEvent> {
    let stream = StreamName::post(TenantId::from_uuid(tenant), PostId::from_uuid(post_id));
    app.stores
        .store
        .read_stream(tenant, stream.as_str(), 0)
        .await
        .expect("post stream")
}

fn event_types(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_type.clone()).collect()
}
