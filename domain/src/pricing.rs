//! The price book: what a model charges per token, and the cost of a call.
//!
//! Prices are integer micro-USD per million tokens, separately for uncached input,
//! cached input and output. A cost is computed once, here, from a provider-neutral
//! [`Usage`] whose `input_tokens` *includes* the cached ones (OpenAI's convention;
//! the Anthropic adapter adds its cache reads in before calling). Cached tokens are
//! billed at the cached price and never a second time at the input price.
//!
//! A model missing from the book is refused ([`PriceBook::lookup`] answers `None`):
//! nothing is ever priced at zero by accident. The book's `version` is recorded with
//! every cost, so a later price change never rewrites what a past call cost.

use std::fmt;

use crate::ids::Micros;

/// Tokens one provider call used, in provider-neutral form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Every input (prompt) token, cached ones included.
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// Input tokens billed at the full input price.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens.saturating_sub(self.cached_input_tokens)
    }
}

/// A model as the price book names it: `provider/model`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

impl ModelRef {
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// One model's prices and output ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub model: ModelRef,
    /// Micro-USD per million uncached input tokens.
    pub input_per_mtok: Micros,
    /// Micro-USD per million cached input tokens.
    pub cached_input_per_mtok: Micros,
    /// Micro-USD per million output tokens.
    pub output_per_mtok: Micros,
    /// The most output tokens the model produces in one call.
    pub max_output_tokens: u32,
}

impl ModelPrice {
    /// What `usage` costs at these prices, rounded up to the next micro-USD (a
    /// fraction of a micro-USD is never given away).
    pub fn cost(&self, usage: &Usage) -> Micros {
        let parts = [
            (usage.uncached_input_tokens(), self.input_per_mtok),
            (usage.cached_input_tokens, self.cached_input_per_mtok),
            (usage.output_tokens, self.output_per_mtok),
        ];
        let numerator: u128 = parts
            .iter()
            .map(|(tokens, price)| {
                u128::from(*tokens) * u128::try_from(price.get()).unwrap_or_default()
            })
            .sum();
        let micros = numerator.div_ceil(1_000_000);
        Micros::new(i64::try_from(micros).unwrap_or(i64::MAX)).unwrap_or(Micros::ZERO)
    }

    /// The output ceiling a request gets: what it asked for, never more than the model
    /// can produce.
    pub fn clamp_output(&self, requested: u32) -> u32 {
        requested.min(self.max_output_tokens)
    }

    /// The most a call can cost: `input_tokens` all uncached and the whole output
    /// ceiling used.
    pub fn worst_case(&self, input_tokens: u64, max_output_tokens: u32) -> Micros {
        self.cost(&Usage {
            input_tokens,
            cached_input_tokens: 0,
            output_tokens: u64::from(self.clamp_output(max_output_tokens)),
        })
    }
}

/// Every priced model, under one version label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceBook {
    pub version: String,
    pub models: Vec<ModelPrice>,
}

impl PriceBook {
    /// Finds a model by `provider/model`, or by a bare model name that exactly one
    /// provider offers.
    pub fn lookup(&self, name: &str) -> Option<&ModelPrice> {
        if let Some((provider, model)) = name.split_once('/')
            && let Some(found) = self
                .models
                .iter()
                .find(|p| p.model.provider == provider && p.model.model == model)
        {
            return Some(found);
        }
        let mut bare = self.models.iter().filter(|p| p.model.model == name);
        match (bare.next(), bare.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// The price of an exact `provider/model`.
    pub fn get(&self, model: &ModelRef) -> Option<&ModelPrice> {
        self.models.iter().find(|p| &p.model == model)
    }
}

/// A conservative count of the tokens `text` will take, for the worst-case estimate.
///
/// Real tokenizers average about four characters of English per token; this counts
/// one token per three characters (rounded up) plus one per line, so it errs high for
/// prose and code alike. The reservation only needs an upper bound; the commit uses
/// the provider's own count.
pub fn estimate_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    let lines = text.lines().count() as u64;
    chars.div_ceil(3) + lines
}
