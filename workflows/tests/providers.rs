//! The AI provider adapters against mock HTTP servers: what each sends, how it reads
//! plain and streamed answers and their usage, how every failure is sorted, and the
//! retry policy, circuit breaker and local provider they are used with.

use std::time::{Duration, Instant};

use domain::Micros;
use domain::pricing::{ModelPrice, ModelRef, Usage, estimate_tokens};
use rand::SeedableRng;
use rand::rngs::StdRng;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use workflows::providers::local::local_tokens;
use workflows::providers::resilience::RETRY_AFTER_CAP;
use workflows::providers::{
    AnthropicConfig, AnthropicProvider, BreakerConfig, BreakerState, BuildError, CircuitBreaker,
    Completion, CompletionRequest, Guarded, LocalProvider, OpenAiConfig, OpenAiProvider, Provider,
    ProviderConfig, ProviderError, RetryPolicy, build,
};

const KEY: &str = "sk-test-do-not-print-4f2a";
const OPENAI_PATH: &str = "/v1/chat/completions";
const ANTHROPIC_PATH: &str = "/v1/messages";

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        model: model.to_owned(),
        system: "You write short social posts.".to_owned(),
        prompt: "Announce our spring sale: 20% off all plants".to_owned(),
        max_output_tokens: 256,
        idempotency_key: "gen-7-attempt-1".to_owned(),
    }
}

fn openai(server: &MockServer, stream: bool, timeout: Duration) -> OpenAiProvider {
    let config = OpenAiConfig {
        stream,
        timeout,
        ..OpenAiConfig::new(format!("{}/v1", server.uri()), SecretString::from(KEY))
    };
    OpenAiProvider::new(config).expect("a valid config")
}

fn anthropic(server: &MockServer, stream: bool, timeout: Duration) -> AnthropicProvider {
    let config = AnthropicConfig {
        stream,
        timeout,
        ..AnthropicConfig::new(server.uri(), SecretString::from(KEY))
    };
    AnthropicProvider::new(config).expect("a valid config")
}

const PATIENT: Duration = Duration::from_secs(10);

/// The prices of the cost golden checks: 3 USD per million input tokens, 0.30 USD
/// cached, 15 USD output.
fn price(provider: &str, model: &str) -> ModelPrice {
    let micros = |v| Micros::new(v).expect("a positive amount");
    ModelPrice {
        model: ModelRef::new(provider, model),
        input_per_mtok: micros(3_000_000),
        cached_input_per_mtok: micros(300_000),
        output_per_mtok: micros(15_000_000),
        max_output_tokens: 8_192,
    }
}

/// Serves `response` once for any POST to `route`.
async fn serve(route: &str, response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    server
}

fn sse(events: &[String]) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(events.concat(), "text/event-stream")
}

async fn openai_answer(
    response: ResponseTemplate,
    stream: bool,
) -> Result<Completion, ProviderError> {
    let server = serve(OPENAI_PATH, response).await;
    openai(&server, stream, PATIENT)
        .complete(&request("gpt-4o-mini"))
        .await
}

async fn anthropic_answer(
    response: ResponseTemplate,
    stream: bool,
) -> Result<Completion, ProviderError> {
    let server = serve(ANTHROPIC_PATH, response).await;
    anthropic(&server, stream, PATIENT)
        .complete(&request("claude-sonnet-4-5"))
        .await
}

fn malformed(result: Result<Completion, ProviderError>) -> String {
    match result {
        Err(ProviderError::Malformed(message)) => message,
        other => panic!("expected a malformed answer, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// OpenAI-compatible
// ---------------------------------------------------------------------------------

/// A chat completion in the shape of OpenAI's API reference.
fn openai_completion(text: &str, usage: Value) -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1_741_570_283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
}

fn openai_usage(prompt: u64, cached: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

/// One `data:` event of a streamed chat completion.
fn openai_chunk(choices: Value, usage: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1_741_570_283,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_06737a9306",
        "choices": choices,
        "usage": usage
    });
    format!("data: {chunk}\n\n")
}

fn openai_delta(delta: Value, finish: Value) -> String {
    openai_chunk(
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        Value::Null,
    )
}

fn openai_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}
    }))
}

