//! Standard Webhooks signing and verification: the spec's published test vector,
//! rotation, tampering, replay windows and missing headers.

use auth::webhooks::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Verifier, WebhookError, WebhookHeaders,
    WebhookSecret, WebhookSecretError, sign,
};
use chrono::{DateTime, TimeDelta, Utc};

/// The secret, message id, timestamp and body of the test vector used by the
/// Standard Webhooks reference libraries (`libraries/javascript/src/webhook.test.ts`,
/// "sign function works").
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1_614_265_330;
const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
/// The signature the reference libraries expect for the vector above. Cross-checked
/// independently with Python:
/// `base64.b64encode(hmac.new(base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
/// b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}',
/// hashlib.sha256).digest())`.
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

const BODY: &[u8] = br#"{"type":"post.published","post_id":"42"}"#;

fn secret(raw: &str) -> WebhookSecret {
    WebhookSecret::parse(raw).expect("valid secret")
}

fn old_secret() -> WebhookSecret {
    secret("whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQ=")
}

fn new_secret() -> WebhookSecret {
    secret("whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=")
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).expect("valid time")
}

fn verifier(secrets: Vec<WebhookSecret>) -> Verifier {
    Verifier::new(secrets).expect("at least one secret")
}

/// Headers for `BODY` signed with `secret` at `at`.
fn signed(secret: &WebhookSecret, at: DateTime<Utc>) -> WebhookHeaders {
    let timestamp = at.timestamp();
    WebhookHeaders {
        id: Some("msg_1".into()),
        timestamp: Some(timestamp.to_string()),
        signature: Some(sign(secret, "msg_1", timestamp, BODY)),
    }
}

#[test]
fn signing_the_spec_test_vector_gives_the_spec_signature() {
    let signature = sign(
        &secret(SPEC_SECRET),
        SPEC_MSG_ID,
        SPEC_TIMESTAMP,
        SPEC_BODY.as_bytes(),
    );
    assert_eq!(signature, SPEC_SIGNATURE);
}

#[test]
fn the_spec_test_vector_verifies_at_its_own_time() {
    let headers = WebhookHeaders {
        id: Some(SPEC_MSG_ID.into()),
        timestamp: Some(SPEC_TIMESTAMP.to_string()),
        signature: Some(SPEC_SIGNATURE.into()),
    };
    let at = DateTime::from_timestamp(SPEC_TIMESTAMP + 10, 0).expect("valid time");
    let verified = verifier(vec![secret(SPEC_SECRET)])
        .verify(&headers, SPEC_BODY.as_bytes(), at)
        .expect("valid webhook");
    assert_eq!(verified.id, SPEC_MSG_ID);
    assert_eq!(verified.timestamp.timestamp(), SPEC_TIMESTAMP);
}

#[test]
fn a_correctly_signed_message_is_accepted() {
    let verified = verifier(vec![new_secret()])
        .verify(&signed(&new_secret(), now()), BODY, now())
        .expect("valid webhook");
    assert_eq!(verified.id, "msg_1");
    assert_eq!(verified.timestamp, now());
}

#[test]
fn a_message_signed_with_another_secret_is_refused() {
    let result = verifier(vec![new_secret()]).verify(&signed(&old_secret(), now()), BODY, now());
    assert_eq!(result, Err(WebhookError::InvalidSignature));
}

#[test]
fn during_a_rotation_messages_signed_with_either_secret_are_accepted() {
    let verifier = verifier(vec![old_secret(), new_secret()]);
    for secret in [old_secret(), new_secret()] {
        verifier
            .verify(&signed(&secret, now()), BODY, now())
            .expect("either secret is accepted");
    }
}

#[test]
fn an_altered_body_is_refused() {
    let headers = signed(&new_secret(), now());
    let result = verifier(vec![new_secret()]).verify(
        &headers,
        br#"{"type":"post.published","post_id":"43"}"#,
        now(),
    );
    assert_eq!(result, Err(WebhookError::InvalidSignature));
}

#[test]
fn an_altered_id_is_refused() {
    let mut headers = signed(&new_secret(), now());
    headers.id = Some("msg_2".into());
    let result = verifier(vec![new_secret()]).verify(&headers, BODY, now());
    assert_eq!(result, Err(WebhookError::InvalidSignature));
}

#[test]
fn a_timestamp_older_than_the_tolerance_is_refused() {
    let sent = now() - Verifier::DEFAULT_TOLERANCE - TimeDelta::seconds(1);
    let result = verifier(vec![new_secret()]).verify(&signed(&new_secret(), sent), BODY, now());
    assert_eq!(result, Err(WebhookError::StaleTimestamp));
}

#[test]
fn a_timestamp_further_ahead_than_the_tolerance_is_refused() {
    let sent = now() + Verifier::DEFAULT_TOLERANCE + TimeDelta::seconds(1);
    let result = verifier(vec![new_secret()]).verify(&signed(&new_secret(), sent), BODY, now());
    assert_eq!(result, Err(WebhookError::StaleTimestamp));
}

