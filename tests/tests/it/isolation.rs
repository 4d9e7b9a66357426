//! Tenant isolation over HTTP: a tenant's token reaches only that tenant's data.
//!
//! Tenant A writes posts and reservations; tenant B then tries every read and every
//! command on A's ids. Each must answer as if A's data did not exist (404, or an
//! empty list, never 403, which would confirm the id exists) and change nothing of
//! A's. B's own writes with the same ids or the same idempotency key are B's alone.

use auth::Role;
use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, assert_problem, spawn_app};

/// Everything tenant A can see, read at `position` or later.
async fn everything(app: &TestApp, token: &str, period: &str, position: u64) -> Value {
    let mut seen = serde_json::Map::new();
    for path in [
        format!("/v1/budget?period={period}"),
        format!("/v1/budget/reservations?period={period}&status=all"),
        "/v1/posts".to_owned(),
    ] {
        let separator = if path.contains('?') { '&' } else { '?' };
        let body = app
            .ok_get(token, &format!("{path}{separator}min_position={position}"))
            .await;
        seen.insert(path, body);
    }
    Value::Object(seen)
}

fn field(answer: &Value, name: &str) -> String {
    answer[name]
        .as_str()
        .expect("the answer carries the field")
        .to_owned()
}

fn position(answer: &Value) -> u64 {
    answer["position"]
        .as_u64()
        .expect("a command answer carries its position")
}

/// Tenant A's data: limits, an open and a committed reservation, a draft and a
/// scheduled post in a campaign.
struct TenantA {
    admin: String,
    period: String,
    open_reservation: String,
    committed_reservation: String,
    draft: String,
    scheduled: String,
    campaign: Uuid,
    position: u64,
}

async fn tenant_a(app: &TestApp) -> TenantA {
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let campaign = Uuid::now_v7();
    let set = app
        .ok_command(&admin, "set-budget-limits", &json!({"soft_limit_micros": 5_000, "hard_limit_micros": 10_000, "alert_thresholds_pct": [50]}))
        .await;
    let reserve = json!({"amount_micros": 1_000, "purpose": "a's work", "ttl_seconds": 3_600});
    let open = app.ok_command(&admin, "reserve-budget", &reserve).await;
    let committed = app.ok_command(&admin, "reserve-budget", &reserve).await;
    app.ok_command(
        &admin,
        "commit-budget",
        &json!({"reservation_id": committed["reservation_id"], "actual_micros": 900}),
    )
    .await;
    let draft = app
        .ok_command(
            &admin,
            "create-post",
            &json!({"channel": "linkedin", "body": "a's draft", "campaign_id": campaign}),
        )
        .await;
    let scheduled = app
        .ok_command(
            &admin,
            "create-post",
            &json!({"channel": "linkedin", "body": "a's plan", "campaign_id": campaign}),
        )
        .await;
    let tomorrow = (Utc::now() + TimeDelta::days(1)).to_rfc3339();
    let last = app
        .ok_command(
            &admin,
            "schedule-post",
            &json!({"post_id": scheduled["post_id"], "publish_at": tomorrow}),
        )
        .await;
    TenantA {
        admin,
        period: field(&set, "period"),
        open_reservation: field(&open, "reservation_id"),
        committed_reservation: field(&committed, "reservation_id"),
        draft: field(&draft, "post_id"),
        scheduled: field(&scheduled, "post_id"),
        campaign,
        position: position(&last),
    }
}

