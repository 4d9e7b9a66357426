//! `generate-content` end to end: the reservation comes before any provider call, the
//! workflow records each attempt and settles the reservation at what the attempts
//! cost, and the hard limit holds however many requests race.
//!
//! The contract tests run the workflow against mock OpenAI-compatible and Anthropic
//! servers started by the test (outside APIs that cannot be reached from here); the
//! rest use the deterministic local provider.

use std::collections::BTreeMap;
use std::time::Duration;

use auth::Role;
use cli::settings::{ModelPriceSettings, ProviderSettings, Settings};
use domain::budget::ReservationOutcome;
use domain::{Period, ReservationId, TenantId};
use futures::future::join_all;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

use crate::budget_concurrency::{budget_events, fold};
use crate::support::{TestApp, assert_problem, production, spawn_app, spawn_app_with};

/// Sets this month's limits for a fresh tenant; returns (tenant, admin, editor).
async fn tenant_with_budget(app: &TestApp, soft: i64, hard: i64) -> (Uuid, String, String) {
    let tenant = Uuid::now_v7();
    let admin = app.token(tenant, Role::Admin);
    let editor = app.token(tenant, Role::Editor);
    app.ok_command(
        &admin,
        "set-budget-limits",
        &json!({"soft_limit_micros": soft, "hard_limit_micros": hard}),
    )
    .await;
    (tenant, admin, editor)
}

fn brief(n: usize) -> Value {
    json!({
        "brief": format!("Announce spring sale number {n}: 20% off all plans until 31 March."),
        "channel": "linkedin",
        "max_output_tokens": 200,
        "priority": "core"
    })
}

/// POSTs generate-content and expects 202; returns the answer.
async fn generate(app: &TestApp, token: &str, body: &Value) -> Value {
    let response = app.command(token, "generate-content", body).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, StatusCode::ACCEPTED, "generate-content: {text}");
    serde_json::from_str(&text).expect("json answer")
}