#[test]
fn a_timestamp_just_inside_the_tolerance_is_accepted() {
    let verifier = verifier(vec![new_secret()]);
    for sent in [
        now() - Verifier::DEFAULT_TOLERANCE,
        now() + Verifier::DEFAULT_TOLERANCE,
    ] {
        verifier
            .verify(&signed(&new_secret(), sent), BODY, now())
            .expect("inside the tolerance");
    }
}

#[test]
fn a_custom_tolerance_is_honoured() {
    let sent = now() - TimeDelta::seconds(30);
    let result = verifier(vec![new_secret()])
        .with_tolerance(TimeDelta::seconds(10))
        .verify(&signed(&new_secret(), sent), BODY, now());
    assert_eq!(result, Err(WebhookError::StaleTimestamp));
}

#[test]
fn a_missing_header_is_refused_and_named() {
    type Remove = fn(&mut WebhookHeaders);
    let cases: [(Remove, &str); 3] = [
        (|h| h.id = None, HEADER_ID),
        (|h| h.timestamp = None, HEADER_TIMESTAMP),
        (|h| h.signature = None, HEADER_SIGNATURE),
    ];
    for (remove, name) in cases {
        let mut headers = signed(&new_secret(), now());
        remove(&mut headers);
        let error = verifier(vec![new_secret()])
            .verify(&headers, BODY, now())
            .expect_err("a header is missing");
        assert_eq!(error, WebhookError::MissingHeader(name));
        assert_eq!(error.code(), "missing_webhook_header");
        assert!(error.to_string().contains(name), "{error}");
    }
}

#[test]
fn a_non_numeric_timestamp_is_refused() {
    let mut headers = signed(&new_secret(), now());
    headers.timestamp = Some("yesterday".into());
    let error = verifier(vec![new_secret()])
        .verify(&headers, BODY, now())
        .expect_err("bad timestamp");
    assert_eq!(error, WebhookError::InvalidTimestamp);
    assert_eq!(error.code(), "invalid_webhook_timestamp");
}

#[test]
fn one_valid_signature_among_several_is_enough() {
    let mut headers = signed(&new_secret(), now());
    let valid = headers.signature.take().expect("signed");
    headers.signature = Some(format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
         v1,not-base64!! {valid} v1,"
    ));
    verifier(vec![new_secret()])
        .verify(&headers, BODY, now())
        .expect("one signature is valid");
}

#[test]
fn only_invalid_or_unknown_signatures_are_refused() {
    let mut headers = signed(&new_secret(), now());
    let valid = headers.signature.take().expect("signed");
    let truncated = &valid[..8];
    let other_scheme = valid.replacen("v1,", "v1a,", 1);
    for signature in ["", "v1,", truncated, &other_scheme] {
        headers.signature = Some(signature.to_owned());
        let error = verifier(vec![new_secret()])
            .verify(&headers, BODY, now())
            .expect_err("no valid signature");
        assert_eq!(error, WebhookError::InvalidSignature, "{signature:?}");
        assert_eq!(error.code(), "invalid_webhook_signature");
    }
}

#[test]
fn stale_timestamps_have_a_stable_code() {
    assert_eq!(
        WebhookError::StaleTimestamp.code(),
        "stale_webhook_timestamp"
    );
}

#[test]
fn a_secret_without_the_prefix_is_used_as_raw_bytes() {
    let raw = secret("a-plain-shared-secret");
    let from_bytes =
        WebhookSecret::from_bytes(b"a-plain-shared-secret".to_vec()).expect("valid secret");
    assert_eq!(
        sign(&raw, "msg_1", 1, BODY),
        sign(&from_bytes, "msg_1", 1, BODY)
    );
}

#[test]
fn unusable_secrets_are_refused() {
    assert_eq!(
        WebhookSecret::parse("").map(drop),
        Err(WebhookSecretError::Empty)
    );
    assert_eq!(
        WebhookSecret::parse("whsec_").map(drop),
        Err(WebhookSecretError::Empty)
    );
    assert_eq!(
        WebhookSecret::parse("whsec_%%%").map(drop),
        Err(WebhookSecretError::NotBase64)
    );
    assert_eq!(
        Verifier::new(Vec::new()).map(drop),
        Err(WebhookSecretError::NoSecrets)
    );
}

#[test]
fn headers_can_be_read_from_any_header_map() {
    let headers = WebhookHeaders::from_lookup(|name| match name {
        "webhook-id" => Some("msg_1"),
        "webhook-timestamp" => Some("5"),
        _ => None,
    });
    assert_eq!(
        headers,
        WebhookHeaders {
            id: Some("msg_1".into()),
            timestamp: Some("5".into()),
            signature: None,
        }
    );
}

#[test]
fn debug_output_never_shows_the_secret() {
    let secret = secret("whsec_c3VwZXItc2VjcmV0LWtleS1ieXRlcw==");
    let verifier = verifier(vec![secret.clone()]);
    for printed in [format!("{secret:?}"), format!("{verifier:?}")] {
        assert!(!printed.contains("c3VwZXItc2VjcmV0"), "{printed}");
        assert!(!printed.contains("super-secret"), "{printed}");
        // The bytes would show up as a list of numbers if the key were printed.
        assert!(!printed.contains("115, 117, 112"), "{printed}");
    }
}
