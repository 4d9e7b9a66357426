//! Typed, layered settings: built-in defaults, then an optional TOML file, then
//! `TIDEMARK_SECTION__KEY` environment variables, then command-line flags. Loaded
//! once at start-up, validated, and passed down; nothing reads them globally.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Every setting of the `tidemark` binary.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    /// Where the embedded deployment keeps its SQLite files and dev secret.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub auth: AuthSettings,
    pub query: QuerySettings,
    pub workflows: WorkflowSettings,
    /// PostgreSQL for the event store and read models; absent means SQLite files in
    /// `data_dir` (the embedded default).
    #[serde(default)]
    pub database: DatabaseSettings,
    /// Kafka as the distribution log; absent means components tail the store.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// AI providers, the price book and the generation policy; absent means the
    /// deterministic local provider and its price book.
    #[serde(default)]
    pub ai: AiSettings,
    /// Post delivery: the network of each channel, retries, inbound webhook secrets;
    /// absent means every channel publishes to the `local` network.
    #[serde(default)]
    pub publishing: PublishingSettings,
}

/// The `[publishing]` section: see docs/publishing.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PublishingSettings {
    /// Attempts per delivery, the first included, for failures known transient.
    pub max_attempts: u32,
    /// The ceiling of the first back-off, doubled after each failure.
    pub retry_base_ms: u64,
    /// The back-off ceiling never grows past this (a `Retry-After` may ask for more).
    pub retry_max_ms: u64,
    /// Most deliveries in flight at once.
    pub concurrency: usize,
    /// Longest wait for a connection to a network.
    pub connect_timeout_ms: u64,
    /// Longest wait for a whole exchange with a network; past it the outcome is
    /// unknown and the delivery becomes unconfirmed.
    pub request_timeout_ms: u64,
    /// The network of each configured channel, keyed `"<tenant uuid>/<channel>"`,
    /// with its credentials (`network = "mastodon"` with `base_url` and
    /// `access_token`, or `network = "webhook"` with `url` and `secret`). Their
    /// `Debug` never shows a credential.
    pub channels: std::collections::BTreeMap<String, workflows::networks::ChannelCredentials>,
    /// The secrets inbound webhooks of each network are signed with (several
    /// during a rotation), keyed by the network name in `/v1/webhooks/<network>`.
    pub webhook_secrets: std::collections::BTreeMap<String, Vec<SecretString>>,
}

impl Default for PublishingSettings {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            concurrency: 16,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            channels: Default::default(),
            webhook_secrets: Default::default(),
        }
    }
}

/// The `[ai]` section: see docs/ai.md for every key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AiSettings {
    /// `provider/model` used when a request names no model.
    pub default_model: String,
    /// `provider/model` that non-core work falls back to above the soft limit, and
    /// any generation after its own model failed. Empty: no fallback.
    pub fallback_model: String,
    /// Label recorded with every cost; change it whenever a price changes.
    pub price_version: String,
    /// The price book. Empty: the local provider's two models.
    pub models: Vec<ModelPriceSettings>,
    /// HTTP providers by name (the `provider` of `provider/model`). `local` always
    /// exists.
    pub providers: std::collections::BTreeMap<String, ProviderSettings>,
    /// Per-tenant overrides, keyed by tenant id.
    pub tenants: std::collections::BTreeMap<String, TenantAiSettings>,
    /// How long a generation's reservation is held before it expires by itself.
    pub reservation_ttl_seconds: i64,
    /// Default per-tenant limits of `generate-content`.
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    /// Generations the workflow drives at the same time.
    pub concurrency: usize,
    /// Attempts per model, the first included.
    pub max_attempts: u32,
    /// First back-off ceiling and largest back-off, in milliseconds.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Consecutive retryable failures that open a provider's circuit breaker, and how
    /// long it stays open.
    pub breaker_failures: u32,
    pub breaker_cool_down_ms: u64,
    /// An artificial delay of the local provider (for demos and crash tests).
    pub local_latency_ms: u64,
}

impl Default for AiSettings {
    fn default() -> Self {
        Self {
            default_model: "local/local-large".to_owned(),
            fallback_model: "local/local-small".to_owned(),
            price_version: "local-1".to_owned(),
            models: Vec::new(),
            providers: Default::default(),
            tenants: Default::default(),
            reservation_ttl_seconds: 900,
            requests_per_minute: 1_200,
            tokens_per_minute: 4_000_000,
            concurrency: 32,
            max_attempts: 4,
            retry_base_ms: 500,
            retry_max_ms: 30_000,
            breaker_failures: 5,
            breaker_cool_down_ms: 30_000,
            local_latency_ms: 0,
        }
    }
}

/// One price-book entry.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelPriceSettings {
    pub provider: String,
    pub model: String,
    /// Micro-USD per million uncached input tokens.
    pub input_micros_per_mtok: i64,
    /// Micro-USD per million cached input tokens.
    pub cached_input_micros_per_mtok: i64,
    /// Micro-USD per million output tokens.
    pub output_micros_per_mtok: i64,
    /// The model's output ceiling; requests are clamped to it.
    pub max_output_tokens: u32,
}

