//! What the benchmark runs against: the embedded deployment (everything in this
//! process on SQLite), or the production path (see `production`: PostgreSQL, a
//! Kafka-API broker, each component its own `tidemark serve` process).
//!
//! The workloads that go over HTTP (commands, projection lag) only need a base URL and
//! a way to mint tokens, so they take any [`Deployment`]. What depends on the storage
//! (the raw-insert baseline, the raw produce baseline, the stores that rebuild and
//! decide-vs-history fill with fixture events) sits behind [`Target`]. The load
//! generator, the workloads and the report are the same for both.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use auth::{Authenticator, Role};
use chrono::{TimeDelta, Utc};
use clap::ValueEnum;
use eventlog::EventStore;
use eventlog::sqlite::SqliteStore;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::app::{Application, Stopper};
use crate::settings::Settings;

use super::baseline;
use super::fixture::{self, FixturePlan};
use super::load::{Progress, Tally, Window};
use super::production::Production;

/// Which deployment to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// Everything in this process on SQLite (`tidemark dev`).
    Embedded,
    /// `tidemark serve` processes of this binary on a fresh PostgreSQL database and a
    /// running Kafka-API broker (`scripts/kafka start`), started and removed by the run.
    Production,
}

/// A running Tidemark the HTTP workloads can talk to.
#[async_trait]
pub trait Deployment: Send + Sync {
    /// `http://host:port`, without a trailing slash.
    fn base_url(&self) -> &str;
    /// A bearer token for `tenant` with `role`.
    fn token(&self, tenant: Uuid, role: Role) -> anyhow::Result<String>;
    /// Stops the deployment and waits for it.
    async fn stop(self: Box<Self>) -> anyhow::Result<()>;
    /// Its processes other than the benchmark's own, by name and pid, for the CPU
    /// note of a workload. None for the embedded deployment, which runs inside it.
    fn processes(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
}

/// The storage-dependent half of the benchmark.
///
/// Its futures need not be `Send`: the workloads await them on the benchmark's own
/// task, and building an application is not provably `Send` for every lifetime.
#[async_trait(?Send)]
pub trait Target: Send + Sync {
    /// `embedded` or `production`.
    fn name(&self) -> &'static str;

    /// Starts a fresh deployment (empty stores) on a free port.
    async fn start(&self) -> anyhow::Result<Box<dyn Deployment>>;

    /// What [`Target::insert_baseline`] measures, for the report
    /// (`sqlite insert, 1 row/txn`).
    fn insert_baseline_case(&self) -> &'static str;

    /// The raw insert rate of event rows into the store's own table shape, one row per
    /// transaction, from `concurrency` workers: the baseline of the command figures.
    /// It runs for `duration` from when its set-up is done (series `insert`).
    async fn insert_baseline(
        &self,
        concurrency: usize,
        duration: Duration,
        progress: &Progress,
    ) -> anyhow::Result<Tally>;

    /// Whether events travel through a broker, which [`Target::produce_baseline`]
    /// then measures.
    fn has_broker(&self) -> bool {
        false
    }

    /// The raw rate at which the log's broker takes event messages, from
    /// `concurrency` workers, for `duration` from when its set-up is done (series
    /// `produce`).
    async fn produce_baseline(
        &self,
        concurrency: usize,
        duration: Duration,
        progress: &Progress,
    ) -> anyhow::Result<Tally> {
        let _ = (concurrency, duration, progress);
        anyhow::bail!("the {} target has no broker", self.name())
    }

    /// A store filled with the fixture events of `plan`, and where it lives.
    async fn fixture_store(
        &self,
        plan: &FixturePlan,
        progress: &Progress,
    ) -> anyhow::Result<FixtureStore>;