#[tokio::test]
async fn openai_sends_the_key_model_ceiling_and_messages_and_reads_text_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", "gen-7-attempt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_completion(
            "Spring is here: 20% off every plant.",
            openai_usage(31, 0, 9),
        )))
        .expect(1)
        .mount(&server)
        .await;

    let completion = openai(&server, false, PATIENT)
        .complete(&request("gpt-4o-mini"))
        .await
        .expect("a completion");

    assert_eq!(completion.text, "Spring is here: 20% off every plant.");
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 31,
            cached_input_tokens: 0,
            output_tokens: 9
        }
    );
    let sent = server.received_requests().await.expect("recording is on");
    let body: Value = sent[0].body_json().expect("a JSON body");
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You write short social posts."},
                {"role": "user", "content": "Announce our spring sale: 20% off all plants"}
            ],
            "max_tokens": 256,
            "stream": false
        })
    );
}

#[tokio::test]
async fn openai_streamed_text_is_concatenated_and_usage_comes_from_the_last_chunk() {
    let events = [
        openai_delta(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
        openai_delta(json!({"content": "Spring"}), Value::Null),
        openai_delta(json!({"content": " is here"}), Value::Null),
        openai_delta(json!({"content": "!"}), Value::Null),
        openai_delta(json!({}), json!("stop")),
        openai_chunk(json!([]), openai_usage(31, 0, 4)),
        "data: [DONE]\n\n".to_owned(),
    ];
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(body_partial_json(json!({
            "model": "gpt-4o-mini",
            "max_tokens": 256,
            "stream": true,
            "stream_options": {"include_usage": true}
        })))
        .respond_with(sse(&events))
        .expect(1)
        .mount(&server)
        .await;

    let completion = openai(&server, true, PATIENT)
        .complete(&request("gpt-4o-mini"))
        .await
        .expect("a completion");

    assert_eq!(completion.text, "Spring is here!");
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 31,
            cached_input_tokens: 0,
            output_tokens: 4
        }
    );
}

#[tokio::test]
async fn openai_cached_tokens_stay_inside_the_input_count_and_are_billed_once() {
    let answer = ResponseTemplate::new(200)
        .set_body_json(openai_completion("ok", openai_usage(1_000, 800, 500)));
    let completion = openai_answer(answer, false).await.expect("a completion");

    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 1_000,
            cached_input_tokens: 800,
            output_tokens: 500
        }
    );
    // 200 uncached × 3,000,000 + 800 cached × 300,000 + 500 output × 15,000,000
    // = 600,000,000 + 240,000,000 + 7,500,000,000 = 8,340,000,000 µ$·tok/Mtok
    // → 8,340 micro-USD. Billing the 800 cached tokens at the input price as well
    // would give 10,740.
    let cost = price("openai", "gpt-4o-mini").cost(&completion.usage);
    assert_eq!(cost.get(), 8_340);
}

#[tokio::test]
async fn openai_without_cache_details_counts_no_cached_tokens() {
    // vLLM and Ollama answer without `prompt_tokens_details`.
    let usage = json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15});
    let answer = ResponseTemplate::new(200).set_body_json(openai_completion("ok", usage));
    let completion = openai_answer(answer, false).await.expect("a completion");
    assert_eq!(completion.usage.cached_input_tokens, 0);
    assert_eq!(completion.usage.input_tokens, 12);
}