#[tokio::test]
async fn another_tenant_reads_nothing_of_a_tenants_posts_reservations_or_budget() {
    let app = spawn_app().await;
    let a = tenant_a(&app).await;
    let before = everything(&app, &a.admin, &a.period, a.position).await;
    let stored = app.event_count().await;
    let at = a.position;

    for role in [Role::Viewer, Role::Editor, Role::Admin] {
        let b = app.token(Uuid::now_v7(), role);
        for post in [&a.draft, &a.scheduled] {
            assert_problem(
                app.get(&b, &format!("/v1/posts/{post}?min_position={at}"))
                    .await,
                StatusCode::NOT_FOUND,
                "post_not_found",
            )
            .await;
        }
        for query in [
            String::new(),
            "status=draft".to_owned(),
            "status=scheduled".to_owned(),
            "channel=linkedin".to_owned(),
            format!("campaign_id={}", a.campaign),
        ] {
            let page = app
                .ok_get(&b, &format!("/v1/posts?{query}&min_position={at}"))
                .await;
            assert_eq!(
                page,
                json!({"items": [], "next_cursor": null}),
                "{role} listing posts with {query:?}"
            );
        }
        for status in ["open", "committed", "all"] {
            let list = app
                .ok_get(
                    &b,
                    &format!(
                        "/v1/budget/reservations?period={}&status={status}&min_position={at}",
                        a.period
                    ),
                )
                .await;
            assert_eq!(
                list,
                json!({"items": []}),
                "{role} listing {status} reservations"
            );
        }
        for query in [String::new(), format!("?period={}", a.period)] {
            assert_problem(
                app.get(&b, &format!("/v1/budget{query}")).await,
                StatusCode::NOT_FOUND,
                "budget_not_configured",
            )
            .await;
        }
    }

    assert_eq!(app.event_count().await, stored);
    assert_eq!(everything(&app, &a.admin, &a.period, at).await, before);
}

#[tokio::test]
async fn another_tenants_commands_on_a_tenants_ids_answer_404_and_change_nothing() {
    let app = spawn_app().await;
    let a = tenant_a(&app).await;
    let before = everything(&app, &a.admin, &a.period, a.position).await;
    let stored = app.event_count().await;

    let b = app.token(Uuid::now_v7(), Role::Admin);
    let tomorrow = (Utc::now() + TimeDelta::days(1)).to_rfc3339();
    for post in [&a.draft, &a.scheduled] {
        for (name, body) in [
            ("edit-post", json!({"post_id": post, "body": "b was here"})),
            (
                "edit-post",
                json!({"post_id": post, "body": "b was here", "expected_version": 1}),
            ),
            (
                "schedule-post",
                json!({"post_id": post, "publish_at": tomorrow}),
            ),
            ("publish-post", json!({"post_id": post})),
            ("cancel-post", json!({"post_id": post})),
        ] {
            assert_problem(
                app.command(&b, name, &body).await,
                StatusCode::NOT_FOUND,
                "post_not_found",
            )
            .await;
            assert_eq!(
                app.event_count().await,
                stored,
                "{name} on another tenant's post stored something"
            );
        }
    }
    for reservation in [&a.open_reservation, &a.committed_reservation] {
        for (name, body) in [
            (
                "commit-budget",
                json!({"reservation_id": reservation, "actual_micros": 1}),
            ),
            ("release-budget", json!({"reservation_id": reservation})),
        ] {
            assert_problem(
                app.command(&b, name, &body).await,
                StatusCode::NOT_FOUND,
                "reservation_not_found",
            )
            .await;
            assert_eq!(
                app.event_count().await,
                stored,
                "{name} on another tenant's reservation stored something"
            );
        }
    }
    // B's own limits make no difference: A's reservations are still not B's.
    let set = app
        .ok_command(
            &b,
            "set-budget-limits",
            &json!({"soft_limit_micros": 1, "hard_limit_micros": 2}),
        )
        .await;
    let stored = stored + 1;
    assert_eq!(app.event_count().await, stored);
    for (name, body) in [
        (
            "commit-budget",
            json!({"reservation_id": a.open_reservation, "actual_micros": 1}),
        ),
        (
            "release-budget",
            json!({"reservation_id": a.open_reservation}),
        ),
    ] {
        assert_problem(
            app.command(&b, name, &body).await,
            StatusCode::NOT_FOUND,
            "reservation_not_found",
        )
        .await;
    }
    assert_eq!(app.event_count().await, stored);

    assert_eq!(
        everything(&app, &a.admin, &a.period, position(&set)).await,
        before,
        "A's data is unchanged"
    );
    // And A can still act on its own data.
    let released = app
        .ok_command(
            &a.admin,
            "release-budget",
            &json!({"reservation_id": a.open_reservation}),
        )
        .await;
    let budget = app
        .ok_get(
            &a.admin,
            &format!(
                "/v1/budget?period={}&min_position={}",
                a.period,
                position(&released)
            ),
        )
        .await;
    assert_eq!(budget["reserved_micros"], 0);
}