    /// Removes what the target keeps until the end of the run (the production target's
    /// Kafka topics). Best effort.
    async fn finish(&self) {}
}

/// A store holding fixture events.
pub struct FixtureStore {
    /// The store, open.
    pub store: Arc<dyn EventStore>,
    /// A data directory for a deployment on it: the embedded deployment's, holding the
    /// SQLite files (for a rebuild in a child process).
    pub data_dir: PathBuf,
    /// On PostgreSQL: the owner's and the runtime role's URLs of the database holding
    /// the fixture, which a rebuild connects with (its read models go there too).
    pub database: Option<(String, String)>,
    // Removes the files once the measurements are done.
    _dir: tempfile::TempDir,
    // Drops the PostgreSQL database once the measurements are done.
    _db: Option<eventlog::postgres::testing::TestDatabase>,
}

impl FixtureStore {
    /// A fixture in a PostgreSQL database, which is dropped with this value.
    pub(super) fn postgres(
        store: Arc<dyn EventStore>,
        dir: tempfile::TempDir,
        db: eventlog::postgres::testing::TestDatabase,
    ) -> Self {
        Self {
            store,
            data_dir: dir.path().to_path_buf(),
            database: Some((db.owner_url(), db.app_url())),
            _dir: dir,
            _db: Some(db),
        }
    }
}

/// The target for a `--target` choice.
pub fn target(
    kind: TargetKind,
    settings: &Settings,
    work_dir: &Path,
) -> anyhow::Result<Box<dyn Target>> {
    match kind {
        TargetKind::Embedded => Ok(Box::new(Embedded {
            settings: settings.clone(),
            work_dir: work_dir.to_path_buf(),
        })),
        TargetKind::Production => Ok(Box::new(Production::new(settings, work_dir))),
    }
}

/// The embedded deployment: [`Application`] in this process, SQLite files in a fresh
/// temporary directory under `work_dir`.
pub struct Embedded {
    settings: Settings,
    work_dir: PathBuf,
}

impl Embedded {
    fn temp_dir(&self, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&self.work_dir)
            .with_context(|| {
                format!(
                    "failed to create a directory in {}",
                    self.work_dir.display()
                )
            })
    }
}

#[async_trait(?Send)]
impl Target for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn start(&self) -> anyhow::Result<Box<dyn Deployment>> {
        let dir = self.temp_dir("tidemark-bench-app-")?;
        let mut settings = self.settings.clone();
        // Loopback only: the benchmark never sends traffic anywhere else.
        settings.http.host = "127.0.0.1".to_owned();
        settings.http.port = 0;
        settings.data_dir = dir.path().to_path_buf();
        // Embedded means SQLite files and no Kafka, whatever the environment configures.
        settings.database = Default::default();
        settings.kafka = Default::default();
        let secret = match &settings.auth.jwt_secret {
            Some(secret) => secret.clone(),
            None => crate::secret::load_or_create(&settings.data_dir)?,
        };
        settings.auth.jwt_secret = Some(secret.clone());
        let auth = Authenticator::new(&secret).map_err(|e| anyhow::anyhow!(e))?;
        let app = Application::build(&settings).await?;
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let stopper = app.stopper();
        let join = tokio::spawn(app.run_until_stopped());
        Ok(Box::new(EmbeddedDeployment {
            base_url,
            auth,
            stopper,
            join,
            _dir: dir,
        }))
    }

    fn insert_baseline_case(&self) -> &'static str {
        "sqlite insert, 1 row/txn"
    }

    async fn insert_baseline(
        &self,
        concurrency: usize,
        duration: Duration,
        progress: &Progress,
    ) -> anyhow::Result<Tally> {
        let dir = self.temp_dir("tidemark-bench-baseline-")?;
        let path = dir.path().join("baseline.db");
        // The store's own migrations make the table, so the shape is exactly the store's.
        drop(
            SqliteStore::open(&path)
                .await
                .context("failed to create the baseline database")?,
        );
        let window = Window::starting_now(duration);
        baseline::sqlite_inserts(&path, concurrency, window, progress).await
    }

    async fn fixture_store(
        &self,
        plan: &FixturePlan,
        progress: &Progress,
    ) -> anyhow::Result<FixtureStore> {
        let dir = self.temp_dir("tidemark-bench-fixture-")?;
        let data_dir = dir.path().to_path_buf();
        let path = data_dir.join("events.db");
        drop(
            SqliteStore::open(&path)
                .await
                .context("failed to create the fixture store")?,
        );
        fixture::write_sqlite(&path, plan, Some(progress.counters())).await?;
        let store = SqliteStore::open(&path)
            .await
            .context("failed to open the fixture store")?;
        Ok(FixtureStore {
            store: Arc::new(store),
            data_dir,
            database: None,
            _dir: dir,
            _db: None,
        })
    }
}

struct EmbeddedDeployment {
    base_url: String,
    auth: Authenticator,
    stopper: Stopper,
    join: JoinHandle<anyhow::Result<()>>,
    // Removed when the deployment is dropped, after it stopped.
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Deployment for EmbeddedDeployment {
    fn base_url(&self) -> &str {
        &self.base_url
    }

    fn token(&self, tenant: Uuid, role: Role) -> anyhow::Result<String> {
        self.auth
            .mint("bench", tenant, &[role], Utc::now(), TimeDelta::hours(12))
            .map_err(|e| anyhow::anyhow!("failed to mint a token: {e}"))
    }

    async fn stop(self: Box<Self>) -> anyhow::Result<()> {
        let this = *self;
        this.stopper.stop().await;
        this.join
            .await
            .context("the application task ended abnormally")?
            .context("the application stopped with an error")
    }
}