#[tokio::test]
async fn openai_429_is_rate_limited_with_the_retry_after_it_sent() {
    let answer = openai_error(
        429,
        "rate_limit_exceeded",
        "Rate limit reached for requests",
    )
    .insert_header("retry-after", "2");
    let error = openai_answer(answer, false)
        .await
        .expect_err("a rate limit");
    assert!(
        matches!(&error, ProviderError::RateLimited { retry_after: Some(wait), .. } if *wait == Duration::from_secs(2)),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.code(), "rate_limited");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn openai_retry_after_ms_wins_over_retry_after() {
    let answer = openai_error(429, "rate_limit_exceeded", "slow down")
        .insert_header("retry-after-ms", "1500")
        .insert_header("retry-after", "2");
    let error = openai_answer(answer, false)
        .await
        .expect_err("a rate limit");
    assert_eq!(error.retry_after(), Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn a_retry_after_date_is_read_as_the_wait_until_then() {
    let then = std::time::SystemTime::now() + Duration::from_secs(120);
    let answer = openai_error(429, "rate_limit_exceeded", "slow down")
        .insert_header("retry-after", httpdate::fmt_http_date(then).as_str());
    let error = openai_answer(answer, false)
        .await
        .expect_err("a rate limit");
    let wait = error.retry_after().expect("a wait");
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
}

#[tokio::test]
async fn openai_500_is_a_retryable_server_error() {
    let answer = openai_error(500, "server_error", "The server had an error");
    let error = openai_answer(answer, false)
        .await
        .expect_err("a server error");
    assert!(
        matches!(&error, ProviderError::Server { status: 500, message } if message.contains("The server had an error")),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.code(), "provider_server_error");
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn openai_slower_than_the_timeout_is_a_timeout() {
    let server = serve(
        OPENAI_PATH,
        ResponseTemplate::new(200)
            .set_body_json(openai_completion("late", openai_usage(1, 0, 1)))
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    let started = Instant::now();
    let error = openai(&server, false, Duration::from_millis(300))
        .complete(&request("gpt-4o-mini"))
        .await
        .expect_err("a timeout");
    assert_eq!(error, ProviderError::Timeout);
    assert!(error.is_retryable());
    assert_eq!(error.code(), "provider_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn openai_garbage_with_200_is_malformed() {
    let answer = ResponseTemplate::new(200).set_body_string("<html>gateway says hi</html>");
    let message = malformed(openai_answer(answer, false).await);
    assert!(message.contains("not a completion"), "{message}");
}

#[tokio::test]
async fn openai_json_without_usage_is_malformed() {
    let mut body = openai_completion("ok", Value::Null);
    body.as_object_mut().map(|o| o.remove("usage"));
    let answer = ResponseTemplate::new(200).set_body_json(body);
    let message = malformed(openai_answer(answer, false).await);
    assert!(message.contains("usage"), "{message}");
}

#[tokio::test]
async fn openai_stream_without_a_usage_chunk_is_malformed() {
    let events = [
        openai_delta(json!({"role": "assistant", "content": "Hi"}), Value::Null),
        openai_delta(json!({}), json!("stop")),
        "data: [DONE]\n\n".to_owned(),
    ];
    let message = malformed(openai_answer(sse(&events), true).await);
    assert!(message.contains("usage"), "{message}");
    let error = ProviderError::Malformed(message);
    assert!(!error.is_retryable());
    assert_eq!(error.code(), "provider_malformed_response");
}

#[tokio::test]
async fn openai_stream_with_a_chunk_that_is_not_json_is_malformed() {
    let events = [
        openai_delta(json!({"content": "Hi"}), Value::Null),
        "data: {not json\n\n".to_owned(),
    ];
    malformed(openai_answer(sse(&events), true).await);
}

#[tokio::test]
async fn openai_unknown_model_is_rejected_and_not_retryable() {
    let answer = openai_error(
        404,
        "model_not_found",
        "The model `gpt-9` does not exist or you do not have access to it.",
    );
    let error = openai_answer(answer, false).await.expect_err("a rejection");
    assert!(
        matches!(&error, ProviderError::Rejected { status: 404, message } if message.contains("model_not_found")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.code(), "provider_rejected");
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    // Bind a port, then free it: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("an address");
    drop(listener);
    let config = OpenAiConfig::new(format!("http://{address}/v1"), SecretString::from(KEY));
    let error = OpenAiProvider::new(config)
        .expect("a valid config")
        .complete(&request("gpt-4o-mini"))
        .await
        .expect_err("no server");
    assert!(matches!(error, ProviderError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(error.code(), "provider_unreachable");
    assert!(!error.to_string().contains(KEY));
}

// ---------------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------------

/// A message in the shape of Anthropic's API reference.
fn anthropic_message(blocks: Value, usage: Value) -> Value {
    json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": blocks,
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": usage
    })
}

fn anthropic_usage(input: u64, cache_read: u64, cache_write: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "service_tier": "standard"
    })
}

/// One named event of a streamed message.
fn anthropic_event(data: Value) -> String {
    let name = data["type"].as_str().unwrap_or("unknown").to_owned();
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_start(usage: Value) -> String {
    anthropic_event(json!({
        "type": "message_start",
        "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5-20250929",
            "stop_reason": null, "stop_sequence": null, "usage": usage
        }
    }))
}

fn anthropic_text(text: &str) -> String {
    anthropic_event(json!({
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": text}
    }))
}

fn anthropic_delta(output_tokens: u64) -> String {
    anthropic_event(json!({
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}
    }))
}

fn anthropic_stop() -> String {
    anthropic_event(json!({"type": "message_stop"}))
}

fn anthropic_error(status: u16, kind: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "type": "error", "error": {"type": kind, "message": message}
    }))
}

#[tokio::test]
async fn anthropic_sends_the_key_version_model_ceiling_and_messages_and_reads_text_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ANTHROPIC_PATH))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", "gen-7-attempt-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_message(
            json!([
                {"type": "text", "text": "Spring is here: "},
                {"type": "tool_use", "id": "toolu_01", "name": "noop", "input": {}},
                {"type": "text", "text": "20% off every plant."}
            ]),
            anthropic_usage(31, 0, 0, 12),
        )))
        .expect(1)
        .mount(&server)
        .await;

    let completion = anthropic(&server, false, PATIENT)
        .complete(&request("claude-sonnet-4-5"))
        .await
        .expect("a completion");

    assert_eq!(completion.text, "Spring is here: 20% off every plant.");
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 31,
            cached_input_tokens: 0,
            output_tokens: 12
        }
    );
    let sent = server.received_requests().await.expect("recording is on");
    assert!(sent[0].headers.get("authorization").is_none());
    let body: Value = sent[0].body_json().expect("a JSON body");
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "system": "You write short social posts.",
            "messages": [
                {"role": "user", "content": "Announce our spring sale: 20% off all plants"}
            ],
            "max_tokens": 256,
            "stream": false
        })
    );
}

