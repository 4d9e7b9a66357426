//! The `tidemark` operator binary: `dev`, `token`, `projections status|rebuild`, `bench`.
//!
//! Everything lives in this library so tests can run the same code the binary runs;
//! `main.rs` only parses arguments, starts telemetry and calls [`run`].

pub mod ai;
pub mod app;
pub mod bench;
pub mod kafka;
pub mod metrics;
pub mod openapi;
pub mod publishing;
pub mod secret;
pub mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use auth::{Authenticator, Role};
use chrono::{TimeDelta, Utc};
use clap::{Parser, Subcommand};
use projector::{Projector, READ_MODELS};
use uuid::Uuid;

use crate::app::{Application, Component, Stores};
use crate::settings::Settings;

/// Tidemark: event-sourced core of an AI-powered marketing automation platform.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about)]
pub struct Cli {
    /// A TOML settings file (environment variables TIDEMARK_SECTION__KEY override it).
    #[arg(long, global = true, env = "TIDEMARK_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every component in one process on SQLite, with no outside service.
    Dev {
        /// Port to listen on (127.0.0.1); 0 picks a free one.
        #[arg(long)]
        port: Option<u16>,
        /// Directory for the event store, read models and dev secret.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run some components as one production process, on PostgreSQL (and Kafka).
    ///
    /// For example `tidemark serve command-api query-api` for an API process,
    /// `tidemark serve projector`, `tidemark serve relay`, `tidemark serve workflows`.
    Serve {
        /// The components this process runs.
        #[arg(value_enum, required = true)]
        components: Vec<Component>,
        /// Port for the API components (127.0.0.1 unless http.host says otherwise).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Mint a bearer token the server accepts; printed on the last line.
    Token {
        /// The tenant's UUID.
        #[arg(long)]
        tenant: Uuid,
        /// admin, editor or viewer.
        #[arg(long)]
        role: Role,
        /// Who the token is for (the `sub` claim).
        #[arg(long, default_value = "cli")]
        subject: String,
        /// Hours until the token expires.
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
        /// Data directory holding the dev secret (when no secret is configured).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Measure throughput, latency, projection lag, rebuild rate and decide cost, each
    /// against a baseline measured in the same run (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// Inspect or rebuild the read models.
    Projections {
        #[command(subcommand)]
        action: ProjectionsAction,
        /// Data directory of the embedded deployment.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsAction {
    /// Show how far the read models are behind the event log.
    Status,
    /// Rebuild every read model from the event log, in one transaction.
    Rebuild,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Dev { port, data_dir } => {
            if let Some(port) = port {
                settings.http.port = port;
            }
            if let Some(dir) = data_dir {
                settings.data_dir = dir;
            }
            let app = Application::build(&settings).await?;
            let url = format!("http://{}:{}", settings.http.host, app.port());
            println!("tidemark dev is listening on {url}");
            println!("  data directory: {}", settings.data_dir.display());
            println!("  API document:   {url}/openapi.json");
            println!(
                "  get a token:    tidemark token --data-dir {} --tenant $(cat /proc/sys/kernel/random/uuid) --role admin",
                settings.data_dir.display()
            );
            app.run_until_stopped().await
        }
        Command::Serve { components, port } => {
            if let Some(port) = port {
                settings.http.port = port;
            }
            check_production(&settings, &components)?;
            let app = Application::build_components(
                &settings,
                &components,
                Arc::new(command_api::SystemClock),
            )
            .await?;
            let names: Vec<String> = components.iter().map(|c| format!("{c:?}")).collect();
            match app.port() {
                0 => println!("tidemark serve {} is running", names.join(" ")),
                port => println!(
                    "tidemark serve {} is listening on http://{}:{port}",
                    names.join(" "),
                    settings.http.host
                ),
            }
            app.run_until_stopped().await
        }
        Command::Token {
            tenant,
            role,
            subject,
            ttl_hours,
            data_dir,
        } => {
            if let Some(dir) = data_dir {
                settings.data_dir = dir;
            }
            let secret = match &settings.auth.jwt_secret {
                Some(secret) => secret.clone(),
                None => secret::load_or_create(&settings.data_dir)?,
            };
            let auth = Authenticator::new(&secret).map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(ttl_hours > 0, "--ttl-hours must be positive");
            let token = auth
                .mint(
                    &subject,
                    tenant,
                    &[role],
                    Utc::now(),
                    TimeDelta::hours(ttl_hours),
                )
                .map_err(|e| anyhow::anyhow!("failed to mint a token: {e}"))?;
            eprintln!("token for tenant {tenant}, role {role}, valid {ttl_hours} h:");
            println!("{token}");
            Ok(())
        }
        Command::Bench(args) => bench::run(args, settings).await.map(drop),
        Command::Projections { action, data_dir } => {
            if let Some(dir) = data_dir {
                settings.data_dir = dir;
            }
            let stores = Stores::open(&settings).await?;
            match action {
                ProjectionsAction::Status => projections_status(&stores, &settings).await,
                ProjectionsAction::Rebuild => projections_rebuild(&stores).await,
            }
        }
    }
}

/// How far the read models are behind the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    pub head: u64,
    /// How far the store-tail projector got (the embedded deployment).
    pub position: u64,
    pub rows: Vec<(&'static str, i64)>,
    /// With Kafka: the relay's checkpoint (every event at or below it is in the topic).
    pub relay_checkpoint: Option<u64>,
    /// With Kafka: the highest position the topic projectors applied, over all partitions.
    pub topic_applied: Option<u64>,
}

impl ProjectionStatus {
    /// Events in the log that the read models have not applied yet.
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.position)
    }
}

/// Reads the projection status of a deployment.
pub async fn projection_status(embedded: &Stores) -> anyhow::Result<ProjectionStatus> {
    projection_status_with(embedded, None).await
}

/// [`projection_status`], with the relay and topic projectors' progress when Kafka is
/// configured.
async fn projection_status_with(
    embedded: &Stores,
    kafka: Option<&settings::KafkaSettings>,
) -> anyhow::Result<ProjectionStatus> {
    let mut status = pipeline_positions(embedded, kafka).await?;
    status.rows = embedded.models.row_counts().await?;
    Ok(status)
}

/// The positions of [`ProjectionStatus`] without its row counts (which scan every
/// read-model table): cheap enough for every `GET /metrics`.
pub(crate) async fn pipeline_positions(
    embedded: &Stores,
    kafka: Option<&settings::KafkaSettings>,
) -> anyhow::Result<ProjectionStatus> {
    let models = &embedded.models;
    let (relay_checkpoint, topic_applied) = match kafka {
        Some(kafka) => {
            let relay = models.checkpoint(&format!("kafka:{}", kafka.topic)).await?;
            let mut applied = 0;
            for partition in 0..kafka.partitions {
                let name = projector::kafka::position_checkpoint(&kafka.topic, partition);
                applied = applied.max(models.checkpoint(&name).await?);
            }
            (Some(relay), Some(applied))
        }
        None => (None, None),
    };
    Ok(ProjectionStatus {
        head: embedded
            .store
            .head()
            .await
            .context("failed to read the log head")?,
        position: models.checkpoint(READ_MODELS).await?,
        rows: Vec::new(),
        relay_checkpoint,
        topic_applied,
    })
}

async fn projections_status(embedded: &Stores, settings: &Settings) -> anyhow::Result<()> {
    let kafka = settings.kafka.brokers.is_some().then_some(&settings.kafka);
    let status = projection_status_with(embedded, kafka).await?;
    println!("event log head:        {}", status.head);
    match (status.relay_checkpoint, status.topic_applied) {
        (Some(relay), Some(applied)) => {
            println!("relay checkpoint:      {relay}");
            println!(
                "relay lag (events):    {}",
                status.head.saturating_sub(relay)
            );
            println!("topic projectors at:   {applied} (highest position applied)");
            println!(
                "lag (events):          {}",
                status.head.saturating_sub(applied)
            );
            print_partition_leases(settings).await?;
        }
        _ => {
            println!("read models position:  {}", status.position);
            println!("lag (events):          {}", status.lag());
        }
    }
    for (table, rows) in &status.rows {
        println!("{table:<22} {rows} rows");
    }
    Ok(())
}

/// Which projector session holds which partitions (see docs/production.md).
async fn print_partition_leases(settings: &Settings) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let Some(url) = settings
        .database
        .app_url
        .as_ref()
        .or(settings.database.url.as_ref())
    else {
        println!(
            "partition leases:      none (read models in SQLite: one projector reads every partition)"
        );
        return Ok(());
    };
    let holders = eventlog::kafka::lease_holders(
        url.expose_secret(),
        &settings.kafka.group,
        &settings.kafka.topic,
    )
    .await
    .context("failed to read the partition leases")?;
    let held: std::collections::BTreeSet<i32> = holders.values().flatten().copied().collect();
    let unowned: Vec<i32> = (0..settings.kafka.partitions)
        .filter(|p| !held.contains(p))
        .collect();
    println!("projectors (sessions):  {}", holders.len());
    for (pid, partitions) in &holders {
        println!("  session {pid:<10} partitions {partitions:?}");
    }
    if !unowned.is_empty() {
        println!("partitions nobody reads: {unowned:?}");
    }
    Ok(())
}

