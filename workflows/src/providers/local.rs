//! The embedded provider: writes a short marketing text from the brief with no
//! network and no key, so `tidemark dev` and the tests generate end to end.
//!
//! The text is a pure function of the model name and the prompt. Its token counts are
//! real for what it returns, by one rule, [`local_tokens`]: a quarter of the
//! characters, rounded up. That rule never counts more than
//! [`domain::pricing::estimate_tokens`] (a third of the characters plus one per
//! line), so a budget reservation sized on the estimate always covers a local call.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::pricing::Usage;

use super::{Completion, CompletionRequest, Provider, ProviderError};

/// How many characters of the brief the text quotes.
const QUOTE_LIMIT: usize = 80;

const OPENINGS: [&str; 4] = [
    "Meet the news you have been waiting for",
    "Here is something worth your time",
    "Fresh from our team",
    "Big things are happening",
];

const CLOSINGS: [&str; 4] = [
    "Find out more today.",
    "Tell a friend who needs to hear it.",
    "Be among the first to try it.",
    "Join us and see for yourself.",
];

/// The local provider's token count: `ceil(chars / 4)`, so 0 for an empty text and at
/// least 1 for any other.
pub fn local_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The deterministic provider. `Debug` and `Clone` are cheap: it holds no client.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalProvider {
    latency: Duration,
}

impl LocalProvider {
    /// Answers at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits `latency` before answering, for tests that stop a process mid-call.
    pub fn with_latency(latency: Duration) -> Self {
        Self { latency }
    }

    /// The text for a request: an opening and a closing chosen by a hash of the model
    /// and prompt, the brief's first line quoted between them, cut to the request's
    /// output ceiling.
    pub fn text(request: &CompletionRequest) -> String {
        let hash = fnv1a(&[request.model.as_bytes(), b"\0", request.prompt.as_bytes()]);
        let opening = OPENINGS[(hash % 4) as usize];
        let closing = CLOSINGS[((hash >> 8) % 4) as usize];
        let brief = request.prompt.lines().next().unwrap_or("").trim();
        let quoted: String = brief.chars().take(QUOTE_LIMIT).collect();
        let ellipsis = if brief.chars().count() > QUOTE_LIMIT {
            "…"
        } else {
            ""
        };
        let full = format!("{opening}: \u{201c}{quoted}{ellipsis}\u{201d} {closing}");
        // `local_tokens` counts four characters a token, so this many characters fit.
        let limit = usize::try_from(u64::from(request.max_output_tokens) * 4).unwrap_or(usize::MAX);
        full.chars().take(limit).collect()
    }
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike the standard
/// library's hasher, so the same prompt gives the same text everywhere.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let text = Self::text(request);
        let usage = Usage {
            input_tokens: local_tokens(&request.system) + local_tokens(&request.prompt),
            cached_input_tokens: 0,
            output_tokens: local_tokens(&text),
        };
        Ok(Completion {
            text,
            usage,
            model: request.model.clone(),
            latency: started.elapsed(),
        })
    }
}