#[tokio::test]
async fn anthropic_streamed_text_is_concatenated_with_input_from_the_start_and_output_from_the_delta()
 {
    let events = [
        anthropic_start(json!({
            "input_tokens": 31, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": 1
        })),
        anthropic_event(json!({
            "type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}
        })),
        anthropic_event(json!({"type": "ping"})),
        anthropic_text("Spring"),
        anthropic_text(" is here!"),
        anthropic_event(json!({"type": "content_block_stop", "index": 0})),
        anthropic_delta(15),
        anthropic_stop(),
    ];
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ANTHROPIC_PATH))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true
        })))
        .respond_with(sse(&events))
        .expect(1)
        .mount(&server)
        .await;

    let completion = anthropic(&server, true, PATIENT)
        .complete(&request("claude-sonnet-4-5"))
        .await
        .expect("a completion");

    assert_eq!(completion.text, "Spring is here!");
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 31,
            cached_input_tokens: 0,
            output_tokens: 15
        }
    );
}

#[tokio::test]
async fn anthropic_streamed_output_counts_are_cumulative_so_the_last_one_wins() {
    let events = [
        anthropic_start(anthropic_usage(200, 800, 0, 1)),
        anthropic_text("a"),
        anthropic_delta(10),
        anthropic_text("b"),
        anthropic_delta(15),
        anthropic_stop(),
    ];
    let completion = anthropic_answer(sse(&events), true)
        .await
        .expect("a completion");
    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 1_000,
            cached_input_tokens: 800,
            output_tokens: 15
        }
    );
}

#[tokio::test]
async fn anthropic_cache_reads_are_added_to_the_input_count_and_billed_once() {
    let answer = ResponseTemplate::new(200).set_body_json(anthropic_message(
        json!([{"type": "text", "text": "ok"}]),
        anthropic_usage(200, 800, 0, 500),
    ));
    let completion = anthropic_answer(answer, false).await.expect("a completion");

    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 1_000,
            cached_input_tokens: 800,
            output_tokens: 500
        }
    );
    // The same golden as OpenAI's: 200 uncached × 3,000,000 + 800 cached × 300,000
    // + 500 output × 15,000,000 = 8,340,000,000 → 8,340 micro-USD. Passing
    // Anthropic's `input_tokens` (200) through unchanged would give 7,740 (the
    // uncached part lost); billing the reads at the input price as well, 10,740.
    let cost = price("anthropic", "claude-sonnet-4-5").cost(&completion.usage);
    assert_eq!(cost.get(), 8_340);
}

#[tokio::test]
async fn anthropic_cache_writes_count_as_input_at_the_input_price() {
    let answer = ResponseTemplate::new(200).set_body_json(anthropic_message(
        json!([{"type": "text", "text": "ok"}]),
        anthropic_usage(100, 0, 900, 10),
    ));
    let completion = anthropic_answer(answer, false).await.expect("a completion");
    assert_eq!(
        completion.usage,
        Usage {
            input_tokens: 1_000,
            cached_input_tokens: 0,
            output_tokens: 10
        }
    );
    // 1,000 × 3,000,000 + 10 × 15,000,000 = 3,150,000,000 → 3,150 micro-USD.
    let cost = price("anthropic", "claude-sonnet-4-5").cost(&completion.usage);
    assert_eq!(cost.get(), 3_150);
}

