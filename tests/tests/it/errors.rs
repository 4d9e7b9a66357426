//! Every way a request can be refused, per route: the status, the
//! `application/problem+json` body with its stable `code`, and — the part a client
//! cannot see — that a refused command stored nothing and left the read models as
//! they were.
//!
//! Most tests here are tables; [`refused`] is the one check they share.

use std::io::{Read, Write};
use std::time::Duration;

use auth::{Authenticator, Role};
use chrono::{Datelike, TimeDelta, Utc};
use command_api::Clock;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, assert_problem, spawn_app};

const ROLES: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

/// Asserts that `response` is the problem `status`/`code` and that the store still
/// holds `stored` events. Returns the problem body.
async fn refused(
    app: &TestApp,
    stored: u64,
    response: Response,
    status: StatusCode,
    code: &str,
) -> Value {
    let problem = assert_problem(response, status, code).await;
    assert_eq!(
        app.event_count().await,
        stored,
        "a request refused with {code} must store nothing"
    );
    problem
}

/// POSTs raw bytes to a command route, with the content type given (or none).
async fn post_raw(
    app: &TestApp,
    token: Option<&str>,
    name: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = app
        .client
        .post(format!("{}/v1/commands/{name}", app.address))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.expect("request sent")
}

/// POSTs a command with a raw `Authorization` header value (or none).
async fn command_with_authorization(
    app: &TestApp,
    authorization: Option<&str>,
    name: &str,
    body: &Value,
) -> Response {
    let mut request = app
        .client
        .post(format!("{}/v1/commands/{name}", app.address))
        .json(body);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("request sent")
}

/// GETs with a raw `Authorization` header value (or none).
async fn get_with_authorization(
    app: &TestApp,
    authorization: Option<&str>,
    path: &str,
) -> Response {
    let mut request = app.client.get(format!("{}{path}", app.address));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("request sent")
}

/// A body of the right shape for each command (the ids may name nothing).
fn valid_body(name: &str) -> Value {
    let id = Uuid::now_v7();
    let tomorrow = (Utc::now() + TimeDelta::days(1)).to_rfc3339();
    match name {
        "set-budget-limits" => {
            json!({"soft_limit_micros": 500, "hard_limit_micros": 1_000, "alert_thresholds_pct": [50]})
        }
        "reserve-budget" => json!({"amount_micros": 100, "purpose": "drafts", "ttl_seconds": 60}),
        "commit-budget" => json!({"reservation_id": id, "actual_micros": 100}),
        "release-budget" => json!({"reservation_id": id}),
        "create-post" => json!({"channel": "linkedin", "body": "hello"}),
        "edit-post" => json!({"post_id": id, "body": "hello again"}),
        "schedule-post" => json!({"post_id": id, "publish_at": tomorrow}),
        "publish-post" | "cancel-post" => json!({"post_id": id}),
        other => panic!("no body for {other}"),
    }
}

const COMMANDS: [&str; 9] = [
    "set-budget-limits",
    "reserve-budget",
    "commit-budget",
    "release-budget",
    "create-post",
    "edit-post",
    "schedule-post",
    "publish-post",
    "cancel-post",
];

/// Tokens every 401 case is tried with, and the code each gets.
fn bad_authorizations(app: &TestApp, tenant: Uuid) -> Vec<(Option<String>, &'static str)> {
    let other_secret = Authenticator::new(&SecretString::from(
        "another-secret-another-secret-0123456789",
    ))
    .expect("secret");
    let forged = other_secret
        .mint(
            "mallory",
            tenant,
            &[Role::Admin],
            Utc::now(),
            TimeDelta::hours(1),
        )
        .expect("mint");
    let expired = app
        .auth
        .mint(
            "alice",
            tenant,
            &[Role::Admin],
            Utc::now() - TimeDelta::hours(2),
            TimeDelta::hours(1),
        )
        .expect("mint");
    let no_roles = app
        .auth
        .mint("alice", tenant, &[], Utc::now(), TimeDelta::hours(1))
        .expect("mint");
    let no_subject = app
        .auth
        .mint("", tenant, &[Role::Admin], Utc::now(), TimeDelta::hours(1))
        .expect("mint");
    let good = app.token(tenant, Role::Admin);
    vec![
        (None, "missing_token"),
        (Some("Bearer not-a-jwt".into()), "invalid_token"),
        (Some("Bearer ".into()), "invalid_token"),
        (Some(format!("Basic {good}")), "invalid_token"),
        (Some(format!("Bearer {forged}")), "invalid_token"),
        (Some(format!("Bearer {no_roles}")), "invalid_token"),
        (Some(format!("Bearer {no_subject}")), "invalid_token"),
        (Some(format!("Bearer {good}x")), "invalid_token"),
        (Some(format!("Bearer {expired}")), "token_expired"),
    ]
}