#[tokio::test]
async fn ids_and_idempotency_keys_taken_in_one_tenant_are_free_in_another() {
    let app = spawn_app().await;
    let a = tenant_a(&app).await;
    let before = everything(&app, &a.admin, &a.period, a.position).await;
    let b_tenant = Uuid::now_v7();
    let b = app.token(b_tenant, Role::Admin);

    // A post and a reservation with A's ids are new, separate things in B.
    let stored = app.event_count().await;
    let b_post = app
        .ok_command(
            &b,
            "create-post",
            &json!({"channel": "newsletter", "body": "b's own", "post_id": a.draft}),
        )
        .await;
    assert_eq!(field(&b_post, "post_id"), a.draft);
    app.ok_command(
        &b,
        "set-budget-limits",
        &json!({"soft_limit_micros": 50, "hard_limit_micros": 100}),
    )
    .await;
    let b_reservation = app
        .ok_command(&b, "reserve-budget", &json!({"amount_micros": 10, "purpose": "b's work", "ttl_seconds": 60, "reservation_id": a.open_reservation}))
        .await;
    assert_eq!(field(&b_reservation, "reservation_id"), a.open_reservation);
    assert_eq!(
        app.event_count().await,
        stored + 3,
        "only B's three events were added"
    );

    // An idempotency key A used answers B's request afresh, not with A's answer.
    let key_body = json!({"channel": "linkedin", "body": "same request"});
    let send = |token: &str| {
        app.client
            .post(format!("{}/v1/commands/create-post", app.address))
            .bearer_auth(token)
            .header("idempotency-key", "shared-key")
            .json(&key_body)
            .send()
    };
    let from_a = send(&a.admin).await.expect("request sent");
    assert_eq!(from_a.status(), StatusCode::OK);
    let from_a: Value = from_a.json().await.expect("json");
    let from_b = send(&b).await.expect("request sent");
    assert_eq!(from_b.status(), StatusCode::OK);
    assert!(
        from_b.headers().get("idempotent-replayed").is_none(),
        "B must not get A's stored answer"
    );
    let from_b: Value = from_b.json().await.expect("json");
    assert_ne!(from_b["post_id"], from_a["post_id"]);
    assert_eq!(app.event_count().await, stored + 5);
    let at = position(&from_b);

    let b_post_view = app
        .ok_get(&b, &format!("/v1/posts/{}?min_position={at}", a.draft))
        .await;
    assert_eq!(
        (b_post_view["body"].clone(), b_post_view["channel"].clone()),
        (json!("b's own"), json!("newsletter"))
    );
    let b_posts = app.ok_get(&b, "/v1/posts").await;
    let b_ids: Vec<&Value> = b_posts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| &p["post_id"])
        .collect();
    assert_eq!(b_ids, [&b_post["post_id"], &from_b["post_id"]]);
    let b_budget = app
        .ok_get(&b, &format!("/v1/budget?period={}", a.period))
        .await;
    assert_eq!(
        (
            b_budget["hard_limit_micros"].clone(),
            b_budget["reserved_micros"].clone()
        ),
        (json!(100), json!(10))
    );

    // A sees its own data as before, plus its own keyed post, and nothing of B's.
    let mut after = everything(&app, &a.admin, &a.period, at).await;
    let posts = after["/v1/posts"]["items"].as_array_mut().expect("items");
    let last = posts.pop().expect("A's keyed post");
    assert_eq!(last["post_id"], from_a["post_id"]);
    assert_eq!(after, before);
}
