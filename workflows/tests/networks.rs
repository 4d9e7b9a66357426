//! The network adapters against mock servers standing in for Mastodon and webhook
//! receivers: what each answer (or lack of one) is classified as, and that tokens,
//! keys and signatures go out as the networks expect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use auth::webhooks::{Verifier, WebhookHeaders, WebhookSecret};
use chrono::Utc;
use domain::{Channel, PostId, TenantId};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};
use workflows::networks::{
    ChannelCredentials, Delivered, Delivery, DeliveryError, HttpSettings, MastodonAdapter,
    MastodonConfig, NetworkAdapter, NetworkConfigError, WebhookAdapter, WebhookConfig,
    build_client,
};

const TOKEN: &str = "mastodon-token-9f8e7d";
const WEBHOOK_SECRET: &str = "whsec_d2ViaG9vay1zZWNyZXQtZm9yLXRlc3RzLW9ubHk=";
const KEY: &str = "post-0001-attempt-key";
const BODY: &str = "Hello, fediverse!";

fn channel() -> Channel {
    Channel::new("mastodon-main").expect("valid channel")
}

fn delivery(channel: &Channel) -> Delivery<'_> {
    delivery_with_key(channel, KEY)
}

fn delivery_with_key<'a>(channel: &'a Channel, key: &'a str) -> Delivery<'a> {
    Delivery {
        tenant: TenantId::from_uuid(Uuid::from_u128(0x7e)),
        post: PostId::from_uuid(Uuid::from_u128(0x90)),
        channel,
        body: BODY,
        idempotency_key: key,
    }
}

fn client_with_timeout(request_timeout: Duration) -> reqwest::Client {
    build_client(&HttpSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout,
    })
    .expect("client builds")
}

fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

fn mastodon_config(base_url: &str) -> MastodonConfig {
    MastodonConfig {
        base_url: base_url.to_owned(),
        access_token: SecretString::from(TOKEN),
    }
}

fn mastodon(base_url: &str) -> MastodonAdapter {
    MastodonAdapter::new(&mastodon_config(base_url), client()).expect("valid config")
}

fn webhook_config(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.to_owned(),
        secret: SecretString::from(WEBHOOK_SECRET),
    }
}

fn webhook(url: &str) -> WebhookAdapter {
    WebhookAdapter::new(&webhook_config(url), client()).expect("valid config")
}

/// A Mastodon server answering the statuses endpoint with `answer`.
async fn mastodon_answering(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/statuses"))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

/// Delivers one post to a Mastodon server answering `answer`, expecting a failure.
async fn mastodon_failure(answer: ResponseTemplate) -> DeliveryError {
    let server = mastodon_answering(answer).await;
    mastodon(&server.uri())
        .deliver(&delivery(&channel()))
        .await
        .expect_err("the delivery fails")
}

fn status(id: &str) -> serde_json::Value {
    json!({ "id": id, "url": format!("https://social.example/@tidemark/{id}"), "content": BODY })
}

/// A port on which nothing listens: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("bound address").port();
    drop(listener);
    port
}

#[tokio::test]
async fn mastodon_delivery_sends_the_token_and_idempotency_key_and_keeps_the_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/statuses"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("idempotency-key", KEY))
        .and(body_json(json!({ "status": BODY })))
        .respond_with(ResponseTemplate::new(200).set_body_json(status("1101")))
        .expect(1)
        .mount(&server)
        .await;

    let delivered = mastodon(&server.uri())
        .deliver(&delivery(&channel()))
        .await
        .expect("delivered");

    assert_eq!(
        delivered,
        Delivered {
            network_post_id: "1101".into(),
            url: Some("https://social.example/@tidemark/1101".into()),
        }
    );
}

#[tokio::test]
async fn a_mastodon_server_under_a_path_is_reached_under_that_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/social/api/v1/statuses"))
        .respond_with(ResponseTemplate::new(200).set_body_json(status("7")))
        .expect(1)
        .mount(&server)
        .await;

    let delivered = mastodon(&format!("{}/social", server.uri()))
        .deliver(&delivery(&channel()))
        .await
        .expect("delivered");

    assert_eq!(delivered.network_post_id, "7");
}