/// Sends a command with `Transfer-Encoding: chunked` (so without a `Content-Length`)
/// over a plain socket, and returns the raw response.
async fn post_chunked(app: &TestApp, token: &str, name: &str, chunks: Vec<Vec<u8>>) -> String {
    let address = app.address.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /v1/commands/{name} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        let mut request = head.into_bytes();
        for chunk in &chunks {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // The server may answer and close before it has read everything; what it
        // answered is what matters.
        let _ = stream.write_all(&request);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .expect("socket task")
}

#[tokio::test]
async fn a_command_body_that_is_not_json_is_refused_as_malformed_json() {
    let app = spawn_app().await;
    let admin = app.token(Uuid::now_v7(), Role::Admin);
    for name in [
        "set-budget-limits",
        "reserve-budget",
        "create-post",
        "schedule-post",
    ] {
        for body in [
            "",
            "{",
            "not json",
            "{\"channel\": \"linkedin\",}",
            "{\"a\": 1} trailing",
            "{'single': 'quotes'}",
        ] {
            let response = post_raw(&app, Some(&admin), name, Some("application/json"), body).await;
            let problem =
                refused(&app, 0, response, StatusCode::BAD_REQUEST, "malformed_json").await;
            assert_eq!(
                problem["type"], "urn:tidemark:problem:malformed_json",
                "{name} with {body:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_command_body_with_an_unknown_or_missing_field_or_that_is_not_an_object_is_refused_as_invalid_body()
 {
    let app = spawn_app().await;
    let admin = app.token(Uuid::now_v7(), Role::Admin);
    for name in COMMANDS {
        let valid = valid_body(name);
        let fields = valid.as_object().expect("object").clone();
        let mut cases: Vec<(String, Value)> = vec![
            ("an unknown field".into(), {
                let mut body = valid.clone();
                body["expected_versoin"] = json!(1);
                body
            }),
            ("an empty object".into(), json!({})),
            (
                "an array of the values".into(),
                Value::Array(fields.values().cloned().collect()),
            ),
            ("a string".into(), json!("hello")),
            ("a number".into(), json!(42)),
            ("null".into(), Value::Null),
            ("true".into(), json!(true)),
        ];
        for field in fields.keys() {
            if name == "set-budget-limits" && field == "alert_thresholds_pct" {
                continue; // It defaults to no thresholds.
            }
            let mut body = valid.clone();
            body.as_object_mut().expect("object").remove(field);
            cases.push((format!("no {field}"), body));
            let mut body = valid.clone();
            body[field] = json!({"nested": true});
            cases.push((format!("{field} of the wrong type"), body));
        }
        for (what, body) in cases {
            let problem = refused(
                &app,
                0,
                app.command(&admin, name, &body).await,
                StatusCode::BAD_REQUEST,
                "invalid_body",
            )
            .await;
            assert!(problem["detail"].is_string(), "{name} with {what}");
        }
    }
    // Values that do not fit the field's type are a shape error too.
    for (name, body) in [
        (
            "set-budget-limits",
            json!({"soft_limit_micros": 1, "hard_limit_micros": 2, "alert_thresholds_pct": [300]}),
        ),
        (
            "reserve-budget",
            json!({"amount_micros": 1.5, "purpose": "x", "ttl_seconds": 60}),
        ),
        (
            "commit-budget",
            json!({"reservation_id": "not-a-uuid", "actual_micros": 1}),
        ),
        (
            "create-post",
            json!({"channel": "linkedin", "body": "x", "post_id": 7}),
        ),
        (
            "schedule-post",
            json!({"post_id": Uuid::now_v7(), "publish_at": "tomorrow"}),
        ),
        (
            "edit-post",
            json!({"post_id": Uuid::now_v7(), "body": "x", "expected_version": -1}),
        ),
    ] {
        refused(
            &app,
            0,
            app.command(&admin, name, &body).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        )
        .await;
    }
}

#[tokio::test]
async fn a_command_without_a_valid_token_is_refused_with_401() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    for name in COMMANDS {
        for (authorization, code) in bad_authorizations(&app, tenant) {
            let response =
                command_with_authorization(&app, authorization.as_deref(), name, &valid_body(name))
                    .await;
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().expect("ascii").to_owned());
            refused(&app, 0, response, StatusCode::UNAUTHORIZED, code).await;
            assert_eq!(
                challenge.as_deref(),
                Some("Bearer realm=\"tidemark\""),
                "{name} with {authorization:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_command_refuses_a_role_below_the_one_it_needs_with_403() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let needed = |name: &str| {
        if name == "set-budget-limits" {
            Role::Admin
        } else {
            Role::Editor
        }
    };
    for name in COMMANDS {
        for role in ROLES {
            let stored = app.event_count().await;
            let response = app
                .command(&app.token(tenant, role), name, &valid_body(name))
                .await;
            if role < needed(name) {
                refused(&app, stored, response, StatusCode::FORBIDDEN, "forbidden").await;
            } else {
                let status = response.status();
                let text = response.text().await.expect("body");
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role} may run {name}, got {status}: {text}"
                );
            }
        }
    }
    // Roles add up: a token with several gets the highest.
    let both = app
        .auth
        .mint(
            "carol",
            tenant,
            &[Role::Viewer, Role::Admin],
            Utc::now(),
            TimeDelta::hours(1),
        )
        .expect("mint");
    app.ok_command(&both, "set-budget-limits", &valid_body("set-budget-limits"))
        .await;
}

#[tokio::test]
async fn a_viewer_can_read_every_query_route() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let viewer = app.token(tenant, Role::Viewer);
    app.ok_command(
        &admin,
        "set-budget-limits",
        &valid_body("set-budget-limits"),
    )
    .await;
    app.ok_command(&admin, "reserve-budget", &valid_body("reserve-budget"))
        .await;
    let created = app
        .ok_command(&admin, "create-post", &valid_body("create-post"))
        .await;
    let at = created["position"].as_u64().expect("position");
    let post_id = created["post_id"].as_str().expect("post id");
    for path in [
        "/v1/budget".to_owned(),
        "/v1/budget/reservations".to_owned(),
        "/v1/budget/reservations?status=all&limit=5".to_owned(),
        "/v1/posts".to_owned(),
        "/v1/posts?status=draft&channel=linkedin&limit=1".to_owned(),
        format!("/v1/posts/{post_id}"),
    ] {
        let separator = if path.contains('?') { '&' } else { '?' };
        let body = app
            .ok_get(&viewer, &format!("{path}{separator}min_position={at}"))
            .await;
        assert!(body.is_object(), "{path}");
    }
}

#[tokio::test]
async fn a_command_body_over_the_size_limit_is_refused_with_413_with_or_without_a_content_length() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let limit = app.settings.http.max_body_bytes;
    assert_eq!(limit, 16 * 1024);

    // Exactly at the limit is accepted: 6352 two-byte and 3648 one-byte characters make
    // a 10000-character body, the longest a post may have, in 16352 bytes, and the
    // JSON around it is 32 bytes.
    let text = format!("{}{}", "é".repeat(6_352), "a".repeat(3_648));
    let at_limit = serde_json::to_vec(&json!({"channel": "linkedin", "body": text})).expect("json");
    assert_eq!(at_limit.len(), limit);
    let response = post_raw(
        &app,
        Some(&admin),
        "create-post",
        Some("application/json"),
        at_limit,
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.expect("body")
    );
    let stored = app.event_count().await;
    assert_eq!(stored, 1);

    let over_limit =
        serde_json::to_vec(&json!({"channel": "linkedin", "body": format!("{text}b")}))
            .expect("json");
    assert_eq!(over_limit.len(), limit + 1);
    let response = post_raw(
        &app,
        Some(&admin),
        "create-post",
        Some("application/json"),
        over_limit,
    )
    .await;
    refused(
        &app,
        stored,
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let big_purpose = json!({"amount_micros": 1, "purpose": "x".repeat(limit), "ttl_seconds": 60});
    refused(
        &app,
        stored,
        app.command(&admin, "reserve-budget", &big_purpose).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let big_thresholds = json!({"soft_limit_micros": 1, "hard_limit_micros": 2, "alert_thresholds_pct": vec![50; limit]});
    refused(
        &app,
        stored,
        app.command(&admin, "set-budget-limits", &big_thresholds)
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // Without a Content-Length the limit holds as the body streams in. A small
    // chunked body goes through, so the refusal below is the limit's doing.
    let small =
        serde_json::to_vec(&json!({"channel": "linkedin", "body": "chunked"})).expect("json");
    let answer = post_chunked(
        &app,
        &admin,
        "create-post",
        vec![small[..10].to_vec(), small[10..].to_vec()],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let stored = app.event_count().await;
    assert_eq!(stored, 2);
    let chunk = vec![b' '; 4 * 1024];
    for name in ["create-post", "reserve-budget"] {
        let answer = post_chunked(&app, &admin, name, vec![chunk.clone(); 5]).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{name}: {answer}");
        assert!(answer.contains("payload_too_large"), "{name}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert_eq!(app.event_count().await, stored);
    }
}

#[tokio::test]
async fn a_command_body_of_another_media_type_is_refused_with_415() {
    let app = spawn_app().await;
    let admin = app.token(Uuid::now_v7(), Role::Admin);
    for name in [
        "set-budget-limits",
        "reserve-budget",
        "create-post",
        "cancel-post",
    ] {
        let body = serde_json::to_vec(&valid_body(name)).expect("json");
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/problem+json"),
            Some("application/jsonp"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let response = post_raw(&app, Some(&admin), name, content_type, body.clone()).await;
            refused(
                &app,
                0,
                response,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .await;
        }
    }
    // Parameters and letter case do not matter.
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let body = serde_json::to_vec(&valid_body("create-post")).expect("json");
        let response = post_raw(&app, Some(&admin), "create-post", Some(content_type), body).await;
        assert_eq!(response.status(), StatusCode::OK, "{content_type}");
    }
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_with_400() {
    let app = spawn_app().await;
    let editor = app.token(Uuid::now_v7(), Role::Editor);
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str(), "tab\tinside"] {
        let response = app
            .client
            .post(format!("{}/v1/commands/create-post", app.address))
            .bearer_auth(&editor)
            .header("idempotency-key", key)
            .json(&valid_body("create-post"))
            .send()
            .await
            .expect("request sent");
        refused(
            &app,
            0,
            response,
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        )
        .await;
    }
    let response = app
        .client
        .post(format!("{}/v1/commands/create-post", app.address))
        .bearer_auth(&editor)
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header"),
        )
        .json(&valid_body("create-post"))
        .send()
        .await
        .expect("request sent");
    refused(
        &app,
        0,
        response,
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    )
    .await;
}

#[tokio::test]
async fn budget_limits_that_break_a_rule_are_refused_with_422() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let limits = |soft: i64, hard: i64, thresholds: Value| json!({"soft_limit_micros": soft, "hard_limit_micros": hard, "alert_thresholds_pct": thresholds});
    let set = app
        .ok_command(
            &admin,
            "set-budget-limits",
            &limits(500, 1_000, json!([50])),
        )
        .await;
    let at = set["position"].as_u64().expect("position");
    let before = app
        .ok_get(&admin, &format!("/v1/budget?min_position={at}"))
        .await;
    let with_period = |period: &str| {
        let mut body = limits(500, 1_000, json!([]));
        body["period"] = json!(period);
        body
    };
    let cases = [
        (
            limits(1_001, 1_000, json!([])),
            "soft_limit_above_hard_limit",
        ),
        (limits(0, 0, json!([])), "hard_limit_zero"),
        (limits(-1, 1_000, json!([])), "invalid_amount"),
        (limits(500, -1_000, json!([])), "invalid_amount"),
        (limits(500, 1_000, json!([0])), "invalid_alert_thresholds"),
        (limits(500, 1_000, json!([101])), "invalid_alert_thresholds"),
        (
            limits(500, 1_000, json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])),
            "invalid_alert_thresholds",
        ),
        (with_period("2026-13"), "invalid_period"),
        (with_period("26-01"), "invalid_period"),
        (with_period("2026-1"), "invalid_period"),
        (with_period("1999-01"), "invalid_period"),
    ];
    for (body, code) in cases {
        let response = app.command(&admin, "set-budget-limits", &body).await;
        refused(&app, 1, response, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    assert_eq!(
        app.ok_get(&admin, "/v1/budget").await,
        before,
        "the read model is unchanged"
    );
}

#[tokio::test]
async fn reservations_that_break_a_rule_are_refused_with_422() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let editor = app.token(tenant, Role::Editor);
    let reserve = |amount: i64, purpose: &str, ttl: i64| json!({"amount_micros": amount, "purpose": purpose, "ttl_seconds": ttl});

    refused(
        &app,
        0,
        app.command(&editor, "reserve-budget", &reserve(100, "drafts", 60))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "budget_not_configured",
    )
    .await;
    assert_problem(
        app.get(&editor, "/v1/budget").await,
        StatusCode::NOT_FOUND,
        "budget_not_configured",
    )
    .await;

    app.ok_command(
        &admin,
        "set-budget-limits",
        &json!({"soft_limit_micros": 500, "hard_limit_micros": 1_000}),
    )
    .await;
    let held = app
        .ok_command(&editor, "reserve-budget", &reserve(600, "drafts", 60))
        .await;
    let at = held["position"].as_u64().expect("position");
    let budget = app
        .ok_get(&editor, &format!("/v1/budget?min_position={at}"))
        .await;
    let reservations = app
        .ok_get(&editor, "/v1/budget/reservations?status=all")
        .await;
    let stored = app.event_count().await;

    let long_purpose = "p".repeat(201);
    let cases = [
        (reserve(401, "drafts", 60), "budget_exceeded"),
        (reserve(0, "drafts", 60), "amount_not_positive"),
        (reserve(-1, "drafts", 60), "invalid_amount"),
        (reserve(1, "drafts", 0), "invalid_ttl"),
        (reserve(1, "drafts", -60), "invalid_ttl"),
        (reserve(1, "drafts", 7 * 24 * 3600 + 1), "invalid_ttl"),
        (reserve(1, "drafts", i64::MAX), "invalid_ttl"),
        (reserve(1, "", 60), "invalid_purpose"),
        (reserve(1, "   ", 60), "invalid_purpose"),
        (reserve(1, &long_purpose, 60), "invalid_purpose"),
    ];
    for (body, code) in cases {
        refused(
            &app,
            stored,
            app.command(&editor, "reserve-budget", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        )
        .await;
    }
    let mut again = reserve(1, "drafts", 60);
    again["reservation_id"] = held["reservation_id"].clone();
    refused(
        &app,
        stored,
        app.command(&editor, "reserve-budget", &again).await,
        StatusCode::CONFLICT,
        "reservation_already_exists",
    )
    .await;
    let negative = json!({"reservation_id": held["reservation_id"], "actual_micros": -5});
    refused(
        &app,
        stored,
        app.command(&editor, "commit-budget", &negative).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_amount",
    )
    .await;

    assert_eq!(app.ok_get(&editor, "/v1/budget").await, budget);
    assert_eq!(
        app.ok_get(&editor, "/v1/budget/reservations?status=all")
            .await,
        reservations
    );
}

#[tokio::test]
async fn settling_a_reservation_twice_or_one_that_does_not_exist_is_refused() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let editor = app.token(tenant, Role::Editor);
    let unknown = Uuid::now_v7();
    for (name, body) in [
        (
            "commit-budget",
            json!({"reservation_id": unknown, "actual_micros": 1}),
        ),
        ("release-budget", json!({"reservation_id": unknown})),
    ] {
        // Before any limits are set, and after.
        refused(
            &app,
            0,
            app.command(&editor, name, &body).await,
            StatusCode::NOT_FOUND,
            "reservation_not_found",
        )
        .await;
    }
    app.ok_command(
        &admin,
        "set-budget-limits",
        &json!({"soft_limit_micros": 500, "hard_limit_micros": 1_000}),
    )
    .await;
    let reserve = json!({"amount_micros": 100, "purpose": "drafts", "ttl_seconds": 60});
    let committed =
        app.ok_command(&editor, "reserve-budget", &reserve).await["reservation_id"].clone();
    app.ok_command(
        &editor,
        "commit-budget",
        &json!({"reservation_id": committed, "actual_micros": 80}),
    )
    .await;
    let released =
        app.ok_command(&editor, "reserve-budget", &reserve).await["reservation_id"].clone();
    let last = app
        .ok_command(
            &editor,
            "release-budget",
            &json!({"reservation_id": released}),
        )
        .await;
    let at = last["position"].as_u64().expect("position");
    let budget = app
        .ok_get(&editor, &format!("/v1/budget?min_position={at}"))
        .await;
    let stored = app.event_count().await;

    for (name, body) in [
        (
            "commit-budget",
            json!({"reservation_id": unknown, "actual_micros": 1}),
        ),
        ("release-budget", json!({"reservation_id": unknown})),
    ] {
        refused(
            &app,
            stored,
            app.command(&editor, name, &body).await,
            StatusCode::NOT_FOUND,
            "reservation_not_found",
        )
        .await;
    }
    for (name, body) in [
        (
            "commit-budget",
            json!({"reservation_id": committed, "actual_micros": 80}),
        ),
        ("release-budget", json!({"reservation_id": committed})),
        (
            "commit-budget",
            json!({"reservation_id": released, "actual_micros": 80}),
        ),
        ("release-budget", json!({"reservation_id": released})),
    ] {
        let problem = refused(
            &app,
            stored,
            app.command(&editor, name, &body).await,
            StatusCode::CONFLICT,
            "reservation_already_settled",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("already"),
            "{problem}"
        );
    }
    assert_eq!(app.ok_get(&editor, "/v1/budget").await, budget);
}

#[tokio::test]
async fn post_commands_that_break_a_rule_are_refused_with_404_409_or_422() {
    let app = spawn_app().await;
    let editor = app.token(Uuid::now_v7(), Role::Editor);
    let unknown = Uuid::now_v7();
    let tomorrow = (Utc::now() + TimeDelta::days(1)).to_rfc3339();
    for (name, body) in [
        ("edit-post", json!({"post_id": unknown, "body": "x"})),
        (
            "schedule-post",
            json!({"post_id": unknown, "publish_at": tomorrow}),
        ),
        ("publish-post", json!({"post_id": unknown})),
        ("cancel-post", json!({"post_id": unknown})),
        // A version guard on a post that does not exist does not turn "not found" into
        // a conflict.
        (
            "edit-post",
            json!({"post_id": unknown, "body": "x", "expected_version": 1}),
        ),
        (
            "schedule-post",
            json!({"post_id": unknown, "publish_at": tomorrow, "expected_version": 3}),
        ),
        (
            "publish-post",
            json!({"post_id": unknown, "expected_version": 1}),
        ),
        (
            "cancel-post",
            json!({"post_id": unknown, "expected_version": 0}),
        ),
    ] {
        refused(
            &app,
            0,
            app.command(&editor, name, &body).await,
            StatusCode::NOT_FOUND,
            "post_not_found",
        )
        .await;
    }

    let draft = app
        .ok_command(
            &editor,
            "create-post",
            &json!({"channel": "linkedin", "body": "draft", "post_id": Uuid::now_v7()}),
        )
        .await;
    let draft_id = draft["post_id"].clone();
    let cancelled = app
        .ok_command(&editor, "create-post", &valid_body("create-post"))
        .await["post_id"]
        .clone();
    let last = app
        .ok_command(&editor, "cancel-post", &json!({"post_id": cancelled}))
        .await;
    let at = last["position"].as_u64().expect("position");
    let draft_view = app
        .ok_get(
            &editor,
            &format!(
                "/v1/posts/{}?min_position={at}",
                draft_id.as_str().expect("id")
            ),
        )
        .await;
    let cancelled_view = app
        .ok_get(
            &editor,
            &format!("/v1/posts/{}", cancelled.as_str().expect("id")),
        )
        .await;
    let stored = app.event_count().await;

    let past = (app.clock.now() - TimeDelta::minutes(1)).to_rfc3339();
    let now = app.clock.now().to_rfc3339();
    let long_body = "b".repeat(10_001);
    let long_channel = "c".repeat(65);
    let cases = [
        (
            "create-post",
            json!({"channel": "linkedin", "body": "again", "post_id": draft_id}),
            StatusCode::CONFLICT,
            "post_already_exists",
        ),
        (
            "create-post",
            json!({"channel": "LinkedIn", "body": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_channel",
        ),
        (
            "create-post",
            json!({"channel": "", "body": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_channel",
        ),
        (
            "create-post",
            json!({"channel": "linked in", "body": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_channel",
        ),
        (
            "create-post",
            json!({"channel": long_channel, "body": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_channel",
        ),
        (
            "create-post",
            json!({"channel": "linkedin", "body": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_post_body",
        ),
        (
            "create-post",
            json!({"channel": "linkedin", "body": " \n\t"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_post_body",
        ),
        (
            "create-post",
            json!({"channel": "linkedin", "body": long_body}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_post_body",
        ),
        (
            "edit-post",
            json!({"post_id": draft_id, "body": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_post_body",
        ),
        (
            "edit-post",
            json!({"post_id": draft_id, "body": long_body}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_post_body",
        ),
        (
            "schedule-post",
            json!({"post_id": draft_id, "publish_at": past}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "publish_time_in_past",
        ),
        (
            "schedule-post",
            json!({"post_id": draft_id, "publish_at": now}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "publish_time_in_past",
        ),
        (
            "edit-post",
            json!({"post_id": draft_id, "body": "x", "expected_version": 2}),
            StatusCode::CONFLICT,
            "version_conflict",
        ),
        (
            "edit-post",
            json!({"post_id": cancelled, "body": "x"}),
            StatusCode::CONFLICT,
            "invalid_post_transition",
        ),
        (
            "schedule-post",
            json!({"post_id": cancelled, "publish_at": tomorrow}),
            StatusCode::CONFLICT,
            "invalid_post_transition",
        ),
        (
            "publish-post",
            json!({"post_id": cancelled}),
            StatusCode::CONFLICT,
            "invalid_post_transition",
        ),
        (
            "cancel-post",
            json!({"post_id": cancelled}),
            StatusCode::CONFLICT,
            "invalid_post_transition",
        ),
    ];
    for (name, body, status, code) in cases {
        refused(
            &app,
            stored,
            app.command(&editor, name, &body).await,
            status,
            code,
        )
        .await;
    }
    assert_eq!(
        app.ok_get(
            &editor,
            &format!("/v1/posts/{}", draft_id.as_str().expect("id"))
        )
        .await,
        draft_view
    );
    assert_eq!(
        app.ok_get(
            &editor,
            &format!("/v1/posts/{}", cancelled.as_str().expect("id"))
        )
        .await,
        cancelled_view
    );
}

#[tokio::test]
async fn a_published_post_can_be_neither_edited_nor_rescheduled_nor_cancelled_nor_published_again()
{
    let app = spawn_app().await;
    let editor = app.token(Uuid::now_v7(), Role::Editor);
    let post_id = app
        .ok_command(&editor, "create-post", &valid_body("create-post"))
        .await["post_id"]
        .clone();
    let requested = app
        .ok_command(&editor, "publish-post", &json!({"post_id": post_id}))
        .await;
    let at = requested["position"].as_u64().expect("position");
    let path = format!("/v1/posts/{}", post_id.as_str().expect("id"));
    let published = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            let post = app
                .ok_get(&editor, &format!("{path}?min_position={at}"))
                .await;
            if post["status"] == "published" {
                return post;
            }
        }
    })
    .await
    .expect("the publisher delivers within ten seconds");
    let stored = app.event_count().await;
    let tomorrow = (Utc::now() + TimeDelta::days(1)).to_rfc3339();
    for (name, body) in [
        ("edit-post", json!({"post_id": post_id, "body": "too late"})),
        (
            "schedule-post",
            json!({"post_id": post_id, "publish_at": tomorrow}),
        ),
        ("cancel-post", json!({"post_id": post_id})),
        ("publish-post", json!({"post_id": post_id})),
    ] {
        let problem = refused(
            &app,
            stored,
            app.command(&editor, name, &body).await,
            StatusCode::CONFLICT,
            "invalid_post_transition",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("published"),
            "{problem}"
        );
    }
    assert_eq!(app.ok_get(&editor, &path).await, published);
}

#[tokio::test]
async fn bad_query_parameters_are_refused_with_400_invalid_query() {
    let app = spawn_app().await;
    let viewer = app.token(Uuid::now_v7(), Role::Viewer);
    let post = format!("/v1/posts/{}", Uuid::now_v7());
    let cases = [
        "/v1/budget?period=2026-13".to_owned(),
        "/v1/budget?period=2026-1".to_owned(),
        "/v1/budget?period=26-01".to_owned(),
        "/v1/budget?period=1969-12".to_owned(),
        "/v1/budget?period=next".to_owned(),
        "/v1/budget?min_position=soon".to_owned(),
        "/v1/budget?min_position=-1".to_owned(),
        "/v1/budget?unknown=1".to_owned(),
        "/v1/budget/reservations?period=2026-00".to_owned(),
        "/v1/budget/reservations?status=pending".to_owned(),
        "/v1/budget/reservations?status=OPEN".to_owned(),
        "/v1/budget/reservations?limit=0".to_owned(),
        "/v1/budget/reservations?limit=1001".to_owned(),
        "/v1/budget/reservations?limit=-1".to_owned(),
        "/v1/budget/reservations?limit=ten".to_owned(),
        "/v1/budget/reservations?cursor=abc".to_owned(),
        "/v1/posts?status=archived".to_owned(),
        "/v1/posts?limit=0".to_owned(),
        "/v1/posts?limit=201".to_owned(),
        "/v1/posts?limit=many".to_owned(),
        "/v1/posts?cursor=not-a-cursor".to_owned(),
        "/v1/posts?cursor=".to_owned(),
        "/v1/posts?cursor=eDEy".to_owned(),
        "/v1/posts?campaign_id=spring".to_owned(),
        "/v1/posts?period=2026-01".to_owned(),
        "/v1/posts?min_position=x".to_owned(),
        format!("{post}?status=draft"),
        format!("{post}?min_position=later"),
    ];
    for path in cases {
        let problem = assert_problem(
            app.get(&viewer, &path).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .starts_with("invalid query parameters"),
            "{path}: {problem}"
        );
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_query_without_a_valid_token_is_refused_with_401() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let post = format!("/v1/posts/{}", Uuid::now_v7());
    for path in [
        "/v1/budget",
        "/v1/budget/reservations",
        "/v1/posts",
        post.as_str(),
    ] {
        for (authorization, code) in bad_authorizations(&app, tenant) {
            let response = get_with_authorization(&app, authorization.as_deref(), path).await;
            assert_problem(response, StatusCode::UNAUTHORIZED, code).await;
        }
    }
}

#[tokio::test]
async fn what_does_not_exist_answers_404() {
    let app = spawn_app().await;
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    assert_problem(
        app.get(&admin, "/v1/budget").await,
        StatusCode::NOT_FOUND,
        "budget_not_configured",
    )
    .await;
    assert_problem(
        app.get(&admin, "/v1/budget?period=2030-01").await,
        StatusCode::NOT_FOUND,
        "budget_not_configured",
    )
    .await;
    let created = app
        .ok_command(&admin, "create-post", &valid_body("create-post"))
        .await;
    let at = created["position"].as_u64().expect("position");
    for path in [
        format!("/v1/posts/{}?min_position={at}", Uuid::now_v7()),
        "/v1/posts/not-a-uuid".to_owned(),
        "/v1/posts/42".to_owned(),
    ] {
        assert_problem(
            app.get(&admin, &path).await,
            StatusCode::NOT_FOUND,
            "post_not_found",
        )
        .await;
    }
    // A month with limits of its own, or inherited from an earlier one, is found.
    let set = app
        .ok_command(
            &admin,
            "set-budget-limits",
            &valid_body("set-budget-limits"),
        )
        .await;
    let next_year = app.clock.now().year() + 1;
    let inherited = app
        .ok_get(
            &admin,
            &format!(
                "/v1/budget?period={next_year}-01&min_position={}",
                set["position"]
            ),
        )
        .await;
    assert!(inherited["inherited_from"].is_string(), "{inherited}");
    assert_problem(
        app.get(&admin, &format!("/v1/budget?period={}-01", next_year + 2))
            .await,
        StatusCode::NOT_FOUND,
        "budget_not_configured",
    )
    .await;

    let stored = app.event_count().await;
    for path in ["/", "/v1", "/v1/post", "/v1/budgets", "/v1/posts/a/b"] {
        let problem = assert_problem(
            app.get(&admin, path).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        assert!(
            problem["detail"].as_str().expect("detail").contains(path),
            "{problem}"
        );
    }
    for name in ["do-something", "create-posts", "set-budget-limit"] {
        refused(
            &app,
            stored,
            app.command(&admin, name, &json!({})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // A known path with another method is no route either.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/commands/create-post"),
        (reqwest::Method::PUT, "/v1/commands/reserve-budget"),
        (reqwest::Method::POST, "/v1/budget"),
        (reqwest::Method::DELETE, "/v1/posts/x"),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("request sent");
        refused(&app, stored, response, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Even without a token, an unknown route is simply not there.
    assert_problem(
        get_with_authorization(&app, None, "/v1/nothing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_post_with_a_bad_list_of_channels_is_refused_with_422_and_nothing_is_stored() {
    let app = spawn_app().await;
    let editor = app.token(Uuid::now_v7(), Role::Editor);
    let stored = app.event_count().await;
    let eleven: Vec<String> = (0..11).map(|i| format!("channel-{i}")).collect();
    let cases = [
        (
            "channel and channels",
            json!({"channel": "linkedin", "channels": ["mastodon"], "body": "x"}),
            "invalid_post_channels",
            "not both",
        ),
        (
            "no channels",
            json!({"channels": [], "body": "x"}),
            "invalid_post_channels",
            "1 to 10 distinct channels",
        ),
        (
            "a channel twice",
            json!({"channels": ["linkedin", "mastodon", "linkedin"], "body": "x"}),
            "invalid_post_channels",
            "1 to 10 distinct channels",
        ),
        (
            "eleven channels",
            json!({"channels": eleven, "body": "x"}),
            "invalid_post_channels",
            "1 to 10 distinct channels",
        ),
        (
            "a channel that is no slug",
            json!({"channels": ["linkedin", "Mastodon"], "body": "x"}),
            "invalid_channel",
            "Mastodon",
        ),
    ];
    for (what, mut body, code, detail) in cases {
        let post_id = Uuid::now_v7();
        body["post_id"] = json!(post_id);
        let problem = refused(
            &app,
            stored,
            app.command(&editor, "create-post", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(detail)),
            "{what}: {problem}"
        );
        let missing = app.get(&editor, &format!("/v1/posts/{post_id}")).await;
        assert_problem(missing, StatusCode::NOT_FOUND, "post_not_found").await;
    }
    // Neither is a body without a required field, like any other.
    let problem = refused(
        &app,
        stored,
        app.command(&editor, "create-post", &json!({"body": "x"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("channels")),
        "{problem}"
    );

    // Ten distinct channels are fine.
    let ten: Vec<String> = (0..10).map(|i| format!("channel-{i}")).collect();
    let created = app
        .ok_command(
            &editor,
            "create-post",
            &json!({"channels": ten, "body": "everywhere"}),
        )
        .await;
    let position = created["position"].as_u64().expect("position");
    let post_id = created["post_id"].as_str().expect("id");
    let view = app
        .ok_get(
            &editor,
            &format!("/v1/posts/{post_id}?min_position={position}"),
        )
        .await;
    let targets: Vec<&Value> = view["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| &t["channel"])
        .collect();
    assert_eq!(targets.len(), 10, "{view}");
    assert_eq!(view["channel"], "channel-0");
    assert!(
        view["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .all(|t| t["state"].is_null()),
        "a draft's targets have no delivery yet: {view}"
    );
    app.stop().await;
}