async fn projections_rebuild(embedded: &Stores) -> anyhow::Result<()> {
    let projector = Projector::new(embedded.store.clone(), embedded.models.clone());
    let started = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    let applied = projector
        .rebuild(|done, head| {
            if last_report.elapsed().as_millis() >= 500 {
                eprintln!("rebuilding: {done}/{head} events");
                last_report = std::time::Instant::now();
            }
        })
        .await
        .context("failed to rebuild the read models")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt read models from {applied} events in {secs:.2} s ({:.0} events/s)",
        applied as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// A production process refuses to start without what production needs, and says
/// which setting is missing.
fn check_production(settings: &Settings, components: &[Component]) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.database.url.is_some(),
        "tidemark serve needs PostgreSQL: set database.url (TIDEMARK_DATABASE__URL) to the schema owner's URL"
    );
    anyhow::ensure!(
        settings.database.app_url.is_some(),
        "tidemark serve runs as a non-owner role so row-level security applies: set database.app_url (TIDEMARK_DATABASE__APP_URL)"
    );
    let serves_http = components
        .iter()
        .any(|c| matches!(c, Component::CommandApi | Component::QueryApi));
    anyhow::ensure!(
        !serves_http || settings.auth.jwt_secret.is_some(),
        "the API components need the token secret: set auth.jwt_secret (TIDEMARK_AUTH__JWT_SECRET)"
    );
    anyhow::ensure!(
        !components.contains(&Component::Relay) || settings.kafka.brokers.is_some(),
        "the relay needs Kafka: set kafka.brokers (TIDEMARK_KAFKA__BROKERS)"
    );
    Ok(())
}