/// An HTTP provider.
#[derive(Clone, Deserialize)]
pub struct ProviderSettings {
    /// `openai` (any OpenAI-compatible chat-completions API) or `anthropic`.
    pub kind: String,
    pub base_url: String,
    pub api_key: SecretString,
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
    /// Stream responses (usage from the final chunk).
    #[serde(default)]
    pub stream: bool,
}

fn default_provider_timeout_ms() -> u64 {
    60_000
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("timeout_ms", &self.timeout_ms)
            .field("stream", &self.stream)
            .finish()
    }
}

/// One tenant's overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TenantAiSettings {
    pub fallback_model: Option<String>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

#[derive(Clone, Default, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://…` URL of the role that owns the schema and runs migrations.
    pub url: Option<SecretString>,
    /// `postgres://…` URL of the non-owner runtime role that row-level security
    /// applies to. Required by `tidemark serve`; `tidemark dev` may run as the owner.
    pub app_url: Option<SecretString>,
    /// Writer tasks of the event store per process, 1 to 16; unset: the store's
    /// default (`eventlog::postgres::DEFAULT_WRITERS`, one).
    pub writers: Option<usize>,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |s: &Option<SecretString>| if s.is_some() { "[redacted]" } else { "unset" };
        f.debug_struct("DatabaseSettings")
            .field("url", &shown(&self.url))
            .field("app_url", &shown(&self.app_url))
            .field("writers", &self.writers)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`, e.g. `127.0.0.1:19092`. Unset: no Kafka.
    pub brokers: Option<String>,
    /// The events topic.
    pub topic: String,
    /// Partitions when the relay creates the topic (never change it afterwards).
    pub partitions: i32,
    /// The projectors' group: they share the topic's partitions through leases in the
    /// read-model database, and commit their offsets to Kafka under this group id for
    /// tools.
    pub group: String,
    /// The projector consumer's `fetch.wait.max.ms`: how long the broker may hold a
    /// fetch when it has nothing new. tansu 0.6 holds every fetch this long, records
    /// or not, so it is a floor of the projection lag; lower costs the broker more
    /// fetches when idle. 1 to 10,000.
    pub fetch_wait_ms: u64,
    /// After the first event of a projector batch, how long to wait for more before
    /// applying it. 0 to 1,000.
    pub batch_linger_ms: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: None,
            topic: "tidemark.events".to_owned(),
            partitions: 6,
            group: "tidemark-projector".to_owned(),
            fetch_wait_ms: eventlog::kafka::DEFAULT_FETCH_WAIT_MS,
            batch_linger_ms: eventlog::kafka::DEFAULT_LINGER_MS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Interface to bind; loopback by default.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

#[derive(Clone, Default, Deserialize)]
pub struct AuthSettings {
    /// HS256 secret for bearer tokens. When absent, `tidemark dev` creates one in the
    /// data directory (`jwt-secret`) and `tidemark token` reads it from there.
    pub jwt_secret: Option<SecretString>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.jwt_secret.is_some() {
            "[redacted]"
        } else {
            "unset"
        };
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &shown)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuerySettings {
    /// Longest a query waits for `min_position`, in milliseconds.
    pub consistency_wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowSettings {
    /// How often the timers (scheduled posts, reservation expiry) and the publisher
    /// look for due work, in milliseconds.
    pub tick_ms: u64,
    /// Tenants whose due timers fire at the same time, at most.
    #[serde(default = "default_timer_concurrency")]
    pub timer_concurrency: usize,
}

fn default_timer_concurrency() -> usize {
    8
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder()
            .set_default("http.host", "127.0.0.1")?
            .set_default("http.port", 8080)?
            .set_default("http.max_body_bytes", 64 * 1024)?
            .set_default("data_dir", "./data")?
            .set_default("query.consistency_wait_ms", 5_000)?
            .set_default("workflows.tick_ms", 1_000)?;
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("TIDEMARK")
                    .prefix_separator("_")
                    .separator("__"),
            )
            .build()?
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.http.max_body_bytes >= 1024,
            "http.max_body_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.workflows.tick_ms >= 10,
            "workflows.tick_ms must be at least 10"
        );
        if let Some(writers) = self.database.writers {
            anyhow::ensure!(
                (1..=16).contains(&writers),
                "database.writers must be 1 to 16, not {writers}"
            );
        }
        anyhow::ensure!(
            (1..=10_000).contains(&self.kafka.fetch_wait_ms),
            "kafka.fetch_wait_ms must be 1 to 10000, not {}",
            self.kafka.fetch_wait_ms
        );
        anyhow::ensure!(
            self.kafka.batch_linger_ms <= 1_000,
            "kafka.batch_linger_ms must be 0 to 1000, not {}",
            self.kafka.batch_linger_ms
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_alone_make_valid_settings() {
        let settings = Settings::load(None).expect("defaults load");
        assert_eq!(settings.http.host, "127.0.0.1");
        assert_eq!(settings.http.port, 8080);
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        assert!(settings.auth.jwt_secret.is_none());
        assert!(settings.database.url.is_none(), "SQLite is the default");
        assert!(settings.kafka.brokers.is_none(), "no Kafka by default");
        assert_eq!(settings.kafka.topic, "tidemark.events");
    }

    #[test]
    fn database_urls_never_show_in_debug_output() {
        let settings = DatabaseSettings {
            url: Some(SecretString::from("postgres://owner:hunter2@db/tidemark")),
            app_url: Some(SecretString::from("postgres://app:hunter3@db/tidemark")),
            writers: Some(2),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn a_settings_file_overrides_the_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("tidemark.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/tidemark\"\n[http]\nport = 9000\n[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .expect("write settings");
        let settings = Settings::load(Some(&file)).expect("file loads");
        assert_eq!(settings.http.port, 9000);
        assert_eq!(settings.http.host, "127.0.0.1");
        assert_eq!(settings.data_dir, PathBuf::from("/srv/tidemark"));
        let secret = settings.auth.jwt_secret.as_ref().expect("secret set");
        assert_eq!(secret.expose_secret(), "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let settings = AuthSettings {
            jwt_secret: Some(SecretString::from("super-secret-value-super-secret-value")),
        };
        assert!(!format!("{settings:?}").contains("super-secret"));
    }

    #[test]
    fn publishing_channels_and_webhook_secrets_load_and_never_show_in_debug_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("tidemark.toml");
        std::fs::write(
            &file,
            r#"
[publishing.channels."0193a4b3-0000-7000-8000-000000000001/mastodon"]
network = "mastodon"
base_url = "https://mastodon.example"
access_token = "token-hunter2"

[publishing.webhook_secrets]
mastodon = ["whsec_aHVudGVyMw==", "whsec_aHVudGVyNA=="]
"#,
        )
        .expect("write settings");
        let settings = Settings::load(Some(&file)).expect("file loads");
        assert_eq!(settings.publishing.channels.len(), 1);
        assert_eq!(settings.publishing.webhook_secrets["mastodon"].len(), 2);
        let shown = format!("{:?}", settings.publishing);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("aHVudGVy"), "{shown}");
    }

    #[test]
    fn the_projector_consumer_timings_load_and_out_of_range_ones_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("tidemark.toml");
        let defaults = Settings::load(None).expect("defaults load");
        assert_eq!(defaults.kafka.fetch_wait_ms, 25);
        assert_eq!(defaults.kafka.batch_linger_ms, 10);

        std::fs::write(&file, "[kafka]\nfetch_wait_ms = 20\nbatch_linger_ms = 0\n")
            .expect("write settings");
        let settings = Settings::load(Some(&file)).expect("file loads");
        assert_eq!(settings.kafka.fetch_wait_ms, 20);
        assert_eq!(settings.kafka.batch_linger_ms, 0);

        for (toml, key) in [
            (
                "[kafka]\nfetch_wait_ms = 0\n",
                "kafka.fetch_wait_ms must be 1 to 10000",
            ),
            (
                "[kafka]\nfetch_wait_ms = 10001\n",
                "kafka.fetch_wait_ms must be 1 to 10000",
            ),
            (
                "[kafka]\nbatch_linger_ms = 1001\n",
                "kafka.batch_linger_ms must be 0 to 1000",
            ),
        ] {
            std::fs::write(&file, toml).expect("write settings");
            let error = Settings::load(Some(&file)).expect_err(toml);
            assert!(error.to_string().contains(key), "{error}");
        }
    }

    #[test]
    fn the_event_store_writers_load_and_out_of_range_ones_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("tidemark.toml");
        let defaults = Settings::load(None).expect("defaults load");
        assert_eq!(
            defaults.database.writers, None,
            "unset: the store's default"
        );

        std::fs::write(&file, "[database]\nwriters = 2\n").expect("write settings");
        let settings = Settings::load(Some(&file)).expect("file loads");
        assert_eq!(settings.database.writers, Some(2));

        for toml in ["[database]\nwriters = 0\n", "[database]\nwriters = 17\n"] {
            std::fs::write(&file, toml).expect("write settings");
            let error = Settings::load(Some(&file)).expect_err(toml);
            assert!(
                error
                    .to_string()
                    .contains("database.writers must be 1 to 16"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_invalid_value_is_refused_at_start_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("tidemark.toml");
        std::fs::write(&file, "[http]\nmax_body_bytes = 10\n").expect("write settings");
        let error = Settings::load(Some(&file)).expect_err("too small a body limit");
        assert!(error.to_string().contains("max_body_bytes"), "{error}");
    }
}
