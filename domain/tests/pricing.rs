//! Golden cost computations: the price book turns provider-neutral usage into
//! micro-USD, cached tokens billed once at the cached price, fractions rounded up.

use domain::Micros;
use domain::pricing::{ModelPrice, ModelRef, PriceBook, Usage, estimate_tokens};

fn micros(v: i64) -> Micros {
    Micros::new(v).expect("non-negative")
}

/// $3 / $0.30 / $15 per million tokens (input / cached input / output).
fn sonnet() -> ModelPrice {
    ModelPrice {
        model: ModelRef::new("anthropic", "claude-sonnet"),
        input_per_mtok: micros(3_000_000),
        cached_input_per_mtok: micros(300_000),
        output_per_mtok: micros(15_000_000),
        max_output_tokens: 8_192,
    }
}

/// $2.50 / $1.25 / $10 per million tokens.
fn gpt4o() -> ModelPrice {
    ModelPrice {
        model: ModelRef::new("openai", "gpt-4o"),
        input_per_mtok: micros(2_500_000),
        cached_input_per_mtok: micros(1_250_000),
        output_per_mtok: micros(10_000_000),
        max_output_tokens: 16_384,
    }
}

fn usage(input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
    }
}

#[test]
fn uncached_call_costs_input_plus_output() {
    // 1,000 × 3,000,000 / 1e6 = 3,000 µ$ of input; 500 × 15,000,000 / 1e6 = 7,500 µ$
    // of output.
    assert_eq!(sonnet().cost(&usage(1_000, 0, 500)), micros(10_500));
}

#[test]
fn cached_tokens_are_billed_once_at_the_cached_price() {
    // OpenAI-style usage: 1,000 input of which 800 cached.
    // 200 × 2.5 + 800 × 1.25 + 100 × 10 = 500 + 1,000 + 1,000 = 2,500 µ$.
    assert_eq!(gpt4o().cost(&usage(1_000, 800, 100)), micros(2_500));
    // Not 1,000 × 2.5 + 800 × 1.25 + 1,000 (that would be 4,500: counted twice).
}

#[test]
fn anthropic_usage_normalised_to_include_cache_reads_is_priced_the_same_way() {
    // Anthropic reports input_tokens = 200 (uncached) and cache_read_input_tokens = 800;
    // the adapter normalises that to input 1,000 of which 800 cached.
    // 200 × 3 + 800 × 0.3 + 50 × 15 = 600 + 240 + 750 = 1,590 µ$.
    assert_eq!(sonnet().cost(&usage(1_000, 800, 50)), micros(1_590));
}

#[test]
fn fractions_of_a_micro_usd_round_up() {
    // 1 token at $3 / Mtok is 3 µ$; 1 token at $0.15 / Mtok is 0.15 µ$ → 1 µ$.
    let cheap = ModelPrice {
        input_per_mtok: micros(150_000),
        ..gpt4o()
    };
    assert_eq!(cheap.cost(&usage(1, 0, 0)), micros(1));
    assert_eq!(cheap.cost(&usage(0, 0, 0)), Micros::ZERO);
}

#[test]
fn the_worst_case_uses_the_clamped_output_ceiling_and_no_cache() {
    let price = sonnet();
    assert_eq!(price.clamp_output(100_000), 8_192);
    // 100 × 3 + 8,192 × 15 = 300 + 122,880 = 123,180 µ$.
    assert_eq!(price.worst_case(100, 100_000), micros(123_180));
    assert_eq!(price.worst_case(100, 10), micros(300 + 150));
}

#[test]
fn huge_usage_saturates_instead_of_wrapping() {
    let cost = sonnet().cost(&usage(u64::MAX, 0, u64::MAX));
    assert_eq!(cost, micros(i64::MAX));
}

#[test]
fn the_book_finds_models_by_full_name_or_unambiguous_bare_name_and_refuses_the_rest() {
    let book = PriceBook {
        version: "2026-11-01".into(),
        models: vec![
            sonnet(),
            gpt4o(),
            ModelPrice {
                model: ModelRef::new("azure", "gpt-4o"),
                ..gpt4o()
            },
        ],
    };
    assert_eq!(
        book.lookup("anthropic/claude-sonnet").map(|p| &p.model),
        Some(&sonnet().model)
    );
    assert_eq!(
        book.lookup("claude-sonnet").map(|p| &p.model),
        Some(&sonnet().model)
    );
    assert_eq!(
        book.lookup("azure/gpt-4o")
            .map(|p| p.model.provider.as_str()),
        Some("azure")
    );
    assert!(book.lookup("gpt-4o").is_none(), "ambiguous bare name");
    assert!(book.lookup("gpt-5-imaginary").is_none(), "unknown model");
    assert!(book.lookup("openai/claude-sonnet").is_none());
}

#[test]
fn the_token_estimate_errs_high() {
    assert_eq!(estimate_tokens(""), 0);
    assert_eq!(estimate_tokens("abc"), 2);
    let prose = "Announce the spring sale: 20% off all plans until the end of March.";
    // A real tokenizer needs about 16 tokens for this sentence.
    assert!(estimate_tokens(prose) >= 20);
}