#[tokio::test]
async fn a_signed_webhook_verifies_with_the_shared_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/tidemark"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "rcv-7" })))
        .expect(1)
        .mount(&server)
        .await;

    let delivered = webhook(&format!("{}/hooks/tidemark", server.uri()))
        .deliver(&delivery(&channel()))
        .await
        .expect("delivered");
    assert_eq!(delivered.network_post_id, "rcv-7");

    let requests = server.received_requests().await.expect("recording is on");
    let request = requests.first().expect("one request");
    let headers = WebhookHeaders::from_lookup(|name| request.headers.get(name)?.to_str().ok());
    let secret = WebhookSecret::parse(WEBHOOK_SECRET).expect("valid secret");
    let verified = Verifier::new([secret])
        .expect("one secret")
        .verify(&headers, &request.body, Utc::now())
        .expect("the signature verifies");
    assert_eq!(verified.id, KEY, "webhook-id is the idempotency key");

    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(
        body,
        json!({
            "type": "post.published",
            "tenant_id": "00000000-0000-0000-0000-00000000007e",
            "post_id": "00000000-0000-0000-0000-000000000090",
            "channel": "mastodon-main",
            "body": BODY,
        })
    );
}

#[tokio::test]
async fn a_webhook_answer_without_an_id_is_known_by_the_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;

    let delivered = webhook(&server.uri())
        .deliver(&delivery(&channel()))
        .await
        .expect("delivered");

    assert_eq!(
        delivered,
        Delivered {
            network_post_id: KEY.into(),
            url: None
        }
    );
}

#[tokio::test]
async fn a_webhook_receiver_cannot_be_asked_whether_a_delivery_landed() {
    let server = MockServer::start().await;
    let result = webhook(&server.uri())
        .reconcile(&delivery(&channel()))
        .await;

    assert_eq!(
        result,
        Err(DeliveryError::Unknown(
            "webhook receivers cannot be asked".into()
        ))
    );
    let requests = server.received_requests().await.expect("recording is on");
    assert!(requests.is_empty(), "reconcile sends nothing");
}