#[tokio::test]
async fn anthropic_429_is_rate_limited_with_the_retry_after_it_sent() {
    let answer = anthropic_error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
    )
    .insert_header("retry-after", "2");
    let error = anthropic_answer(answer, false)
        .await
        .expect_err("a rate limit");
    assert!(
        matches!(&error, ProviderError::RateLimited { retry_after: Some(wait), message } if *wait == Duration::from_secs(2) && message.contains("rate_limit_error")),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn anthropic_529_overloaded_is_treated_as_a_rate_limit() {
    let answer = anthropic_error(529, "overloaded_error", "Overloaded");
    let error = anthropic_answer(answer, false)
        .await
        .expect_err("an overload");
    assert!(
        matches!(
            &error,
            ProviderError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn anthropic_overloaded_error_event_in_a_stream_is_treated_as_a_rate_limit() {
    let events = [
        anthropic_start(anthropic_usage(31, 0, 0, 1)),
        anthropic_text("Spr"),
        anthropic_event(json!({
            "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}
        })),
    ];
    let error = anthropic_answer(sse(&events), true)
        .await
        .expect_err("an overload");
    assert!(
        matches!(&error, ProviderError::RateLimited { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn anthropic_other_error_event_in_a_stream_is_a_server_error() {
    let events = [
        anthropic_start(anthropic_usage(31, 0, 0, 1)),
        anthropic_event(json!({
            "type": "error", "error": {"type": "api_error", "message": "Internal server error"}
        })),
    ];
    let error = anthropic_answer(sse(&events), true)
        .await
        .expect_err("an error");
    assert!(
        matches!(&error, ProviderError::Server { message, .. } if message.contains("api_error")),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn anthropic_500_is_a_retryable_server_error() {
    let answer = anthropic_error(500, "api_error", "Internal server error");
    let error = anthropic_answer(answer, false)
        .await
        .expect_err("a server error");
    assert!(
        matches!(&error, ProviderError::Server { status: 500, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn anthropic_slower_than_the_timeout_is_a_timeout() {
    let server = serve(
        ANTHROPIC_PATH,
        ResponseTemplate::new(200)
            .set_body_json(anthropic_message(json!([]), anthropic_usage(1, 0, 0, 1)))
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    let error = anthropic(&server, false, Duration::from_millis(300))
        .complete(&request("claude-sonnet-4-5"))
        .await
        .expect_err("a timeout");
    assert_eq!(error, ProviderError::Timeout);
}

#[tokio::test]
async fn anthropic_garbage_with_200_is_malformed() {
    let answer =
        ResponseTemplate::new(200).set_body_string("{\"type\": \"message\", \"content\": [");
    malformed(anthropic_answer(answer, false).await);
}

#[tokio::test]
async fn anthropic_json_without_usage_is_malformed() {
    let mut body = anthropic_message(json!([{"type": "text", "text": "ok"}]), Value::Null);
    body.as_object_mut().map(|o| o.remove("usage"));
    let answer = ResponseTemplate::new(200).set_body_json(body);
    let message = malformed(anthropic_answer(answer, false).await);
    assert!(message.contains("usage"), "{message}");
}

#[tokio::test]
async fn anthropic_stream_without_usage_is_malformed() {
    // No message_start, so no input count.
    let events = [anthropic_text("Hi"), anthropic_delta(3), anthropic_stop()];
    malformed(anthropic_answer(sse(&events), true).await);
}

#[tokio::test]
async fn anthropic_stream_cut_before_message_stop_is_malformed() {
    let events = [
        anthropic_start(anthropic_usage(31, 0, 0, 1)),
        anthropic_text("Spr"),
    ];
    let message = malformed(anthropic_answer(sse(&events), true).await);
    assert!(message.contains("message_stop"), "{message}");
}

#[tokio::test]
async fn anthropic_unknown_model_is_rejected_and_not_retryable() {
    let answer = anthropic_error(404, "not_found_error", "model: claude-9");
    let error = anthropic_answer(answer, false)
        .await
        .expect_err("a rejection");
    assert!(
        matches!(&error, ProviderError::Rejected { status: 404, message } if message.contains("not_found_error")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

// ---------------------------------------------------------------------------------
// Keys, codes and building
// ---------------------------------------------------------------------------------

#[test]
fn configs_and_providers_never_print_the_api_key() {
    let openai = OpenAiConfig::new("https://api.openai.com/v1", SecretString::from(KEY));
    let anthropic = AnthropicConfig::new("https://api.anthropic.com", SecretString::from(KEY));
    let printed = [
        format!("{openai:?}"),
        format!("{anthropic:?}"),
        format!("{:?}", OpenAiProvider::new(openai).expect("a valid config")),
        format!(
            "{:?}",
            AnthropicProvider::new(anthropic).expect("a valid config")
        ),
    ];
    for text in printed {
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains("4f2a"), "{text}");
    }
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused_without_being_echoed() {
    let config = OpenAiConfig::new("http://localhost", SecretString::from("sk-bad\nkey"));
    let error = OpenAiProvider::new(config).expect_err("an invalid key");
    assert!(matches!(error, BuildError::InvalidApiKey { .. }));
    assert!(!format!("{error} {error:?}").contains("sk-bad"));
}

#[test]
fn error_codes_are_stable() {
    let cases = [
        (
            ProviderError::RateLimited {
                retry_after: None,
                message: String::new(),
            },
            "rate_limited",
            true,
        ),
        (
            ProviderError::Server {
                status: 503,
                message: String::new(),
            },
            "provider_server_error",
            true,
        ),
        (ProviderError::Timeout, "provider_timeout", true),
        (
            ProviderError::Transport(String::new()),
            "provider_unreachable",
            true,
        ),
        (
            ProviderError::Malformed(String::new()),
            "provider_malformed_response",
            false,
        ),
        (
            ProviderError::Rejected {
                status: 400,
                message: String::new(),
            },
            "provider_rejected",
            false,
        ),
        (
            ProviderError::CircuitOpen {
                provider: "openai".into(),
            },
            "circuit_open",
            false,
        ),
    ];
    for (error, code, retryable) in cases {
        assert_eq!(error.code(), code);
        assert_eq!(error.is_retryable(), retryable, "{code}");
    }
}

#[tokio::test]
async fn build_makes_the_adapter_the_config_names() {
    let local = build(ProviderConfig::Local {
        latency: Duration::ZERO,
    })
    .expect("local builds");
    assert_eq!(local.name(), "local");
    let vllm = build(ProviderConfig::OpenAi(OpenAiConfig {
        name: "vllm".into(),
        ..OpenAiConfig::new("http://localhost:8000/v1", SecretString::from(KEY))
    }))
    .expect("vllm builds");
    assert_eq!(vllm.name(), "vllm");
    let anthropic = build(ProviderConfig::Anthropic(AnthropicConfig::new(
        "https://api.anthropic.com",
        SecretString::from(KEY),
    )))
    .expect("anthropic builds");
    assert_eq!(anthropic.name(), "anthropic");
    let completion = local
        .complete(&request("local-writer"))
        .await
        .expect("local never fails");
    assert!(!completion.text.is_empty());
}

// ---------------------------------------------------------------------------------
// Retry policy
// ---------------------------------------------------------------------------------

#[test]
fn backoff_stays_between_zero_and_the_doubling_ceiling_capped_at_max_delay() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    };
    let mut rng = StdRng::seed_from_u64(7);
    for attempt in 1..=12_u32 {
        let ceiling = (Duration::from_millis(100) * 2_u32.pow(attempt - 1)).min(policy.max_delay);
        let draws: Vec<Duration> = (0..500)
            .map(|_| policy.backoff(attempt, None, &mut rng))
            .collect();
        assert!(draws.iter().all(|d| *d <= ceiling), "attempt {attempt}");
        // Full jitter spreads the draws over the whole range.
        assert!(draws.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
        assert!(
            draws.iter().any(|d| *d > ceiling * 3 / 4),
            "attempt {attempt}"
        );
    }
}

#[test]
fn backoff_survives_absurd_attempt_numbers() {
    let policy = RetryPolicy::default();
    let mut rng = StdRng::seed_from_u64(1);
    for attempt in [0, 1, 31, 32, 64, u32::MAX] {
        assert!(policy.backoff(attempt, None, &mut rng) <= policy.max_delay);
    }
}

#[test]
fn backoff_is_never_shorter_than_retry_after() {
    let policy = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    let mut rng = StdRng::seed_from_u64(3);
    for attempt in 1..=5 {
        for _ in 0..200 {
            let wait = policy.backoff(attempt, Some(Duration::from_secs(2)), &mut rng);
            // Past max_delay: the provider's word wins over our ceiling.
            assert_eq!(wait, Duration::from_secs(2));
            let short = policy.backoff(attempt, Some(Duration::from_millis(50)), &mut rng);
            assert!(short >= Duration::from_millis(50) && short <= policy.max_delay);
        }
    }
}

#[test]
fn an_absurd_retry_after_is_capped_at_a_minute() {
    let policy = RetryPolicy::default();
    let mut rng = StdRng::seed_from_u64(5);
    let wait = policy.backoff(1, Some(Duration::from_secs(3_600)), &mut rng);
    assert_eq!(wait, RETRY_AFTER_CAP);
    assert_eq!(RETRY_AFTER_CAP, Duration::from_secs(60));
}

#[test]
fn only_retryable_failures_are_retried_and_only_up_to_max_attempts() {
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    assert!(policy.should_retry(1, &ProviderError::Timeout));
    assert!(policy.should_retry(2, &ProviderError::Timeout));
    assert!(!policy.should_retry(3, &ProviderError::Timeout));
    let rejected = ProviderError::Rejected {
        status: 400,
        message: String::new(),
    };
    assert!(!policy.should_retry(1, &rejected));
}

// ---------------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------------

#[test]
fn the_breaker_opens_after_consecutive_failures_probes_once_after_the_cool_down_and_closes_on_success()
 {
    let breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 3,
        cool_down: Duration::from_secs(30),
    });
    let t0 = Instant::now();
    let at = |secs| t0 + Duration::from_secs(secs);

    // Failures that are not consecutive do not open it.
    breaker.record(at(0), false);
    breaker.record(at(0), false);
    breaker.record(at(0), true);
    breaker.record(at(0), false);
    breaker.record(at(0), false);
    assert_eq!(breaker.state(at(0)), BreakerState::Closed);
    assert!(breaker.allow(at(0)));

    // The third in a row opens it for the cool-down.
    breaker.record(at(1), false);
    assert_eq!(breaker.state(at(1)), BreakerState::Open);
    assert!(!breaker.allow(at(1)));
    assert!(!breaker.allow(at(30)));

    // After the cool-down one probe goes through, and only one.
    assert_eq!(breaker.state(at(31)), BreakerState::HalfOpen);
    assert!(breaker.allow(at(31)));
    assert!(!breaker.allow(at(32)));

    // The probe fails: open again for a full cool-down.
    breaker.record(at(33), false);
    assert_eq!(breaker.state(at(33)), BreakerState::Open);
    assert!(!breaker.allow(at(62)));

    // The next probe succeeds: closed, every call goes through.
    assert!(breaker.allow(at(63)));
    breaker.record(at(64), true);
    assert_eq!(breaker.state(at(64)), BreakerState::Closed);
    assert!(breaker.allow(at(64)));
    assert!(breaker.allow(at(64)));
}

#[test]
fn a_probe_that_never_reports_is_replaced_after_another_cool_down() {
    let breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 1,
        cool_down: Duration::from_secs(10),
    });
    let t0 = Instant::now();
    breaker.record(t0, false);
    assert!(breaker.allow(t0 + Duration::from_secs(10)));
    assert!(!breaker.allow(t0 + Duration::from_secs(19)));
    assert!(breaker.allow(t0 + Duration::from_secs(20)));
}

#[test]
fn the_default_breaker_opens_after_five_failures_for_thirty_seconds() {
    let breaker = CircuitBreaker::default();
    let t0 = Instant::now();
    for _ in 0..4 {
        breaker.record(t0, false);
    }
    assert!(breaker.allow(t0));
    breaker.record(t0, false);
    assert!(!breaker.allow(t0 + Duration::from_secs(29)));
    assert!(breaker.allow(t0 + Duration::from_secs(30)));
}

#[tokio::test]
async fn guarded_refuses_without_sending_once_the_breaker_is_open() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(OPENAI_PATH))
        .respond_with(openai_error(503, "server_error", "unavailable"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    let guarded = Guarded::new(
        openai(&server, false, PATIENT),
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
        }),
    );
    for _ in 0..2 {
        let error = guarded
            .complete(&request("gpt-4o-mini"))
            .await
            .expect_err("the server fails");
        assert!(matches!(error, ProviderError::Server { status: 503, .. }));
    }
    server.verify().await;

    // From here on nothing may reach the server.
    let _untouched = Mock::given(method("POST"))
        .respond_with(openai_error(503, "server_error", "unavailable"))
        .expect(0)
        .mount_as_scoped(&server)
        .await;
    let error = guarded
        .complete(&request("gpt-4o-mini"))
        .await
        .expect_err("the breaker refuses");
    assert_eq!(
        error,
        ProviderError::CircuitOpen {
            provider: "openai".into()
        }
    );
    assert!(!error.is_retryable());
    assert_eq!(error.code(), "circuit_open");
}

#[tokio::test]
async fn rejections_do_not_open_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ANTHROPIC_PATH))
        .respond_with(anthropic_error(
            400,
            "invalid_request_error",
            "max_tokens: too big",
        ))
        .expect(4)
        .mount(&server)
        .await;
    let guarded = Guarded::new(
        anthropic(&server, false, PATIENT),
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
        }),
    );
    for _ in 0..4 {
        let error = guarded
            .complete(&request("claude-sonnet-4-5"))
            .await
            .expect_err("rejected");
        assert!(matches!(error, ProviderError::Rejected { status: 400, .. }));
    }
    assert_eq!(
        guarded.breaker().state(Instant::now()),
        BreakerState::Closed
    );
}

// ---------------------------------------------------------------------------------
// Local provider
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_local_provider_answers_the_same_text_for_the_same_prompt_and_model() {
    let provider = LocalProvider::new();
    let first = provider
        .complete(&request("local-writer"))
        .await
        .expect("ok");
    let again = provider
        .complete(&request("local-writer"))
        .await
        .expect("ok");
    assert_eq!(first.text, again.text);
    assert_eq!(first.usage, again.usage);
    assert_eq!(first.model, "local-writer");
    assert!(
        first
            .text
            .contains("Announce our spring sale: 20% off all plants")
    );

    let other = CompletionRequest {
        prompt: "Invite everyone to the open day".into(),
        ..request("local-writer")
    };
    let other = provider.complete(&other).await.expect("ok");
    assert_ne!(first.text, other.text);
}

#[tokio::test]
async fn the_local_provider_counts_its_own_text_and_respects_the_output_ceiling() {
    let provider = LocalProvider::new();
    let full = provider
        .complete(&request("local-writer"))
        .await
        .expect("ok");
    let req = request("local-writer");
    assert_eq!(
        full.usage,
        Usage {
            input_tokens: local_tokens(&req.system) + local_tokens(&req.prompt),
            cached_input_tokens: 0,
            output_tokens: local_tokens(&full.text),
        }
    );
    for ceiling in [0_u32, 1, 3, 10] {
        let short = CompletionRequest {
            max_output_tokens: ceiling,
            ..request("local-writer")
        };
        let completion = provider.complete(&short).await.expect("ok");
        assert!(completion.usage.output_tokens <= u64::from(ceiling));
        assert!(full.text.starts_with(&completion.text));
        assert_eq!(completion.text.is_empty(), ceiling == 0);
    }
}

#[tokio::test]
async fn the_local_provider_waits_its_configured_latency() {
    // Real time, kept short: the crate's tokio has no `test-util` to pause it, and
    // the wait is the provider's, not the test's.
    let latency = Duration::from_millis(100);
    let completion = LocalProvider::with_latency(latency)
        .complete(&request("local-writer"))
        .await
        .expect("ok");
    assert!(completion.latency >= latency, "{:?}", completion.latency);
}

/// Texts of every shape the estimate must cover: empty, one character, long lines,
/// many short lines, multi-byte characters, trailing newlines.
fn sample_texts() -> Vec<String> {
    let alphabet: Vec<char> = "ab cd\n\u{e9}\u{1f331}\u{4e2d}\t.,!".chars().collect();
    let mut texts: Vec<String> = ["", "a", "\n", "\n\n\n", "abcd", "abcde", "\u{1f331}"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    // A fixed linear congruential sequence: varied but the same on every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    for _ in 0..500 {
        let len = next() % 600;
        texts.push(
            (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect(),
        );
    }
    texts
}

#[tokio::test]
async fn the_local_token_count_never_exceeds_the_budget_estimate() {
    let provider = LocalProvider::new();
    let texts = sample_texts();
    for (i, prompt) in texts.iter().enumerate() {
        let system = &texts[(i * 7 + 3) % texts.len()];
        let req = CompletionRequest {
            model: "local-writer".into(),
            system: system.clone(),
            prompt: prompt.clone(),
            max_output_tokens: 4_096,
            idempotency_key: format!("k{i}"),
        };
        let completion = provider.complete(&req).await.expect("ok");
        assert!(
            completion.usage.input_tokens <= estimate_tokens(system) + estimate_tokens(prompt),
            "system {system:?} prompt {prompt:?}"
        );
        assert!(completion.usage.output_tokens <= estimate_tokens(&completion.text));
        assert_eq!(local_tokens(prompt) == 0, prompt.is_empty());
    }
}
