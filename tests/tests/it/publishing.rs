//! The publishing workflow end to end: per-channel delivery through real network
//! adapters against mock Mastodon servers and webhook receivers started by the test,
//! each attempt recorded; retries only for failures known transient (with back-off
//! and `Retry-After`, on the command side's manual clock); a delivery whose outcome
//! is unknown never sent twice but settled by reconciling, by a verified callback or
//! by an operator; and inbound callbacks trusted only with a valid signature.
//!
//! Every test here configures channels in-process, so they run on the embedded
//! deployment only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use auth::Role;
use auth::webhooks::{WebhookSecret, sign};
use chrono::{DateTime, TimeDelta, Utc};
use cli::settings::Settings;
use command_api::Clock;
use futures::future::join_all;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};
use workflows::networks::{ChannelCredentials, MastodonConfig, WebhookConfig};

use crate::support::{
    ManualClock, TestApp, assert_problem, production, spawn_app_in_with, spawn_app_with,
};

/// The secret the test's mock network signs callbacks with now, and the one it used
/// before the rotation; both are configured.
const NEW_SECRET: &str = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LTAxMjM0NQ==";
const OLD_SECRET: &str = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LTAxMjM0NQ==";
/// A secret that is not configured.
const WRONG_SECRET: &str = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLTAxMjM0NTY3OA==";

/// Answers in turn; the last answer repeats.
struct Sequence(Vec<ResponseTemplate>, AtomicUsize);

impl Respond for Sequence {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.1.fetch_add(1, Ordering::SeqCst);
        self.0[n.min(self.0.len() - 1)].clone()
    }
}

/// A mock server answering `route` in turn with `answers`.
async fn network(route: &str, answers: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(Sequence(answers, AtomicUsize::new(0)))
        .mount(&server)
        .await;
    server
}

fn status_created(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"id": id, "url": format!("https://mastodon.example/@tidemark/{id}")}))
}

/// The test settings: fast retries, a short request timeout, and the mock network's
/// callback secrets (new and old).
fn base(settings: &mut Settings) {
    settings.publishing.retry_base_ms = 1_000;
    settings.publishing.retry_max_ms = 1_000;
    settings.publishing.max_attempts = 4;
    settings.publishing.request_timeout_ms = 500;
    settings.publishing.webhook_secrets.insert(
        "mastodon".into(),
        vec![
            SecretString::from(NEW_SECRET),
            SecretString::from(OLD_SECRET),
        ],
    );
}

/// An app whose tenant `tenant` posts on its `mastodon` channel to `server`.
async fn app_with_mastodon(tenant: Uuid, server: &MockServer) -> TestApp {
    let base_url = server.uri();
    spawn_app_with(move |settings| {
        base(settings);
        settings.publishing.channels.insert(
            format!("{tenant}/mastodon"),
            ChannelCredentials::Mastodon(MastodonConfig {
                base_url,
                access_token: SecretString::from("test-token"),
            }),
        );
    })
    .await
}

/// An app whose tenant `tenant` posts on its `mastodon` channel through a signed
/// webhook to `server` (whose receivers cannot be asked afterwards).
async fn app_with_webhook(tenant: Uuid, server: &MockServer) -> TestApp {
    let url = format!("{}/hooks/tidemark", server.uri());
    spawn_app_with(move |settings| {
        base(settings);
        settings.publishing.channels.insert(
            format!("{tenant}/mastodon"),
            ChannelCredentials::Webhook(WebhookConfig {
                url,
                secret: SecretString::from("whsec_b3V0Z29pbmctc2VjcmV0"),
            }),
        );
    })
    .await
}

async fn publish(app: &TestApp, token: &str, channel: &str) -> Uuid {
    let answer = app
        .ok_command(
            token,
            "create-post",
            &json!({"channel": channel, "body": "Autumn release notes"}),
        )
        .await;
    let post: Uuid = answer["post_id"]
        .as_str()
        .expect("post id")
        .parse()
        .expect("uuid");
    app.ok_command(token, "publish-post", &json!({"post_id": post}))
        .await;
    post
}

/// Polls `GET /v1/posts/{id}` until `done` holds (bounded).
async fn wait_for(app: &TestApp, token: &str, post: Uuid, done: impl Fn(&Value) -> bool) -> Value {
    app.poll_get(
        token,
        &format!("/v1/posts/{post}"),
        Duration::from_secs(30),
        done,
    )
    .await
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |post| post["status"] == status
}

async fn requests(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.unwrap_or_default()
}