#[tokio::test]
async fn too_many_requests_with_retry_after_in_seconds_is_rate_limited_for_that_long() {
    let error =
        mastodon_failure(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;

    assert_eq!(
        error,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(error.is_retryable());
    assert_eq!(error.code(), "network_rate_limited");
}

#[tokio::test]
async fn too_many_requests_with_retry_after_as_a_date_waits_until_that_date() {
    let until = SystemTime::now() + Duration::from_secs(120);
    let answer =
        ResponseTemplate::new(429).insert_header("Retry-After", httpdate::fmt_http_date(until));

    let error = mastodon_failure(answer).await;

    let DeliveryError::RateLimited {
        retry_after: Some(wait),
    } = error
    else {
        panic!("expected a rate limit with a wait, got {error:?}");
    };
    // The date has whole seconds and some time passes before it is read.
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
}

#[tokio::test]
async fn mastodon_rate_limit_reset_is_honoured_without_retry_after() {
    let reset = (Utc::now() + chrono::TimeDelta::seconds(60)).to_rfc3339();
    let answer = ResponseTemplate::new(429)
        .insert_header("X-RateLimit-Reset", reset.as_str())
        .set_body_json(json!({ "error": "Too many requests" }));

    let error = mastodon_failure(answer).await;

    let DeliveryError::RateLimited {
        retry_after: Some(wait),
    } = error
    else {
        panic!("expected a rate limit with a wait, got {error:?}");
    };
    assert!(
        wait > Duration::from_secs(40) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
}

#[tokio::test]
async fn too_many_requests_without_a_hint_is_rate_limited_with_no_wait_given() {
    let error = mastodon_failure(ResponseTemplate::new(429)).await;

    assert_eq!(error, DeliveryError::RateLimited { retry_after: None });
}

#[tokio::test]
async fn a_server_error_is_transient_and_retryable() {
    let error = mastodon_failure(ResponseTemplate::new(503).set_body_string("down")).await;

    assert!(
        matches!(&error, DeliveryError::Transient(message) if message.contains("503")),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.code(), "network_unavailable");
}

#[tokio::test]
async fn refused_content_is_permanent_and_says_why() {
    let answer = ResponseTemplate::new(422).set_body_json(
        json!({ "error": "Validation failed: Text character limit of 500 exceeded" }),
    );

    let error = mastodon_failure(answer).await;

    assert!(
        matches!(&error, DeliveryError::BadContent(message)
            if message.contains("Validation failed: Text character limit of 500 exceeded")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.code(), "network_refused_content");
}

#[tokio::test]
async fn refused_credentials_are_an_auth_failure() {
    let answer =
        ResponseTemplate::new(401).set_body_json(json!({ "error": "The access token is invalid" }));

    let error = mastodon_failure(answer).await;

    assert!(
        matches!(&error, DeliveryError::Auth(message) if message.contains("The access token is invalid")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.code(), "network_auth_failed");
}

#[tokio::test]
async fn a_success_whose_body_cannot_be_read_leaves_the_outcome_unknown() {
    let error =
        mastodon_failure(ResponseTemplate::new(200).set_body_string("<html>gateway</html>")).await;

    assert!(matches!(error, DeliveryError::Unknown(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(error.code(), "delivery_outcome_unknown");
}

#[tokio::test]
async fn no_answer_before_the_timeout_leaves_the_outcome_unknown_though_the_request_arrived() {
    let server = mastodon_answering(
        ResponseTemplate::new(200)
            .set_body_json(status("1"))
            .set_delay(Duration::from_secs(10)),
    )
    .await;
    let adapter = MastodonAdapter::new(
        &mastodon_config(&server.uri()),
        // Long enough for the request to be written even on a loaded machine, far
        // shorter than the server's delay.
        client_with_timeout(Duration::from_secs(1)),
    )
    .expect("valid config");

    let error = adapter
        .deliver(&delivery(&channel()))
        .await
        .expect_err("times out");

    assert!(matches!(error, DeliveryError::Unknown(_)), "{error:?}");
    assert!(!error.is_retryable());
    let requests = server.received_requests().await.expect("recording is on");
    assert_eq!(requests.len(), 1, "the request was received");
}

#[tokio::test]
async fn a_refused_connection_is_transient_because_nothing_was_sent() {
    let base_url = format!("http://127.0.0.1:{}", closed_port());

    let error = mastodon(&base_url)
        .deliver(&delivery(&channel()))
        .await
        .expect_err("nothing listens");

    assert!(matches!(error, DeliveryError::Transient(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn transport_errors_do_not_repeat_the_url_which_may_hold_a_secret() {
    let url = format!("http://127.0.0.1:{}/hooks/s3cr3t-path-token", closed_port());

    let error = webhook(&url)
        .deliver(&delivery(&channel()))
        .await
        .expect_err("nothing listens");

    assert!(matches!(error, DeliveryError::Transient(_)), "{error:?}");
    assert!(!error.to_string().contains("s3cr3t"), "{error}");
}

/// A Mastodon server that honours `Idempotency-Key`: a repeated key answers the
/// status created the first time.
#[derive(Clone, Default)]
struct IdempotentMastodon {
    statuses_by_key: Arc<Mutex<HashMap<String, String>>>,
}

impl IdempotentMastodon {
    fn created(&self) -> usize {
        self.statuses_by_key.lock().expect("lock").len()
    }
}

impl Respond for IdempotentMastodon {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let Some(key) = request
            .headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
        else {
            return ResponseTemplate::new(400);
        };
        let mut statuses = self.statuses_by_key.lock().expect("lock");
        let next_id = (1000 + statuses.len()).to_string();
        let id = statuses.entry(key.to_owned()).or_insert(next_id).clone();
        ResponseTemplate::new(200).set_body_json(status(&id))
    }
}

#[tokio::test]
async fn mastodon_reconcile_with_the_same_key_answers_the_status_already_created() {
    let server = MockServer::start().await;
    let fake = IdempotentMastodon::default();
    Mock::given(method("POST"))
        .and(path("/api/v1/statuses"))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    let adapter = mastodon(&server.uri());
    let channel = channel();

    let delivered = adapter
        .deliver(&delivery(&channel))
        .await
        .expect("delivered");
    let reconciled = adapter
        .reconcile(&delivery(&channel))
        .await
        .expect("reconciled");

    assert_eq!(reconciled, Some(delivered));
    assert_eq!(fake.created(), 1, "the status was created once");
    let requests = server.received_requests().await.expect("recording is on");
    let keys: Vec<_> = requests
        .iter()
        .map(|request| request.headers.get("idempotency-key").cloned())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);

    // A delivery with another key is another status.
    let other = adapter
        .deliver(&delivery_with_key(&channel, "another-key"))
        .await
        .expect("delivered");
    assert_eq!(fake.created(), 2);
    assert_ne!(Some(other), reconciled);
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let webhook_url = "https://hooks.example/services/T000/B000/s3cr3t-path-token?key=s3cr3t-query";
    let mastodon_config = mastodon_config("https://social.example");
    let webhook_config = webhook_config(webhook_url);
    let printed = [
        format!("{mastodon_config:?}"),
        format!("{webhook_config:?}"),
        format!(
            "{:?}",
            ChannelCredentials::Mastodon(mastodon_config.clone())
        ),
        format!("{:?}", ChannelCredentials::Webhook(webhook_config.clone())),
        format!(
            "{:?}",
            MastodonAdapter::new(&mastodon_config, client()).expect("valid config")
        ),
        format!(
            "{:?}",
            WebhookAdapter::new(&webhook_config, client()).expect("valid config")
        ),
    ];
    for printed in printed {
        for secret in [TOKEN, "d2ViaG9vay1zZWNyZXQ", "s3cr3t"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }
}

#[test]
fn credentials_are_read_from_settings_and_build_their_adapter() {
    let settings = json!([
        { "network": "mastodon", "base_url": "https://social.example", "access_token": TOKEN },
        { "network": "webhook", "url": "https://hooks.example/in", "secret": WEBHOOK_SECRET },
    ]);
    let credentials: Vec<ChannelCredentials> =
        serde_json::from_value(settings).expect("valid settings");
    let names: Vec<_> = credentials
        .iter()
        .map(|credentials| credentials.adapter(&client()).expect("valid config").name())
        .collect();

    assert_eq!(names, ["mastodon", "webhook"]);
}

#[test]
fn unusable_configuration_is_refused_when_the_adapter_is_built() {
    let not_a_url = MastodonAdapter::new(&mastodon_config("social.example"), client());
    assert!(
        matches!(not_a_url, Err(NetworkConfigError::InvalidUrl { .. })),
        "{not_a_url:?}"
    );

    let ftp = WebhookAdapter::new(&webhook_config("ftp://hooks.example/in"), client());
    assert!(
        matches!(ftp, Err(NetworkConfigError::InvalidUrl { .. })),
        "{ftp:?}"
    );

    let token_with_newline = MastodonConfig {
        base_url: "https://social.example".into(),
        access_token: SecretString::from("abc\ndef"),
    };
    let bad_token = MastodonAdapter::new(&token_with_newline, client());
    assert!(
        matches!(bad_token, Err(NetworkConfigError::InvalidHeader { .. })),
        "{bad_token:?}"
    );

    let bad_secret = WebhookConfig {
        url: "https://hooks.example/in".into(),
        secret: SecretString::from("whsec_%%%"),
    };
    let bad_secret = WebhookAdapter::new(&bad_secret, client());
    assert!(
        matches!(bad_secret, Err(NetworkConfigError::InvalidSecret(_))),
        "{bad_secret:?}"
    );
}