/// Polls the generation until it is no longer pending (bounded).
async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.get(token, &format!("/v1/generations/{id}")).await;
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.expect("json");
            if body["status"] != "pending" {
                return body;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "generation {id} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the command side's ledger settled a generation's reservation.
async fn reservation_outcome(app: &TestApp, tenant: Uuid, id: &str) -> Option<ReservationOutcome> {
    let folded = fold(
        &budget_events(
            app.stores.store.as_ref(),
            TenantId::from_uuid(tenant),
            period(app),
        )
        .await,
    );
    let id = ReservationId::from_uuid(Uuid::parse_str(id).expect("uuid"));
    folded
        .state
        .settled
        .get(&id)
        .expect("a folded state is listed")
        .copied()
}

/// The amount the ledger committed for a reservation.
async fn committed_amount(app: &TestApp, tenant: Uuid, id: &str) -> i64 {
    let events = budget_events(
        app.stores.store.as_ref(),
        TenantId::from_uuid(tenant),
        period(app),
    )
    .await;
    let id = ReservationId::from_uuid(Uuid::parse_str(id).expect("uuid"));
    events
        .iter()
        .filter_map(|e| match e {
            domain::budget::Event::Committed {
                reservation_id,
                actual,
                ..
            } if *reservation_id == id => Some(actual.get()),
            _ => None,
        })
        .sum()
}

/// Waits (bounded) until the ledger settled a generation's reservation.
async fn settled(app: &TestApp, tenant: Uuid, id: &str) -> ReservationOutcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(outcome) = reservation_outcome(app, tenant, id).await {
            return outcome;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reservation {id} never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn period(app: &TestApp) -> Period {
    use command_api::Clock;
    Period::containing(app.clock.now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_reserves_generates_and_commits_its_actual_cost() {
    let app = spawn_app().await;
    let (tenant, _, editor) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    let answer = generate(&app, &editor, &brief(1)).await;
    let id = answer["generation_id"].as_str().expect("id").to_owned();
    assert!(answer["position"].as_u64().is_some(), "{answer}");

    let generation = finished(&app, &editor, &id).await;
    assert_eq!(generation["status"], "generated", "{generation}");
    assert!(
        generation["text"]
            .as_str()
            .is_some_and(|t| t.contains("spring sale number 1")),
        "{generation}"
    );
    assert_eq!(generation["provider"], "local");
    assert_eq!(generation["model"], "local-large");
    assert_eq!(generation["attempts"], 1);
    assert_eq!(generation["mode"], "normal");
    let cost = generation["cost_micros"].as_i64().expect("cost");
    assert!(cost > 0, "{generation}");
    assert!(cost <= generation["reserved_micros"].as_i64().expect("reserved"));
    assert!(generation["input_tokens"].as_i64().expect("tokens") > 0);
    assert!(generation["output_tokens"].as_i64().expect("tokens") > 0);

    // The ledger committed exactly the recorded cost and holds nothing any more.
    assert_eq!(
        settled(&app, tenant, &id).await,
        ReservationOutcome::Committed
    );
    assert_eq!(committed_amount(&app, tenant, &id).await, cost);
    let head = app.event_count().await;
    let budget = app
        .ok_get(&editor, &format!("/v1/budget?min_position={head}"))
        .await;
    assert_eq!(budget["committed_micros"], cost, "{budget}");
    assert_eq!(budget["reserved_micros"], 0, "{budget}");

    // Usage shows the same cost, whichever way it is grouped.
    for group in ["day", "model", "provider", "campaign"] {
        let usage = app
            .ok_get(
                &editor,
                &format!("/v1/usage?group_by={group}&min_position={head}"),
            )
            .await;
        assert_eq!(usage["total"]["cost_micros"], cost, "{group}: {usage}");
        assert_eq!(usage["total"]["calls"], 1, "{group}: {usage}");
    }
    let by_model = app
        .ok_get(
            &editor,
            &format!("/v1/usage?group_by=model&min_position={head}"),
        )
        .await;
    assert_eq!(
        by_model["items"][0]["key"], "local/local-large",
        "{by_model}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_reserve_nothing_and_record_nothing() {
    let app = spawn_app().await;
    // A hard limit far below one generation's worst case.
    let (tenant, _, editor) = tenant_with_budget(&app, 10, 20).await;
    let before = app.event_count().await;

    let over = app.command(&editor, "generate-content", &brief(1)).await;
    assert_problem(over, StatusCode::UNPROCESSABLE_ENTITY, "budget_exceeded").await;

    let mut unknown = brief(2);
    unknown["model"] = json!("gpt-imaginary");
    let response = app.command(&editor, "generate-content", &unknown).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "unknown_model").await;

    let mut blank = brief(3);
    blank["brief"] = json!("   ");
    let response = app.command(&editor, "generate-content", &blank).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_brief").await;

    let mut zero = brief(4);
    zero["max_output_tokens"] = json!(0);
    let response = app.command(&editor, "generate-content", &zero).await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_max_output_tokens",
    )
    .await;

    let mut bad_priority = brief(5);
    bad_priority["priority"] = json!("urgent");
    let response = app
        .command(&editor, "generate-content", &bad_priority)
        .await;
    assert_problem(response, StatusCode::BAD_REQUEST, "invalid_body").await;

    let viewer = app.token(tenant, Role::Viewer);
    let response = app.command(&viewer, "generate-content", &brief(6)).await;
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;

    assert_eq!(
        app.event_count().await,
        before,
        "a refused request stored nothing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_generation_is_not_found_and_a_reused_id_is_a_conflict() {
    let app = spawn_app().await;
    let (tenant, _, editor) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    let (_, _, other) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    let id = Uuid::now_v7();
    let mut body = brief(1);
    body["generation_id"] = json!(id);
    generate(&app, &editor, &body).await;
    finished(&app, &editor, &id.to_string()).await;
    settled(&app, tenant, &id.to_string()).await;

    let response = app.get(&other, &format!("/v1/generations/{id}")).await;
    assert_problem(response, StatusCode::NOT_FOUND, "generation_not_found").await;
    let response = app.get(&editor, "/v1/generations/not-a-uuid").await;
    assert_problem(response, StatusCode::NOT_FOUND, "generation_not_found").await;

    let before = app.event_count().await;
    let again = app.command(&editor, "generate-content", &body).await;
    assert_problem(again, StatusCode::CONFLICT, "generation_already_exists").await;
    assert_eq!(
        app.event_count().await,
        before,
        "nothing was reserved twice"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_accepted_answer() {
    let app = spawn_app().await;
    let (tenant, _, editor) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    let send = || {
        app.client
            .post(format!("{}/v1/commands/generate-content", app.address))
            .bearer_auth(&editor)
            .header("idempotency-key", "gen-once")
            .json(&brief(1))
            .send()
    };
    let first = send().await.expect("sent");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("json");
    let second = send().await.expect("sent");
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let second: Value = second.json().await.expect("json");
    assert_eq!(first, second);
    finished(&app, &editor, first["generation_id"].as_str().expect("id")).await;
    // One reservation, one generation: the replay stored nothing.
    let events = budget_events(
        app.stores.store.as_ref(),
        TenantId::from_uuid(tenant),
        period(&app),
    )
    .await;
    let reserved = events
        .iter()
        .filter(|e| matches!(e, domain::budget::Event::Reserved { .. }))
        .count();
    assert_eq!(reserved, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_soft_limit_non_core_work_falls_back_and_the_log_says_why() {
    let app = spawn_app().await;
    let (tenant, _, editor) = tenant_with_budget(&app, 1_000_000, 100_000_000).await;
    // Hold enough to stand above the soft limit.
    app.ok_command(
        &editor,
        "reserve-budget",
        &json!({"amount_micros": 2_000_000, "purpose": "campaign launch", "ttl_seconds": 600}),
    )
    .await;
    let mut non_core = brief(1);
    non_core["priority"] = json!("non_core");
    let cheap = generate(&app, &editor, &non_core).await;
    let core = generate(&app, &editor, &brief(2)).await;

    let cheap = finished(&app, &editor, cheap["generation_id"].as_str().expect("id")).await;
    assert_eq!(cheap["model"], "local-small", "{cheap}");
    assert_eq!(cheap["mode"], "economy", "{cheap}");
    let core = finished(&app, &editor, core["generation_id"].as_str().expect("id")).await;
    assert_eq!(core["model"], "local-large", "{core}");
    assert_eq!(core["mode"], "normal", "{core}");

    // The mode change is an event on the generation's stream.
    let id: Uuid = serde_json::from_value(cheap["generation_id"].clone()).expect("uuid");
    let stream = domain::StreamName::generation(
        TenantId::from_uuid(tenant),
        domain::GenerationId::from_uuid(id),
    );
    let events = app
        .stores
        .store
        .read_stream(tenant, stream.as_str(), 0)
        .await
        .expect("stream");
    let mode = events
        .iter()
        .find(|e| e.event_type == "generation.mode_changed")
        .expect("a mode change event");
    assert_eq!(mode.data["requested_model"], "local-large");
    assert_eq!(mode.data["model"], "local-small");
    assert_eq!(mode.data["reason"], "soft_limit_exceeded");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_limit_gets_429_with_retry_after_and_nothing_is_reserved() {
    let app = spawn_app_with(|s| s.ai.requests_per_minute = 2).await;
    let (tenant, _, editor) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    generate(&app, &editor, &brief(1)).await;
    generate(&app, &editor, &brief(2)).await;
    let refused = Uuid::now_v7();
    let mut third = brief(3);
    third["generation_id"] = json!(refused);
    let response = app.command(&editor, "generate-content", &third).await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Neither a reservation nor a generation exists for the refused request (the
    // workflow keeps appending for the first two, so the log's length is no measure).
    let events = budget_events(
        app.stores.store.as_ref(),
        TenantId::from_uuid(tenant),
        period(&app),
    )
    .await;
    let reserved = events
        .iter()
        .filter(|e| matches!(e, domain::budget::Event::Reserved { .. }))
        .count();
    assert_eq!(reserved, 2, "only the two accepted requests reserved");
    assert_eq!(
        reservation_outcome(&app, tenant, &refused.to_string()).await,
        None
    );
    let stream = domain::StreamName::generation(
        TenantId::from_uuid(tenant),
        domain::GenerationId::from_uuid(refused),
    );
    let recorded = app
        .stores
        .store
        .read_stream(tenant, stream.as_str(), 0)
        .await
        .expect("stream");
    assert!(recorded.is_empty(), "the refused generation was recorded");
    // Another tenant has its own allowance.
    let (_, _, other) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    generate(&app, &other, &brief(4)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_generations_never_pass_the_hard_limit_and_all_settle() {
    let app = spawn_app().await;
    // The local large model's worst case for this request: 200 output tokens at
    // 10 µ$ each plus about 60 input tokens at 2.5 µ$: a little over 2,100 µ$.
    let (tenant, _, editor) = tenant_with_budget(&app, 150_000, 215_000).await;

    let answers = join_all((0..500).map(|i| {
        let app = &app;
        let editor = &editor;
        async move {
            let response = app.command(editor, "generate-content", &brief(i)).await;
            let status = response.status();
            let body: Value = response.json().await.expect("json answer");
            (status, body)
        }
    }))
    .await;
    let mut accepted = Vec::new();
    for (status, body) in &answers {
        match *status {
            StatusCode::ACCEPTED => {
                accepted.push(body["generation_id"].as_str().expect("id").to_owned())
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(body["code"], "budget_exceeded", "{body}")
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    // About a hundred fit at worst case; finished generations give back the
    // difference to their actual cost, so a few more may pass — never past the limit.
    assert!(accepted.len() >= 90, "accepted {}", accepted.len());
    assert!(accepted.len() < 500, "the limit refused nothing");

    let mut recorded_cost = 0;
    for id in &accepted {
        let generation = finished(&app, &editor, id).await;
        assert_eq!(generation["status"], "generated", "{generation}");
        recorded_cost += generation["cost_micros"].as_i64().expect("cost");
    }
    // Wait for every settlement to land in the ledger.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let folded = loop {
        let folded = fold(
            &budget_events(
                app.stores.store.as_ref(),
                TenantId::from_uuid(tenant),
                period(&app),
            )
            .await,
        );
        if folded.state.open.is_empty() || tokio::time::Instant::now() > deadline {
            break folded;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(folded.violations.is_empty(), "{:?}", folded.violations);
    assert!(
        folded.state.open.is_empty(),
        "{} reservations left open",
        folded.state.open.len()
    );
    assert_eq!(folded.state.committed.get(), recorded_cost);
    assert!(folded.state.committed.get() <= 215_000);
    assert_eq!(
        folded.overrun, 0,
        "the local provider never costs more than its estimate"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Against mock providers
// ---------------------------------------------------------------------------------

/// An app whose default model is `mock/gpt-test` on an OpenAI-compatible mock (or
/// `anthropic/claude-test` on an Anthropic one), with no fallback, short back-offs and
/// a 500 ms provider timeout.
async fn app_with_provider(kind: &str, base_url: String, stream: bool) -> TestApp {
    let (provider, model) = match kind {
        "openai" => ("mock", "gpt-test"),
        _ => ("anthropic", "claude-test"),
    };
    let edit = move |s: &mut Settings| {
        s.ai.models = vec![price(
            provider, model, 3_000_000, 300_000, 15_000_000, 1_000,
        )];
        s.ai.price_version = "test-1".into();
        s.ai.default_model = format!("{provider}/{model}");
        s.ai.fallback_model = String::new();
        s.ai.retry_base_ms = 20;
        s.ai.retry_max_ms = 200;
        s.ai.max_attempts = 3;
        s.ai.providers = BTreeMap::from([(
            provider.to_owned(),
            ProviderSettings {
                kind: kind.into(),
                base_url,
                api_key: SecretString::from("sk-test-key"),
                timeout_ms: 500,
                stream,
            },
        )]);
    };
    spawn_app_with(edit).await
}

/// A price-book entry: micro-USD per million input, cached-input and output tokens.
fn price(
    provider: &str,
    model: &str,
    input: i64,
    cached_input: i64,
    output: i64,
    max_output_tokens: u32,
) -> ModelPriceSettings {
    ModelPriceSettings {
        provider: provider.into(),
        model: model.into(),
        input_micros_per_mtok: input,
        cached_input_micros_per_mtok: cached_input,
        output_micros_per_mtok: output,
        max_output_tokens,
    }
}

fn openai_body(text: &str, prompt: u64, cached: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}}
    })
}

fn anthropic_body(text: &str, input: u64, cache_read: u64, output: u64) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "usage": {"input_tokens": input, "cache_read_input_tokens": cache_read,
                  "cache_creation_input_tokens": 0, "output_tokens": output}
    })
}

/// Answers from a list in turn, repeating the last.
struct Sequence(Vec<ResponseTemplate>, std::sync::atomic::AtomicUsize);

impl Respond for Sequence {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0[n.min(self.0.len() - 1)].clone()
    }
}

async fn mock(kind: &str, answers: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    let route = if kind == "openai" {
        "/chat/completions"
    } else {
        "/v1/messages"
    };
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(Sequence(answers, Default::default()))
        .mount(&server)
        .await;
    server
}

/// What one contract case must end as.
struct Expect {
    status: &'static str,
    attempts: i64,
    /// The recorded cost; `WORST_CASE` for "the amount reserved".
    cost: i64,
    outcome: ReservationOutcome,
}

async fn contract(kind: &str, answers: Vec<ResponseTemplate>, stream: bool, expect: Expect) {
    assert!(
        !production(),
        "the mock providers are configured in-process: an embedded-only test"
    );
    let server = mock(kind, answers).await;
    let app = app_with_provider(kind, server.uri(), stream).await;
    let (tenant, _, editor) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    let answer = generate(&app, &editor, &brief(1)).await;
    let id = answer["generation_id"].as_str().expect("id").to_owned();
    let generation = finished(&app, &editor, &id).await;
    assert_eq!(generation["status"], expect.status, "{generation}");
    assert_eq!(generation["attempts"], expect.attempts, "{generation}");
    let cost = if expect.cost == WORST_CASE {
        generation["reserved_micros"].as_i64().expect("reserved")
    } else {
        expect.cost
    };
    assert_eq!(generation["cost_micros"], cost, "{generation}");
    // The settlement follows the outcome event; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        if let Some(outcome) = reservation_outcome(&app, tenant, &id).await {
            break outcome;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reservation never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome, expect.outcome, "{generation}");
    if outcome == ReservationOutcome::Committed {
        assert_eq!(committed_amount(&app, tenant, &id).await, cost);
    }
    app.stop().await;
}

/// An attempt charged its worst case: a 2xx answer whose usage cannot be read.
const WORST_CASE: i64 = -1;

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn sse(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_string(body.to_owned())
}

// Prices: 3 µ$ per input token, 0.3 per cached input token, 15 per output token.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_success_is_charged_at_its_usage() {
    // 100 × 3 + 50 × 15 = 1,050 µ$.
    let answers = vec![ok(openai_body("Spring!", 100, 0, 50))];
    contract(
        "openai",
        answers,
        false,
        Expect {
            status: "generated",
            attempts: 1,
            cost: 1_050,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_cached_tokens_are_charged_once_at_the_cached_price() {
    // prompt 1,000 of which 800 cached: 200 × 3 + 800 × 0.3 + 50 × 15 = 600 + 240 + 750.
    let answers = vec![ok(openai_body("Spring!", 1_000, 800, 50))];
    contract(
        "openai",
        answers,
        false,
        Expect {
            status: "generated",
            attempts: 1,
            cost: 1_590,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_streamed_success_takes_usage_from_the_final_chunk() {
    let body = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Spring\"}}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" sale!\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-test\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":50,\"total_tokens\":150}}\n\n",
        "data: [DONE]\n\n"
    );
    contract(
        "openai",
        vec![sse(body)],
        true,
        Expect {
            status: "generated",
            attempts: 1,
            cost: 1_050,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_429_with_retry_after_then_success_is_retried_and_charged_once() {
    let answers = vec![
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"error": {"message": "slow down"}})),
        ok(openai_body("Spring!", 100, 0, 50)),
    ];
    contract(
        "openai",
        answers,
        false,
        Expect {
            status: "generated",
            attempts: 2,
            cost: 1_050,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_500_then_success_is_retried() {
    let answers = vec![
        ResponseTemplate::new(500).set_body_string("boom"),
        ok(openai_body("Spring!", 100, 0, 50)),
    ];
    contract(
        "openai",
        answers,
        false,
        Expect {
            status: "generated",
            attempts: 2,
            cost: 1_050,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_timeouts_exhaust_the_retries_and_release_the_reservation() {
    let slow = ok(openai_body("late", 100, 0, 50)).set_delay(Duration::from_secs(3));
    contract(
        "openai",
        vec![slow],
        false,
        Expect {
            status: "failed",
            attempts: 3,
            cost: 0,
            outcome: ReservationOutcome::Released,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_malformed_answer_is_charged_its_worst_case_and_not_retried() {
    let answers = vec![ResponseTemplate::new(200).set_body_string("{\"choices\": oops")];
    // Not retried (the provider billed a 2xx); charged the estimate: input tokens as
    // reserved, output at the 200-token ceiling. The exact amount is the reservation.
    assert!(
        !production(),
        "the mock providers are configured in-process: an embedded-only test"
    );
    let server = mock("openai", answers).await;
    let app = app_with_provider("openai", server.uri(), false).await;
    let (tenant, _, editor) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    let answer = generate(&app, &editor, &brief(1)).await;
    let id = answer["generation_id"].as_str().expect("id").to_owned();
    let generation = finished(&app, &editor, &id).await;
    assert_eq!(generation["status"], "failed", "{generation}");
    assert_eq!(generation["attempts"], 1, "{generation}");
    assert_eq!(
        generation["cost_micros"], generation["reserved_micros"],
        "{generation}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reservation_outcome(&app, tenant, &id).await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reservation_outcome(&app, tenant, &id).await,
        Some(ReservationOutcome::Committed)
    );
    assert_eq!(
        committed_amount(&app, tenant, &id).await,
        generation["cost_micros"].as_i64().expect("cost")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_provider_does_not_know_fails_without_retry_and_is_released() {
    let answers = vec![ResponseTemplate::new(404).set_body_json(json!({"error": {"message": "The model `gpt-test` does not exist", "code": "model_not_found"}}))];
    contract(
        "openai",
        answers,
        false,
        Expect {
            status: "failed",
            attempts: 1,
            cost: 0,
            outcome: ReservationOutcome::Released,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_success_with_cache_reads_is_charged_once_per_token() {
    // input 200 uncached + 800 cache reads: 200 × 3 + 800 × 0.3 + 50 × 15 = 1,590 µ$.
    let answers = vec![ok(anthropic_body("Spring!", 200, 800, 50))];
    contract(
        "anthropic",
        answers,
        false,
        Expect {
            status: "generated",
            attempts: 1,
            cost: 1_590,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streamed_success_takes_the_cumulative_output_count() {
    let body = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-test\",\"content\":[],\"usage\":{\"input_tokens\":100,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Spring\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":20}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" sale!\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":50}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
    contract(
        "anthropic",
        vec![sse(body)],
        true,
        Expect {
            status: "generated",
            attempts: 1,
            cost: 1_050,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_overloaded_then_success_is_retried() {
    let answers = vec![
        ResponseTemplate::new(529).set_body_json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        ok(anthropic_body("Spring!", 100, 0, 50)),
    ];
    contract(
        "anthropic",
        answers,
        false,
        Expect {
            status: "generated",
            attempts: 2,
            cost: 1_050,
            outcome: ReservationOutcome::Committed,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_500s_exhaust_the_retries_and_release_the_reservation() {
    let answers = vec![ResponseTemplate::new(500).set_body_json(
        json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
    )];
    contract(
        "anthropic",
        answers,
        false,
        Expect {
            status: "failed",
            attempts: 3,
            cost: 0,
            outcome: ReservationOutcome::Released,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_falls_back_and_each_attempt_is_priced_at_the_model_that_ran() {
    assert!(
        !production(),
        "the mock providers are configured in-process: an embedded-only test"
    );
    let server = mock(
        "openai",
        vec![ResponseTemplate::new(503).set_body_string("down")],
    )
    .await;
    let app = {
        let base = server.uri();
        spawn_app_with(move |s| {
            s.ai.models = vec![
                price("mock", "gpt-test", 3_000_000, 300_000, 15_000_000, 1_000),
                price("local", "local-small", 150_000, 15_000, 600_000, 4_096),
            ];
            s.ai.default_model = "mock/gpt-test".into();
            s.ai.fallback_model = "local/local-small".into();
            s.ai.retry_base_ms = 10;
            s.ai.retry_max_ms = 50;
            s.ai.max_attempts = 2;
            s.ai.providers = BTreeMap::from([(
                "mock".to_owned(),
                ProviderSettings {
                    kind: "openai".into(),
                    base_url: base,
                    api_key: SecretString::from("sk-test"),
                    timeout_ms: 500,
                    stream: false,
                },
            )]);
        })
        .await
    };
    let (tenant, _, editor) = tenant_with_budget(&app, 5_000_000, 10_000_000).await;
    let answer = generate(&app, &editor, &brief(1)).await;
    let id = answer["generation_id"].as_str().expect("id").to_owned();
    let generation = finished(&app, &editor, &id).await;
    assert_eq!(generation["status"], "generated", "{generation}");
    assert_eq!(
        generation["attempts"], 3,
        "two on the mock, then the fallback"
    );
    assert_eq!(generation["provider"], "local");
    assert_eq!(generation["model"], "local-small");
    let cost = generation["cost_micros"].as_i64().expect("cost");
    assert!(cost > 0);
    let head = app.event_count().await;
    let usage = app
        .ok_get(
            &editor,
            &format!("/v1/usage?group_by=model&min_position={head}"),
        )
        .await;
    let items = usage["items"].as_array().expect("items");
    let row = |key: &str| items.iter().find(|r| r["key"] == key).cloned().expect(key);
    assert_eq!(row("mock/gpt-test")["calls"], 2, "{usage}");
    assert_eq!(row("mock/gpt-test")["cost_micros"], 0, "{usage}");
    assert_eq!(row("local/local-small")["cost_micros"], cost, "{usage}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reservation_outcome(&app, tenant, &id).await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed_amount(&app, tenant, &id).await, cost);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_429_with_retry_after_then_success_is_retried_and_charged_once() {
    let answers = vec![
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})),
        ok(anthropic_body("Spring!", 100, 0, 50)),
    ];
    let expect = Expect {
        status: "generated",
        attempts: 2,
        cost: 1_050,
        outcome: ReservationOutcome::Committed,
    };
    contract("anthropic", answers, false, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_500_then_success_is_retried() {
    let answers = vec![
        ResponseTemplate::new(500).set_body_json(
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}),
        ),
        ok(anthropic_body("Spring!", 100, 0, 50)),
    ];
    let expect = Expect {
        status: "generated",
        attempts: 2,
        cost: 1_050,
        outcome: ReservationOutcome::Committed,
    };
    contract("anthropic", answers, false, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_timeouts_exhaust_the_retries_and_release_the_reservation() {
    let slow = ok(anthropic_body("late", 100, 0, 50)).set_delay(Duration::from_secs(3));
    let expect = Expect {
        status: "failed",
        attempts: 3,
        cost: 0,
        outcome: ReservationOutcome::Released,
    };
    contract("anthropic", vec![slow], false, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_malformed_answer_is_charged_its_worst_case() {
    let answers = vec![ok(
        json!({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "no usage"}]}),
    )];
    let expect = Expect {
        status: "failed",
        attempts: 1,
        cost: WORST_CASE,
        outcome: ReservationOutcome::Committed,
    };
    contract("anthropic", answers, false, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_unknown_model_fails_without_retry_and_is_released() {
    let answers = vec![ResponseTemplate::new(404).set_body_json(json!({"type": "error", "error": {"type": "not_found_error", "message": "model: claude-test"}}))];
    let expect = Expect {
        status: "failed",
        attempts: 1,
        cost: 0,
        outcome: ReservationOutcome::Released,
    };
    contract("anthropic", answers, false, expect).await;
}
