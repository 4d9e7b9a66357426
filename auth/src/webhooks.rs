//! Standard Webhooks (<https://www.standardwebhooks.com>): signing the webhooks
//! Tidemark sends and verifying the ones it receives.
//!
//! A message carries three headers: `webhook-id` (unique per message, the same on
//! every retry, so receivers can drop duplicates), `webhook-timestamp` (unix seconds
//! of this attempt) and `webhook-signature`, a space-separated list of
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`. Several signatures and
//! several configured secrets let a secret be rotated without a gap: the sender signs
//! with old and new, the receiver accepts either. Verification compares in constant
//! time and refuses timestamps outside a tolerance, which bounds replays; remembering
//! ids already seen is the caller's job, since it needs storage.
//!
//! Secrets in the `whsec_<base64>` form are decoded to their key bytes. A secret
//! without that prefix is used as its raw bytes — note that the reference libraries
//! base64-decode such a secret instead, so share secrets with receivers in the
//! prefixed form.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// Header holding the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Header holding the unix time, in seconds, of the attempt.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header holding the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Prefix of secrets in the Standard Webhooks text form.
const SECRET_PREFIX: &str = "whsec_";
/// The only signature scheme this module knows: symmetric HMAC-SHA256.
const SCHEME_V1: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// Why a configured secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSecretError {
    #[error("webhook secret is empty")]
    Empty,
    #[error("webhook secret after `whsec_` is not valid base64")]
    NotBase64,
    #[error("no webhook secret configured")]
    NoSecrets,
}

impl WebhookSecretError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookSecretError::Empty => "empty_webhook_secret",
            WebhookSecretError::NotBase64 => "invalid_webhook_secret",
            WebhookSecretError::NoSecrets => "no_webhook_secret",
        }
    }
}

/// The key a webhook is signed with. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct WebhookSecret {
    key: SecretSlice<u8>,
}

impl WebhookSecret {
    /// Reads a secret: `whsec_<base64>` is decoded, anything else is taken as raw
    /// bytes. Surrounding whitespace (a trailing newline in a secrets file) is ignored.
    pub fn parse(raw: &str) -> Result<Self, WebhookSecretError> {
        let raw = raw.trim();
        let key = match raw.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => BASE64
                .decode(encoded)
                .map_err(|_| WebhookSecretError::NotBase64)?,
            None => raw.as_bytes().to_vec(),
        };
        Self::from_bytes(key)
    }

    /// A secret from its key bytes.
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, WebhookSecretError> {
        if key.is_empty() {
            return Err(WebhookSecretError::Empty);
        }
        Ok(Self { key: key.into() })
    }

    /// The HMAC over `{id}.{timestamp}.{body}`, not yet finalized.
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length (long ones are hashed first), so this
        // constructor cannot fail.
        let mut mac = HmacSha256::new_from_slice(self.key.expose_secret())
            .expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Signs one message: the value for the `webhook-signature` header, `v1,<base64>`.
/// To sign with several secrets (during a rotation), join the values with a space.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
    format!("{SCHEME_V1},{}", BASE64.encode(tag))
}

/// The three Standard Webhooks headers as received; each may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookHeaders {
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
}

impl WebhookHeaders {
    /// Reads the headers through `get`, which looks one up by its lowercase name —
    /// so any HTTP library's header map will do.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            id: get(HEADER_ID).map(str::to_owned),
            timestamp: get(HEADER_TIMESTAMP).map(str::to_owned),
            signature: get(HEADER_SIGNATURE).map(str::to_owned),
        }
    }
}

/// A message whose signature and timestamp checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    /// The sender's message id; the caller refuses ids it has already seen.
    pub id: String,
    /// When the sender made this attempt.
    pub timestamp: DateTime<Utc>,
}

/// Why a received webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is too far from now")]
    StaleTimestamp,
    #[error("no valid webhook signature")]
    InvalidSignature,
}

impl WebhookError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::MissingHeader(_) => "missing_webhook_header",
            WebhookError::InvalidTimestamp => "invalid_webhook_timestamp",
            WebhookError::StaleTimestamp => "stale_webhook_timestamp",
            WebhookError::InvalidSignature => "invalid_webhook_signature",
        }
    }
}

/// Checks received webhooks against one or more secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<WebhookSecret>,
    tolerance: TimeDelta,
}

impl Verifier {
    /// How far a timestamp may be from now, either way, unless set otherwise.
    pub const DEFAULT_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

    /// A verifier accepting a signature by any of `secrets` (several while one is
    /// rotated), with the default tolerance. Refuses an empty list, which would
    /// refuse every message.
    pub fn new(
        secrets: impl IntoIterator<Item = WebhookSecret>,
    ) -> Result<Self, WebhookSecretError> {
        let secrets: Vec<_> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(WebhookSecretError::NoSecrets);
        }
        Ok(Self {
            secrets,
            tolerance: Self::DEFAULT_TOLERANCE,
        })
    }

    /// The same verifier with another timestamp tolerance.
    pub fn with_tolerance(mut self, tolerance: TimeDelta) -> Self {
        self.tolerance = tolerance.abs();
        self
    }

    /// Verifies one message as received at `now`.
    pub fn verify(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<VerifiedWebhook, WebhookError> {
        let id = headers
            .id
            .as_deref()
            .ok_or(WebhookError::MissingHeader(HEADER_ID))?;
        let raw_timestamp = headers
            .timestamp
            .as_deref()
            .ok_or(WebhookError::MissingHeader(HEADER_TIMESTAMP))?;
        let signatures = headers
            .signature
            .as_deref()
            .ok_or(WebhookError::MissingHeader(HEADER_SIGNATURE))?;

        let seconds: i64 = raw_timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::InvalidTimestamp)?;
        let timestamp =
            DateTime::from_timestamp(seconds, 0).ok_or(WebhookError::InvalidTimestamp)?;
        if (now - timestamp).abs() > self.tolerance {
            return Err(WebhookError::StaleTimestamp);
        }

        // Undecodable entries and other schemes are skipped rather than refused: the
        // header may carry signatures this verifier does not understand next to one
        // it does.
        let candidates: Vec<Vec<u8>> = signatures
            .split_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(scheme, _)| *scheme == SCHEME_V1)
            .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
            .collect();
        let matched = self.secrets.iter().any(|secret| {
            let mac = secret.mac(id, seconds, body);
            // `verify_slice` compares in constant time.
            candidates
                .iter()
                .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        });
        if !matched {
            return Err(WebhookError::InvalidSignature);
        }
        Ok(VerifiedWebhook {
            id: id.to_owned(),
            timestamp,
        })
    }
}