fn header(request: &wiremock::Request, name: &str) -> String {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_delivered_to_its_mastodon_channel_with_its_attempt_recorded() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let server = network("/api/v1/statuses", vec![status_created("1001")]).await;
    let app = app_with_mastodon(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish(&app, &token, "mastodon").await;

    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(view["network_post_id"], "1001", "{view}");
    assert_eq!(view["url"], "https://mastodon.example/@tidemark/1001");
    let delivery = &view["delivery"];
    assert_eq!(delivery["state"], "published", "{view}");
    assert_eq!(delivery["network"], "mastodon");
    assert_eq!(delivery["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(delivery["attempts"][0]["status"], "succeeded");

    let sent = requests(&server).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(header(&sent[0], "authorization"), "Bearer test-token");
    assert_eq!(
        header(&sent[0], "idempotency-key"),
        format!("tidemark-post-{post}")
    );
    let body: Value = serde_json::from_slice(&sent[0].body).expect("json");
    assert_eq!(body["status"], "Autumn release notes");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_without_configuration_still_publishes_locally() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let server = network("/api/v1/statuses", vec![status_created("1")]).await;
    let app = app_with_mastodon(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish(&app, &token, "linkedin").await;
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(view["network_post_id"], format!("local-{post}"));
    assert_eq!(view["delivery"]["network"], "local");
    assert!(requests(&server).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_delivery_waits_for_retry_after_then_succeeds() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let server = network(
        "/api/v1/statuses",
        vec![
            ResponseTemplate::new(429).insert_header("retry-after", "120"),
            status_created("1002"),
        ],
    )
    .await;
    let app = app_with_mastodon(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let before = app.clock.now();
    let post = publish(&app, &token, "mastodon").await;

    let view = wait_for(&app, &token, post, status_is("failed_retryable")).await;
    let delivery = &view["delivery"];
    assert_eq!(delivery["state"], "failed_retryable");
    assert_eq!(delivery["attempts"][0]["code"], "network_rate_limited");
    let next: DateTime<Utc> = delivery["next_attempt_at"]
        .as_str()
        .expect("next attempt")
        .parse()
        .expect("time");
    assert!(
        // Stored times keep whole milliseconds, so allow for the truncation.
        next >= before + TimeDelta::seconds(119),
        "Retry-After not honoured: {next}"
    );
    assert_eq!(requests(&server).await.len(), 1);

    app.clock.advance(TimeDelta::seconds(121));
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(view["network_post_id"], "1002");
    assert_eq!(
        view["delivery"]["attempts"].as_array().map(Vec::len),
        Some(2)
    );
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(
        header(&sent[0], "idempotency-key"),
        header(&sent[1], "idempotency-key"),
        "every attempt of one delivery carries the same key"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_retried_after_back_off_then_succeeds() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let server = network(
        "/api/v1/statuses",
        vec![ResponseTemplate::new(503), status_created("1003")],
    )
    .await;
    let app = app_with_mastodon(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish(&app, &token, "mastodon").await;

    let view = wait_for(&app, &token, post, status_is("failed_retryable")).await;
    assert_eq!(
        view["delivery"]["attempts"][0]["code"],
        "network_unavailable"
    );
    // The back-off ceiling is one second in these settings.
    app.clock.advance(TimeDelta::seconds(2));
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(view["network_post_id"], "1003");
    assert_eq!(requests(&server).await.len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_the_network_refuses_fails_for_good_and_is_never_retried() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let server = network(
        "/api/v1/statuses",
        vec![
            ResponseTemplate::new(422)
                .set_body_json(json!({"error": "Validation failed: Text character limit"})),
        ],
    )
    .await;
    let app = app_with_mastodon(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish(&app, &token, "mastodon").await;

    let view = wait_for(&app, &token, post, status_is("failed")).await;
    let delivery = &view["delivery"];
    assert_eq!(delivery["state"], "failed_permanent", "{view}");
    assert_eq!(delivery["attempts"][0]["code"], "network_refused_content");
    assert_eq!(delivery["attempts"][0]["retryable"], false);
    assert!(
        view["failure_reason"]
            .as_str()
            .is_some_and(|r| r.contains("character limit")),
        "{view}"
    );
    // However much time passes, nothing tries again.
    app.clock.advance(TimeDelta::hours(2));
    let listed = app.ok_get(&token, "/v1/posts?status=failed").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(requests(&server).await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_the_request_was_received_is_unconfirmed_until_an_operator_resolves_it() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    // The receiver takes the post but answers after the client gave up.
    let server = network(
        "/hooks/tidemark",
        vec![ResponseTemplate::new(200).set_delay(Duration::from_secs(3))],
    )
    .await;
    let app = app_with_webhook(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let admin = app.token(tenant, Role::Admin);
    let post = publish(&app, &token, "mastodon").await;

    let view = wait_for(&app, &token, post, status_is("unconfirmed")).await;
    assert_eq!(view["delivery"]["state"], "unconfirmed");
    assert_eq!(view["delivery"]["attempts"][0]["status"], "unconfirmed");
    let listed = app.ok_get(&token, "/v1/posts?status=unconfirmed").await;
    assert_eq!(listed["items"][0]["post_id"], post.to_string());
    // Never sent again, whatever the time.
    app.clock.advance(TimeDelta::hours(2));
    let refused = app
        .command(&admin, "retry-delivery", &json!({"post_id": post}))
        .await;
    assert_problem(refused, StatusCode::CONFLICT, "invalid_post_transition").await;
    assert_eq!(requests(&server).await.len(), 1, "posted twice");

    // An editor may not settle it; an operator (admin) may.
    let body = json!({"post_id": post, "outcome": "published", "network_post_id": "hook-1"});
    let forbidden = app.command(&token, "resolve-unconfirmed", &body).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    app.ok_command(&admin, "resolve-unconfirmed", &body).await;
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(view["network_post_id"], "hook-1");
    assert_eq!(requests(&server).await.len(), 1, "posted twice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_mastodon_delivery_is_reconciled_with_the_same_idempotency_key() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    // The first answer comes too late; reconciling repeats the request with the same
    // key, which Mastodon answers with the status it already created.
    let server = network(
        "/api/v1/statuses",
        vec![
            status_created("1004").set_delay(Duration::from_secs(3)),
            status_created("1004"),
        ],
    )
    .await;
    let app = app_with_mastodon(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish(&app, &token, "mastodon").await;

    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(view["network_post_id"], "1004");
    let attempts = view["delivery"]["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.len(),
        1,
        "reconciling is not a new attempt: {view}"
    );
    assert_eq!(attempts[0]["status"], "unconfirmed");
    let sent = requests(&server).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(
        header(&sent[0], "idempotency-key"),
        header(&sent[1], "idempotency-key")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_failed_delivery() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let server = network(
        "/api/v1/statuses",
        vec![ResponseTemplate::new(401), status_created("1005")],
    )
    .await;
    let app = app_with_mastodon(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let admin = app.token(tenant, Role::Admin);
    let post = publish(&app, &token, "mastodon").await;
    let view = wait_for(&app, &token, post, status_is("failed")).await;
    assert_eq!(
        view["delivery"]["attempts"][0]["code"],
        "network_auth_failed"
    );

    app.ok_command(&admin, "retry-delivery", &json!({"post_id": post}))
        .await;
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(
        view["delivery"]["attempts"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(requests(&server).await.len(), 2);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Inbound webhooks
// ---------------------------------------------------------------------------------

/// A signed callback as the mock network would send it.
struct Callback {
    id: String,
    timestamp: i64,
    body: Vec<u8>,
    signature: String,
}

fn callback(secret: &str, at: DateTime<Utc>, body: &Value) -> Callback {
    let id = format!("msg_{}", Uuid::now_v7().simple());
    let body = serde_json::to_vec(body).expect("json");
    let timestamp = at.timestamp();
    let secret = WebhookSecret::parse(secret).expect("secret");
    let signature = sign(&secret, &id, timestamp, &body);
    Callback {
        id,
        timestamp,
        body,
        signature,
    }
}

async fn deliver(app: &TestApp, network: &str, callback: &Callback) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/webhooks/{network}", app.address))
        .header("content-type", "application/json")
        .header("webhook-id", &callback.id)
        .header("webhook-timestamp", callback.timestamp.to_string())
        .header("webhook-signature", &callback.signature)
        .body(callback.body.clone())
        .send()
        .await
        .expect("request sent")
}

fn removed(tenant: Uuid, post: Uuid) -> Value {
    json!({
        "type": "post.removed",
        "tenant_id": tenant,
        "post_id": post,
        "network_post_id": format!("local-{post}"),
    })
}

/// An app with the callback secrets, a tenant and one published (local) post.
async fn published_post() -> (TestApp, Uuid, String, Uuid) {
    let app = spawn_app_with(base).await;
    let tenant = Uuid::now_v7();
    let token = app.token(tenant, Role::Editor);
    let post = publish(&app, &token, "linkedin").await;
    wait_for(&app, &token, post, status_is("published")).await;
    (app, tenant, token, post)
}

/// Sends `callback` to `app`, expects it refused with `status` and `code`, and checks
/// that no event was stored.
async fn assert_refused(
    app: &TestApp,
    network: &str,
    callback: &Callback,
    status: StatusCode,
    code: &str,
) {
    let events = app.event_count().await;
    let response = deliver(app, network, callback).await;
    assert_problem(response, status, code).await;
    assert_eq!(
        app.event_count().await,
        events,
        "a refused callback changed something"
    );
}

/// Sends a refused callback and checks its problem and that nothing changed.
async fn check_refused(callback: Callback, network: &str, status: StatusCode, code: &str) {
    let (app, _, token, post) = published_post().await;
    assert_refused(&app, network, &callback, status, code).await;
    let view = app.ok_get(&token, &format!("/v1/posts/{post}")).await;
    assert_eq!(view["status"], "published");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_callback_is_recorded_on_the_tenants_post() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let (app, tenant, token, post) = published_post().await;
    let events = app.event_count().await;
    let signed = callback(NEW_SECRET, app.clock.now(), &removed(tenant, post));
    let response = deliver(&app, "mastodon", &signed).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.event_count().await, events + 1);
    wait_for(&app, &token, post, status_is("removed")).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_signed_with_the_previous_secret_is_accepted_during_rotation() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let (app, tenant, token, post) = published_post().await;
    let signed = callback(OLD_SECRET, app.clock.now(), &removed(tenant, post));
    let response = deliver(&app, "mastodon", &signed).await;
    assert_eq!(response.status(), StatusCode::OK);
    wait_for(&app, &token, post, status_is("removed")).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_id_is_ignored() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let (app, tenant, token, post) = published_post().await;
    let signed = callback(NEW_SECRET, app.clock.now(), &removed(tenant, post));
    // A client cannot claim the id first under its own Idempotency-Key.
    let claim = app
        .client
        .post(format!("{}/v1/commands/cancel-post", app.address))
        .bearer_auth(&token)
        .header("idempotency-key", format!("webhook mastodon {}", signed.id))
        .json(&json!({"post_id": post}))
        .send()
        .await
        .expect("sent");
    assert_problem(claim, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    assert_eq!(
        deliver(&app, "mastodon", &signed).await.status(),
        StatusCode::OK
    );
    wait_for(&app, &token, post, status_is("removed")).await;
    let events = app.event_count().await;

    let again = deliver(&app, "mastodon", &signed).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(
        app.event_count().await,
        events,
        "a replay changed something"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_signed_with_a_wrong_secret_is_refused() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let signed = callback(
        WRONG_SECRET,
        Utc::now(),
        &removed(Uuid::now_v7(), Uuid::now_v7()),
    );
    check_refused(
        signed,
        "mastodon",
        StatusCode::UNAUTHORIZED,
        "invalid_webhook_signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_whose_body_was_altered_is_refused() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let (app, tenant, _, post) = published_post().await;
    let mut signed = callback(NEW_SECRET, app.clock.now(), &removed(tenant, post));
    signed.body = serde_json::to_vec(&removed(tenant, Uuid::now_v7())).expect("json");
    assert_refused(
        &app,
        "mastodon",
        &signed,
        StatusCode::UNAUTHORIZED,
        "invalid_webhook_signature",
    )
    .await;
    // One byte of white space is an alteration too.
    signed = callback(NEW_SECRET, app.clock.now(), &removed(tenant, post));
    signed.body.push(b' ');
    assert_refused(
        &app,
        "mastodon",
        &signed,
        StatusCode::UNAUTHORIZED,
        "invalid_webhook_signature",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_a_stale_timestamp_is_refused() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let (app, tenant, _, post) = published_post().await;
    let stale = app.clock.now() - TimeDelta::minutes(6);
    let signed = callback(NEW_SECRET, stale, &removed(tenant, post));
    assert_refused(
        &app,
        "mastodon",
        &signed,
        StatusCode::UNAUTHORIZED,
        "stale_webhook_timestamp",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_its_signature_headers_is_refused() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let (app, tenant, _, post) = published_post().await;
    let events = app.event_count().await;
    let body = serde_json::to_vec(&removed(tenant, post)).expect("json");
    let response = app
        .client
        .post(format!("{}/v1/webhooks/mastodon", app.address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_problem(response, StatusCode::BAD_REQUEST, "missing_webhook_header").await;
    let unknown = callback(NEW_SECRET, app.clock.now(), &removed(tenant, post));
    let response = deliver(&app, "myspace", &unknown).await;
    assert_problem(response, StatusCode::NOT_FOUND, "unknown_webhook_network").await;
    assert_eq!(app.event_count().await, events);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_confirmation_settles_an_unconfirmed_delivery() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let server = network(
        "/hooks/tidemark",
        vec![ResponseTemplate::new(200).set_delay(Duration::from_secs(3))],
    )
    .await;
    let app = app_with_webhook(tenant, &server).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish(&app, &token, "mastodon").await;
    wait_for(&app, &token, post, status_is("unconfirmed")).await;

    let confirmed = json!({
        "type": "post.delivery_confirmed",
        "tenant_id": tenant,
        "post_id": post,
        "network_post_id": "hook-2",
        "url": "https://example.com/hook-2",
    });
    let signed = callback(NEW_SECRET, app.clock.now(), &confirmed);
    assert_eq!(
        deliver(&app, "mastodon", &signed).await.status(),
        StatusCode::OK
    );
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(view["network_post_id"], "hook-2");
    assert_eq!(requests(&server).await.len(), 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Several targets: one delivery per channel
// ---------------------------------------------------------------------------------

/// An app whose tenant posts on its `mastodon` channel to a mock Mastodon and on its
/// `crm` channel through signed webhooks to a mock receiver.
async fn app_with_mastodon_and_crm(
    tenant: Uuid,
    mastodon: &MockServer,
    crm: &MockServer,
) -> TestApp {
    let base_url = mastodon.uri();
    let url = format!("{}/hooks/tidemark", crm.uri());
    spawn_app_with(move |settings| {
        base(settings);
        settings.publishing.channels.insert(
            format!("{tenant}/mastodon"),
            ChannelCredentials::Mastodon(MastodonConfig {
                base_url,
                access_token: SecretString::from("test-token"),
            }),
        );
        settings.publishing.channels.insert(
            format!("{tenant}/crm"),
            ChannelCredentials::Webhook(WebhookConfig {
                url,
                secret: SecretString::from("whsec_b3V0Z29pbmctc2VjcmV0"),
            }),
        );
    })
    .await
}

/// Creates a post for `channels` and publishes it.
async fn publish_to(app: &TestApp, token: &str, channels: &[&str]) -> Uuid {
    let answer = app
        .ok_command(
            token,
            "create-post",
            &json!({"channels": channels, "body": "Winter release notes"}),
        )
        .await;
    let post: Uuid = answer["post_id"]
        .as_str()
        .expect("post id")
        .parse()
        .expect("uuid");
    app.ok_command(token, "publish-post", &json!({"post_id": post}))
        .await;
    post
}

/// The target of `view` on `channel`.
fn target<'a>(view: &'a Value, channel: &str) -> &'a Value {
    view["targets"]
        .as_array()
        .and_then(|targets| targets.iter().find(|t| t["channel"] == channel))
        .unwrap_or_else(|| panic!("no {channel} target in {view}"))
}

fn attempts(target: &Value) -> usize {
    target["attempts"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_second_network_refuses_it_is_partially_published_and_the_first_called_once() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let mastodon = network("/api/v1/statuses", vec![status_created("2001")]).await;
    let crm = network(
        "/hooks/tidemark",
        vec![ResponseTemplate::new(422).set_body_string("unknown contact list")],
    )
    .await;
    let app = app_with_mastodon_and_crm(tenant, &mastodon, &crm).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish_to(&app, &token, &["mastodon", "crm"]).await;

    let view = wait_for(&app, &token, post, status_is("partially_published")).await;
    let published = target(&view, "mastodon");
    assert_eq!(published["state"], "published", "{view}");
    assert_eq!(published["network_post_id"], "2001");
    assert_eq!(published["url"], "https://mastodon.example/@tidemark/2001");
    assert_eq!(attempts(published), 1);
    assert_eq!(published["attempts"][0]["status"], "succeeded");
    let refused = target(&view, "crm");
    assert_eq!(refused["state"], "failed_permanent", "{view}");
    assert_eq!(attempts(refused), 1);
    assert_eq!(refused["attempts"][0]["code"], "network_refused_content");
    assert_eq!(refused["attempts"][0]["retryable"], false);
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("422")),
        "{view}"
    );
    // The first channel is what `channel` and `delivery` describe.
    assert_eq!(view["channel"], "mastodon");
    assert_eq!(view["delivery"]["state"], "published");
    assert_eq!(view["network_post_id"], "2001");

    let listed = app
        .ok_get(&token, "/v1/posts?status=partially_published")
        .await;
    let ids: Vec<&Value> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| &p["post_id"])
        .collect();
    assert_eq!(ids, [&json!(post.to_string())], "{listed}");
    let by_channel = app.ok_get(&token, "/v1/posts?channel=crm").await;
    assert_eq!(by_channel["items"][0]["post_id"], post.to_string());

    // However much time passes, nothing is sent again to either network.
    app.clock.advance(TimeDelta::hours(2));
    let head = app.event_count().await;
    app.ok_get(&token, &format!("/v1/posts/{post}?min_position={head}"))
        .await;
    let sent = requests(&mastodon).await;
    assert_eq!(sent.len(), 1, "the successful network was called again");
    assert_eq!(
        header(&sent[0], "idempotency-key"),
        format!("tidemark-post-{post}-mastodon"),
        "each target of a post of several channels has its own key"
    );
    assert_eq!(requests(&crm).await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_both_networks_take_is_published_with_one_attempt_each() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let mastodon = network("/api/v1/statuses", vec![status_created("2002")]).await;
    let crm = network("/hooks/tidemark", vec![ResponseTemplate::new(200)]).await;
    let app = app_with_mastodon_and_crm(tenant, &mastodon, &crm).await;
    let token = app.token(tenant, Role::Editor);
    let post = publish_to(&app, &token, &["crm", "mastodon"]).await;

    let view = wait_for(&app, &token, post, status_is("published")).await;
    for channel in ["crm", "mastodon"] {
        let target = target(&view, channel);
        assert_eq!(target["state"], "published", "{view}");
        assert_eq!(attempts(target), 1, "{view}");
    }
    assert_eq!(target(&view, "mastodon")["network_post_id"], "2002");
    assert_eq!(view["channel"], "crm", "channels keep the order given");
    assert_eq!(requests(&mastodon).await.len(), 1);
    assert_eq!(requests(&crm).await.len(), 1);
    let events = app
        .stores
        .store
        .read_all(0, 10_000)
        .await
        .expect("log")
        .into_iter()
        .filter(|e| e.stream_id.ends_with(&post.to_string()))
        .map(|e| (e.event_type, e.data["channel"].as_str().map(str::to_owned)))
        .collect::<Vec<_>>();
    let started: Vec<_> = events
        .iter()
        .filter(|(t, _)| t == "post.delivery_attempt_started")
        .map(|(_, channel)| channel.clone())
        .collect();
    assert_eq!(started.len(), 2, "{events:?}");
    assert!(started.contains(&Some("crm".into())) && started.contains(&Some("mastodon".into())));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_one_target_of_a_post_leaves_the_other_untouched() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let mastodon = network("/api/v1/statuses", vec![status_created("2003")]).await;
    let crm = network(
        "/hooks/tidemark",
        vec![ResponseTemplate::new(401), ResponseTemplate::new(200)],
    )
    .await;
    let app = app_with_mastodon_and_crm(tenant, &mastodon, &crm).await;
    let token = app.token(tenant, Role::Editor);
    let admin = app.token(tenant, Role::Admin);
    let post = publish_to(&app, &token, &["mastodon", "crm"]).await;
    let before = wait_for(&app, &token, post, status_is("partially_published")).await;
    assert_eq!(
        target(&before, "crm")["attempts"][0]["code"],
        "network_auth_failed"
    );

    // Which target to retry must be said, and be one the post has; nothing is stored.
    let stored = app.event_count().await;
    let refused = app
        .command(&admin, "retry-delivery", &json!({"post_id": post}))
        .await;
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "channel_required",
    )
    .await;
    let refused = app
        .command(
            &admin,
            "retry-delivery",
            &json!({"post_id": post, "channel": "x"}),
        )
        .await;
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_post_channel",
    )
    .await;
    let refused = app
        .command(
            &admin,
            "retry-delivery",
            &json!({"post_id": post, "channel": "mastodon"}),
        )
        .await;
    assert_problem(refused, StatusCode::CONFLICT, "invalid_post_transition").await;
    assert_eq!(
        app.event_count().await,
        stored,
        "a refused retry stored something"
    );

    app.ok_command(
        &admin,
        "retry-delivery",
        &json!({"post_id": post, "channel": "crm"}),
    )
    .await;
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(attempts(target(&view, "crm")), 2);
    assert_eq!(
        target(&view, "mastodon"),
        target(&before, "mastodon"),
        "the other target changed"
    );
    assert_eq!(requests(&mastodon).await.len(), 1);
    assert_eq!(requests(&crm).await.len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_one_unconfirmed_target_leaves_the_other_untouched() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    let mastodon = network("/api/v1/statuses", vec![status_created("2004")]).await;
    // The receiver takes the post but answers after the client gave up.
    let crm = network(
        "/hooks/tidemark",
        vec![ResponseTemplate::new(200).set_delay(Duration::from_secs(3))],
    )
    .await;
    let app = app_with_mastodon_and_crm(tenant, &mastodon, &crm).await;
    let token = app.token(tenant, Role::Editor);
    let admin = app.token(tenant, Role::Admin);
    let post = publish_to(&app, &token, &["mastodon", "crm"]).await;
    let before = wait_for(&app, &token, post, |v| {
        v["status"] == "unconfirmed" && target(v, "mastodon")["state"] == "published"
    })
    .await;
    assert_eq!(target(&before, "crm")["state"], "unconfirmed");

    let stored = app.event_count().await;
    let resolve = |channel: Option<&str>| {
        let mut body = json!({"post_id": post, "outcome": "published", "network_post_id": "crm-7"});
        if let Some(channel) = channel {
            body["channel"] = json!(channel);
        }
        body
    };
    let refused = app
        .command(&admin, "resolve-unconfirmed", &resolve(None))
        .await;
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "channel_required",
    )
    .await;
    let refused = app
        .command(&admin, "resolve-unconfirmed", &resolve(Some("mastodon")))
        .await;
    assert_problem(refused, StatusCode::CONFLICT, "invalid_post_transition").await;
    assert_eq!(
        app.event_count().await,
        stored,
        "a refused resolution stored something"
    );

    app.ok_command(&admin, "resolve-unconfirmed", &resolve(Some("crm")))
        .await;
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(target(&view, "crm")["network_post_id"], "crm-7");
    assert_eq!(
        target(&view, "mastodon"),
        target(&before, "mastodon"),
        "the other target changed"
    );
    assert_eq!(requests(&mastodon).await.len(), 1);
    assert_eq!(requests(&crm).await.len(), 1, "posted twice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_callback_lands_on_the_target_it_is_about() {
    assert!(
        !production(),
        "channels, mock networks and the clock are configured in-process: an embedded-only test"
    );
    let tenant = Uuid::now_v7();
    // Both channels go through slow webhook receivers: both deliveries stay unconfirmed.
    let slow = network(
        "/hooks/tidemark",
        vec![ResponseTemplate::new(200).set_delay(Duration::from_secs(3))],
    )
    .await;
    let url = format!("{}/hooks/tidemark", slow.uri());
    let app = spawn_app_with(move |settings| {
        base(settings);
        for channel in ["mastodon", "crm"] {
            settings.publishing.channels.insert(
                format!("{tenant}/{channel}"),
                ChannelCredentials::Webhook(WebhookConfig {
                    url: url.clone(),
                    secret: SecretString::from("whsec_b3V0Z29pbmctc2VjcmV0"),
                }),
            );
        }
    })
    .await;
    let token = app.token(tenant, Role::Editor);
    let post = publish_to(&app, &token, &["mastodon", "crm"]).await;
    wait_for(&app, &token, post, |v| {
        target(v, "mastodon")["state"] == "unconfirmed"
            && target(v, "crm")["state"] == "unconfirmed"
    })
    .await;

    let confirmed = |channel: Option<&str>, id: &str| {
        let mut body = json!({
            "type": "post.delivery_confirmed",
            "tenant_id": tenant,
            "post_id": post,
            "network_post_id": id,
        });
        if let Some(channel) = channel {
            body["channel"] = json!(channel);
        }
        body
    };
    // Two deliveries wait for an answer: an unnamed confirmation is refused.
    let stored = app.event_count().await;
    let signed = callback(NEW_SECRET, app.clock.now(), &confirmed(None, "hook-a"));
    assert_problem(
        deliver(&app, "mastodon", &signed).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "channel_required",
    )
    .await;
    assert_eq!(app.event_count().await, stored);

    let signed = callback(
        NEW_SECRET,
        app.clock.now(),
        &confirmed(Some("crm"), "hook-c"),
    );
    assert_eq!(
        deliver(&app, "mastodon", &signed).await.status(),
        StatusCode::OK
    );
    let view = wait_for(&app, &token, post, |v| {
        target(v, "crm")["state"] == "published"
    })
    .await;
    assert_eq!(target(&view, "crm")["network_post_id"], "hook-c");
    assert_eq!(target(&view, "mastodon")["state"], "unconfirmed");
    assert_eq!(view["status"], "unconfirmed");

    // Now one delivery waits: an unnamed confirmation lands on it.
    let signed = callback(NEW_SECRET, app.clock.now(), &confirmed(None, "hook-m"));
    assert_eq!(
        deliver(&app, "mastodon", &signed).await.status(),
        StatusCode::OK
    );
    let view = wait_for(&app, &token, post, status_is("published")).await;
    assert_eq!(target(&view, "mastodon")["network_post_id"], "hook-m");
    assert_eq!(target(&view, "crm")["network_post_id"], "hook-c");

    // A removal names its post by the network's id.
    let removed = json!({
        "type": "post.removed",
        "tenant_id": tenant,
        "post_id": post,
        "network_post_id": "hook-c",
    });
    let signed = callback(NEW_SECRET, app.clock.now(), &removed);
    assert_eq!(
        deliver(&app, "mastodon", &signed).await.status(),
        StatusCode::OK
    );
    let view = wait_for(&app, &token, post, status_is("partially_published")).await;
    assert_eq!(target(&view, "crm")["state"], "removed");
    assert_eq!(target(&view, "mastodon")["state"], "published");
    assert_eq!(requests(&slow).await.len(), 2, "posted twice");
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Exactly once across a restart
// ---------------------------------------------------------------------------------

/// A Mastodon that answers every status with its idempotency key as its id and
/// counts the requests per key.
#[derive(Clone, Default)]
struct CountingMastodon(Arc<Mutex<HashMap<String, usize>>>);

impl Respond for CountingMastodon {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let key = header(request, "idempotency-key");
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default() += 1;
        status_created(&key)
    }
}

impl CountingMastodon {
    fn counts(&self) -> HashMap<String, usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_scheduled_posts_are_each_delivered_once_across_a_restart() {
    if production() {
        return; // restarts on a data directory
    }
    const TENANTS: usize = 10;
    const PER_TENANT: usize = 100;
    let dir = TempDir::new().expect("temp dir");
    let clock = ManualClock::new(Utc::now());
    let mastodon = CountingMastodon::default();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/statuses"))
        .respond_with(mastodon.clone())
        .mount(&server)
        .await;
    let tenants: Vec<Uuid> = (0..TENANTS).map(|_| Uuid::now_v7()).collect();
    let configure = {
        let tenants = tenants.clone();
        let base_url = server.uri();
        move |settings: &mut Settings| {
            base(settings);
            for tenant in &tenants {
                settings.publishing.channels.insert(
                    format!("{tenant}/mastodon"),
                    ChannelCredentials::Mastodon(MastodonConfig {
                        base_url: base_url.clone(),
                        access_token: SecretString::from("test-token"),
                    }),
                );
            }
        }
    };

    let app = spawn_app_in_with(dir.path().to_path_buf(), clock.clone(), configure.clone()).await;
    let start = clock.now();
    // Every tenant's posts are spread over ten minutes.
    for tenant in &tenants {
        let token = app.token(*tenant, Role::Editor);
        for chunk in (0..PER_TENANT).collect::<Vec<_>>().chunks(25) {
            join_all(chunk.iter().map(|i| {
                let token = token.clone();
                let app = &app;
                async move {
                    let post = Uuid::now_v7();
                    app.ok_command(
                        &token,
                        "create-post",
                        &json!({"post_id": post, "channel": "mastodon", "body": format!("Post {i}")}),
                    )
                    .await;
                    let at = start + TimeDelta::minutes(1 + (*i as i64 % 10));
                    app.ok_command(
                        &token,
                        "schedule-post",
                        &json!({"post_id": post, "publish_at": at}),
                    )
                    .await;
                }
            }))
            .await;
        }
    }

    // Half the schedule falls due; stop while those deliveries are going out.
    clock.advance(TimeDelta::minutes(5) + TimeDelta::seconds(30));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while mastodon.counts().len() < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
    let before_restart = mastodon.counts().len();

    // The restarted workflows fire the missed timers and finish the rest.
    clock.advance(TimeDelta::minutes(10));
    let app = spawn_app_in_with(dir.path().to_path_buf(), clock.clone(), configure).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while mastodon.counts().len() < TENANTS * PER_TENANT {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} posts were delivered",
            mastodon.counts().len(),
            TENANTS * PER_TENANT
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = mastodon.counts();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert!(
        before_restart < TENANTS * PER_TENANT,
        "the restart came after all the work"
    );
    for tenant in &tenants {
        let token = app.token(*tenant, Role::Viewer);
        let head = app.event_count().await;
        let published = app
            .ok_get(
                &token,
                &format!("/v1/posts?status=published&limit=200&min_position={head}"),
            )
            .await;
        assert_eq!(
            published["items"].as_array().map(Vec::len),
            Some(PER_TENANT),
            "tenant {tenant}"
        );
    }
    assert_eq!(requests(&server).await.len(), TENANTS * PER_TENANT);
    app.stop().await;
}
