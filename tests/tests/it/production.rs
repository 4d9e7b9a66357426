//! Crash tests of the production deployment, always run against separate processes
//! on PostgreSQL and Kafka: a component killed with SIGKILL mid-stream, a projector
//! taking over a killed one's partitions, the broker restarted, the workflows killed
//! while scheduled posts fire and go out to a mock Mastodon. Each ends by checking
//! that the live read models equal a fresh rebuild from the event log — so no event
//! is missing from them and none was applied twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use auth::Role;
use chrono::Utc;
use domain::Period;
use futures::future::join_all;
use projector::{PostFilter, Projector, ReadModels};
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};
use workflows::networks::{ChannelCredentials, MastodonConfig};

use crate::production_support::Process;
use crate::support::{TestApp, spawn_production_app, test_settings};

/// A few tenants, each with a budget, doing reservations and posts.
struct Workload {
    tenants: Vec<(Uuid, String)>,
    last_position: BTreeMap<Uuid, u64>,
}

impl Workload {
    async fn new(app: &TestApp, tenants: usize) -> Self {
        let mut workload = Self {
            tenants: Vec::new(),
            last_position: BTreeMap::new(),
        };
        for _ in 0..tenants {
            let tenant = Uuid::now_v7();
            let token = app.token(tenant, Role::Admin);
            let answer = app
                .ok_command(
                    &token,
                    "set-budget-limits",
                    &json!({"soft_limit_micros": 800_000_000, "hard_limit_micros": 1_000_000_000, "alert_thresholds_pct": [1, 2, 50]}),
                )
                .await;
            workload.note(tenant, &answer);
            workload.tenants.push((tenant, token));
        }
        workload
    }

    fn note(&mut self, tenant: Uuid, answer: &Value) {
        let position = answer["position"].as_u64().expect("position");
        let last = self.last_position.entry(tenant).or_default();
        *last = (*last).max(position);
    }

    /// One round: per tenant, a reservation committed above or below its amount, one
    /// released, and a post created and published.
    async fn round(&mut self, app: &TestApp, round: usize) {
        for (tenant, token) in self.tenants.clone() {
            let reserved = app
                .ok_command(&token, "reserve-budget", &json!({"amount_micros": 1_000_000, "purpose": "crash test", "ttl_seconds": 600}))
                .await;
            self.note(tenant, &reserved);
            let actual = if round.is_multiple_of(2) {
                700_000
            } else {
                1_300_000
            };
            let committed = app
                .ok_command(
                    &token,
                    "commit-budget",
                    &json!({"reservation_id": reserved["reservation_id"], "actual_micros": actual}),
                )
                .await;
            self.note(tenant, &committed);
            let held = app
                .ok_command(
                    &token,
                    "reserve-budget",
                    &json!({"amount_micros": 500_000, "purpose": "released", "ttl_seconds": 600}),
                )
                .await;
            let released = app
                .ok_command(
                    &token,
                    "release-budget",
                    &json!({"reservation_id": held["reservation_id"]}),
                )
                .await;
            self.note(tenant, &released);
            let post = app
                .ok_command(
                    &token,
                    "create-post",
                    &json!({"channel": "blog", "body": format!("round {round}")}),
                )
                .await;
            let published = app
                .ok_command(&token, "publish-post", &json!({"post_id": post["post_id"]}))
                .await;
            self.note(tenant, &published);
        }
    }

    /// Waits until every tenant's read models include its last command, and the
    /// publisher has recorded every publish.
    async fn converge(&self, app: &TestApp, posts_per_tenant: usize) {
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(120);
        for (tenant, token) in &self.tenants {
            let position = self.last_position[tenant];
            // Each query waits up to the consistency bound; a rebalance can take longer.
            loop {
                let answer = app
                    .get(token, &format!("/v1/budget?min_position={position}"))
                    .await;
                if answer.status() == reqwest::StatusCode::OK {
                    break;
                }
                assert_eq!(
                    answer.status(),
                    reqwest::StatusCode::SERVICE_UNAVAILABLE,
                    "only a consistency timeout is expected"
                );
                if tokio::time::Instant::now() >= deadline {
                    let head = app.stores.store.head().await.expect("head");
                    let relay = app
                        .stores
                        .models
                        .checkpoint(&format!("kafka:{}", app_topic(app)))
                        .await
                        .expect("relay checkpoint");
                    panic!(
                        "tenant {tenant}: read models did not reach position {position} within 120 s (log head {head}, relay checkpoint {relay})"
                    );
                }
            }
            loop {
                let page = app
                    .ok_get(token, "/v1/posts?status=published&limit=200")
                    .await;
                let published = page["items"].as_array().map_or(0, Vec::len);
                if published == posts_per_tenant {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "tenant {tenant}: {published} of {posts_per_tenant} posts published after 120 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        eprintln!(
            "read models converged {:?} after the last command",
            started.elapsed()
        );
    }

    /// The live read models equal read models rebuilt from the log from scratch.
    async fn assert_read_models_equal_a_rebuild(&self, app: &TestApp) {
        let dir = TempDir::new().expect("temp dir");
        let fresh = ReadModels::open(&dir.path().join("rebuilt.db"))
            .await
            .expect("fresh read models");
        Projector::new(Arc::clone(&app.stores.store), fresh.clone())
            .catch_up()
            .await
            .expect("rebuild from the log");
        let live = &app.stores.models;
        let period = Period::containing(Utc::now());
        for (tenant, _) in &self.tenants {
            assert_eq!(
                live.budget(*tenant, period).await.expect("live budget"),
                fresh.budget(*tenant, period).await.expect("rebuilt budget"),
                "tenant {tenant}: the live budget differs from a rebuild"
            );
            assert_eq!(
                live.reservations(*tenant, period, None, 1000)
                    .await
                    .expect("live reservations"),
                fresh
                    .reservations(*tenant, period, None, 1000)
                    .await
                    .expect("rebuilt reservations"),
                "tenant {tenant}: the live reservations differ from a rebuild"
            );
            let all = PostFilter {
                limit: 200,
                ..PostFilter::default()
            };
            assert_eq!(
                live.posts(*tenant, &all).await.expect("live posts"),
                fresh.posts(*tenant, &all).await.expect("rebuilt posts"),
                "tenant {tenant}: the live posts differ from a rebuild"
            );
        }
    }
}

fn app_topic(app: &TestApp) -> String {
    app.production
        .as_ref()
        .map(|d| d.topic())
        .unwrap_or_default()
}

/// A production deployment with a long consistency wait (the crash tests wait for
/// restarted processes).
async fn production_app() -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.query.consistency_wait_ms = 10_000;
    spawn_production_app(settings, dir).await
}

#[tokio::test]
async fn killing_the_projector_and_the_relay_mid_stream_loses_and_duplicates_nothing() {
    let mut app = production_app().await;
    let mut workload = Workload::new(&app, 3).await;
    workload.round(&app, 0).await;
    workload.round(&app, 1).await;
    {
        let deployment = app.production.as_mut().expect("production deployment");
        deployment.kill(Process::Projector);
        deployment.kill(Process::Relay);
    }
    // Commands still succeed: the store is the source of truth.
    workload.round(&app, 2).await;
    workload.round(&app, 3).await;
    {
        let deployment = app.production.as_mut().expect("production deployment");
        deployment.start_process(Process::Relay);
        deployment.start_process(Process::Projector);
    }
    workload.round(&app, 4).await;
    workload.converge(&app, 5).await;
    workload.assert_read_models_equal_a_rebuild(&app).await;
    app.stop().await;
}

/// Which PostgreSQL session (one per projector process) holds which partition leases.
async fn lease_holders(app: &TestApp) -> BTreeMap<i32, Vec<i32>> {
    let deployment = app.production.as_ref().expect("production deployment");
    eventlog::kafka::lease_holders(
        &deployment.db.owner_url(),
        &deployment.group(),
        &deployment.topic(),
    )
    .await
    .expect("pg_locks is readable")
}

/// Waits until the partition leases are held by `holders` sessions, `partitions` in
/// all, none twice; returns them.
async fn wait_for_leases(app: &TestApp, holders: usize) -> BTreeMap<i32, Vec<i32>> {
    let partitions = app
        .production
        .as_ref()
        .expect("production deployment")
        .partitions();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let current = lease_holders(app).await;
        let mut held: Vec<i32> = current.values().flatten().copied().collect();
        held.sort_unstable();
        if current.len() == holders && held == (0..partitions).collect::<Vec<_>>() {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leases never settled on {holders} holders of {partitions} partitions: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_second_projector_in_the_group_takes_over_when_the_first_is_killed() {
    let mut app = production_app().await;
    app.production
        .as_mut()
        .expect("production deployment")
        .start_process(Process::SecondProjector);
    // Enough tenants that every partition carries some of them.
    let mut workload = Workload::new(&app, 12).await;
    workload.round(&app, 0).await;
    let shared = wait_for_leases(&app, 2).await;
    let partitions = app
        .production
        .as_ref()
        .expect("production deployment")
        .partitions();
    let partitions = usize::try_from(partitions).expect("positive");
    for (holder, held) in &shared {
        assert_eq!(
            held.len(),
            partitions / 2,
            "each of two projectors reads half the partitions: session {holder} holds {held:?} of {shared:?}"
        );
    }
    // What an operator sees: both projectors, and no partition left unread.
    let status = app
        .production
        .as_ref()
        .expect("production deployment")
        .run_cli(&["projections", "status"]);
    assert!(status.contains("projectors (sessions):  2"), "{status}");
    assert!(!status.contains("partitions nobody reads"), "{status}");
    for holder in shared.keys() {
        assert!(status.contains(&format!("session {holder} ")), "{status}");
    }
    workload.round(&app, 1).await;
    app.production
        .as_mut()
        .expect("production deployment")
        .kill(Process::Projector);
    workload.round(&app, 2).await;
    let survivor = wait_for_leases(&app, 1).await;
    assert!(
        survivor.keys().all(|holder| shared.contains_key(holder)),
        "the surviving projector, not a newcomer, took every partition: {survivor:?} after {shared:?}"
    );
    workload.round(&app, 3).await;
    workload.converge(&app, 4).await;
    workload.assert_read_models_equal_a_rebuild(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_broker_restarted_mid_run_loses_nothing() {
    let mut app = production_app().await;
    let mut workload = Workload::new(&app, 3).await;
    workload.round(&app, 0).await;
    app.production
        .as_mut()
        .expect("production deployment")
        .broker
        .kill();
    // Commands still succeed while the broker is down.
    workload.round(&app, 1).await;
    workload.round(&app, 2).await;
    app.production
        .as_mut()
        .expect("production deployment")
        .broker
        .restart();
    workload.round(&app, 3).await;
    workload.converge(&app, 4).await;
    workload.assert_read_models_equal_a_rebuild(&app).await;
    app.stop().await;
}

/// The generation workflow killed with SIGKILL while provider calls are in flight, then
/// restarted: every generation ends generated, each reservation is committed exactly
/// once at its generation's recorded cost, and no reservation is left open.
#[tokio::test]
async fn killing_the_generation_workflow_mid_run_charges_nothing_twice_and_loses_nothing() {
    const GENERATIONS: usize = 40;
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.query.consistency_wait_ms = 10_000;
    // Slow calls, a few at a time, so the kill lands while some are in flight.
    settings.ai.local_latency_ms = 400;
    settings.ai.concurrency = 4;
    let mut app = spawn_production_app(settings, dir).await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    app.ok_command(
        &admin,
        "set-budget-limits",
        &json!({"soft_limit_micros": 900_000_000, "hard_limit_micros": 1_000_000_000}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..GENERATIONS {
        let response = app
            .command(
                &admin,
                "generate-content",
                &json!({"brief": format!("Crash test brief {n}"), "channel": "blog", "max_output_tokens": 100, "priority": "core"}),
            )
            .await;
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        let body: Value = response.json().await.expect("json");
        ids.push(body["generation_id"].as_str().expect("id").to_owned());
    }
    // Let some finish and some be in flight, then crash the workflow.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.production
        .as_mut()
        .expect("production deployment")
        .kill(Process::Workflows);
    let before_restart = generations_by_status(&app, tenant, &ids).await;
    assert!(
        before_restart.get("pending").copied().unwrap_or(0) > 0,
        "the kill came after every generation finished: {before_restart:?}"
    );
    app.production
        .as_mut()
        .expect("production deployment")
        .start_process(Process::Workflows);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let counts = generations_by_status(&app, tenant, &ids).await;
        if counts.get("generated").copied().unwrap_or(0) == GENERATIONS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every generation finished after the restart: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every settlement lands in the ledger, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = crate::budget_concurrency::budget_events(
            app.stores.store.as_ref(),
            domain::TenantId::from_uuid(tenant),
            Period::containing(Utc::now()),
        )
        .await;
        let folded = crate::budget_concurrency::fold(&events);
        if folded.state.open.is_empty() {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} reservations still open",
            folded.state.open.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut commits: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for event in &events {
        if let domain::budget::Event::Committed {
            reservation_id,
            actual,
            ..
        } = event
        {
            commits
                .entry(reservation_id.to_string())
                .or_default()
                .push(actual.get());
        }
    }
    let mut interrupted = 0;
    for id in &ids {
        let generation = app
            .stores
            .models
            .generation(tenant, Uuid::parse_str(id).expect("uuid"))
            .await
            .expect("read model")
            .expect("generation");
        interrupted += generation.attempts - 1;
        assert_eq!(
            commits.get(id).map(Vec::as_slice),
            Some([generation.cost_micros].as_slice()),
            "generation {id}: one commit at its recorded cost"
        );
    }
    eprintln!("{interrupted} attempts were cut off by the kill and retried");
    app.stop().await;
}

/// How many of `ids` stand in each status, from the read models.
async fn generations_by_status(
    app: &TestApp,
    tenant: Uuid,
    ids: &[String],
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        let status = app
            .stores
            .models
            .generation(tenant, Uuid::parse_str(id).expect("uuid"))
            .await
            .expect("read model")
            .map_or_else(|| "unprojected".to_owned(), |g| g.status);
        *counts.entry(status).or_default() += 1;
    }
    counts
}

/// A Mastodon that, like the real one, answers a repeated `Idempotency-Key` with the
/// status it already created; it counts the requests per key.
#[derive(Clone, Default)]
struct IdempotentMastodon(Arc<Mutex<HashMap<String, usize>>>);

impl Respond for IdempotentMastodon {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default() += 1;
        ResponseTemplate::new(200).set_body_json(
            json!({"id": key, "url": format!("https://mastodon.example/@tidemark/{key}")}),
        )
    }
}

impl IdempotentMastodon {
    fn requests(&self) -> HashMap<String, usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// 1,000 posts of 10 tenants scheduled a few seconds apart, delivered by a workflows
/// process that is killed with SIGKILL while the timers fire and the deliveries go
/// out, then started again: every post is started once (one timer firing), attempted
/// once and published once. A delivery the kill cut off is reconciled with the same
/// idempotency key, never attempted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_scheduled_posts_are_each_delivered_once_across_a_workflows_kill() {
    const TENANTS: usize = 10;
    const PER_TENANT: usize = 100;
    let mastodon = IdempotentMastodon::default();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/statuses"))
        .respond_with(mastodon.clone())
        .mount(&server)
        .await;
    let tenants: Vec<Uuid> = (0..TENANTS).map(|_| Uuid::now_v7()).collect();
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(dir.path().to_path_buf());
    settings.query.consistency_wait_ms = 10_000;
    for tenant in &tenants {
        settings.publishing.channels.insert(
            format!("{tenant}/mastodon"),
            ChannelCredentials::Mastodon(MastodonConfig {
                base_url: server.uri(),
                access_token: SecretString::from("test-token"),
            }),
        );
    }
    let mut app = spawn_production_app(settings, dir).await;

    let mut posts = Vec::new();
    for tenant in &tenants {
        let token = app.token(*tenant, Role::Editor);
        for n in 0..PER_TENANT {
            posts.push((*tenant, token.clone(), Uuid::now_v7(), n));
        }
    }
    for chunk in posts.chunks(50) {
        join_all(chunk.iter().map(|(_, token, post, n)| {
            let body = json!({"post_id": post, "channel": "mastodon", "body": format!("Post {n}")});
            let app = &app;
            async move { app.ok_command(token, "create-post", &body).await }
        }))
        .await;
    }
    // Due within a few seconds of each other, soon after the last is scheduled.
    let due = Utc::now() + chrono::TimeDelta::seconds(12);
    for chunk in posts.chunks(50) {
        join_all(chunk.iter().map(|(_, token, post, n)| {
            let at = due + chrono::TimeDelta::milliseconds(500 * (*n as i64 % 10));
            let body = json!({"post_id": post, "publish_at": at});
            let app = &app;
            async move { app.ok_command(token, "schedule-post", &body).await }
        }))
        .await;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while mastodon.requests().len() < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deployment = app.production.as_mut().expect("production deployment");
    deployment.kill(Process::Workflows);
    let before_restart = mastodon.requests().len();
    deployment.start_process(Process::Workflows);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while mastodon.requests().len() < posts.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} posts were delivered",
            mastodon.requests().len(),
            posts.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        before_restart < posts.len(),
        "the kill came after all the work"
    );

    // Wait for every post to be recorded published, then read the log.
    for tenant in &tenants {
        let token = app.token(*tenant, Role::Viewer);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let head = app.event_count().await;
            let page = app
                .ok_get(
                    &token,
                    &format!("/v1/posts?status=published&limit=200&min_position={head}"),
                )
                .await;
            if page["items"].as_array().map(Vec::len) == Some(PER_TENANT) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tenant {tenant}: not every post was recorded published: {page}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut per_post: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    for event in app
        .stores
        .store
        .read_all(0, 1_000_000)
        .await
        .expect("read the log")
    {
        if let Some(post) = event.stream_id.rsplit('/').next()
            && event.stream_id.contains("/post/")
        {
            *per_post
                .entry(post.to_owned())
                .or_default()
                .entry(event.event_type)
                .or_default() += 1;
        }
    }
    let requests = mastodon.requests();
    let mut reconciled = 0;
    for (_, _, post, _) in &posts {
        let events = &per_post[&post.to_string()];
        let count = |t: &str| events.get(t).copied().unwrap_or(0);
        assert_eq!(count("post.publish_requested"), 1, "{post}: {events:?}");
        assert_eq!(
            count("post.delivery_attempt_started"),
            1,
            "{post}: {events:?}"
        );
        assert_eq!(count("post.published"), 1, "{post}: {events:?}");
        let sent = requests[&format!("tidemark-post-{post}")];
        // A second request with the same key is the reconciliation of an attempt the
        // kill cut off, which Mastodon answers with the status it already created.
        if count("post.delivery_unconfirmed") == 1 {
            reconciled += 1;
            assert!(sent <= 2, "{post}: {sent} requests");
        } else {
            assert_eq!(sent, 1, "{post}: {events:?}");
        }
    }
    eprintln!("{before_restart} posts delivered before the kill, {reconciled} reconciled after it");
    app.stop().await;
}

/// Timers on the system clock, in the workflows process: a post scheduled a moment
/// ahead and a reservation with a short ttl both fall due while the workflows process
/// is down; once it starts again, its missed-timer sweep publishes the post (once) and
/// expires the reservation, freeing its amount — with no later command to prompt it.
#[tokio::test]
async fn timers_missed_while_the_workflows_process_was_down_fire_when_it_starts() {
    const HARD: i64 = 100_000;
    let mut app = production_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let period = Period::containing(Utc::now()).to_string();
    app.ok_command(
        &admin,
        "set-budget-limits",
        &json!({"soft_limit_micros": HARD, "hard_limit_micros": HARD, "period": period}),
    )
    .await;
    app.production
        .as_mut()
        .expect("production deployment")
        .kill(Process::Workflows);

    let reserved = app
        .ok_command(
            &admin,
            "reserve-budget",
            &json!({"amount_micros": HARD, "purpose": "held too long", "ttl_seconds": 1}),
        )
        .await;
    let post = app
        .ok_command(
            &admin,
            "create-post",
            &json!({"channel": "linkedin", "body": "scheduled while the timers were down"}),
        )
        .await;
    let post_id = post["post_id"].as_str().expect("post id").to_owned();
    let publish_at = Utc::now() + chrono::TimeDelta::seconds(1);
    app.ok_command(
        &admin,
        "schedule-post",
        &json!({"post_id": post_id, "publish_at": publish_at}),
    )
    .await;
    // Both fall due while nothing runs the timers.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let waiting = app.ok_get(&admin, &format!("/v1/posts/{post_id}")).await;
    assert_eq!(waiting["status"], "scheduled", "{waiting}");

    app.production
        .as_mut()
        .expect("production deployment")
        .start_process(Process::Workflows);
    let published = app
        .poll_get(
            &admin,
            &format!("/v1/posts/{post_id}"),
            Duration::from_secs(30),
            |p| p["status"] == "published",
        )
        .await;
    assert_eq!(
        published["delivery"]["attempts"].as_array().map(Vec::len),
        Some(1),
        "delivered exactly once: {published}"
    );
    let reservation_id = reserved["reservation_id"].as_str().expect("id");
    let listed = app
        .poll_get(
            &admin,
            &format!("/v1/budget/reservations?period={period}&status=all"),
            Duration::from_secs(30),
            |v| v["items"][0]["status"] == "expired",
        )
        .await;
    assert_eq!(listed["items"][0]["reservation_id"], reservation_id);
    let budget = app
        .poll_get(
            &admin,
            &format!("/v1/budget?period={period}"),
            Duration::from_secs(30),
            |b| b["available_micros"] == HARD,
        )
        .await;
    assert_eq!(budget["reserved_micros"], 0, "{budget}");
    app.stop().await;
}
