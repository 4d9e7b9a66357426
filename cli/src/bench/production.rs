//! The production target: Tidemark as it runs in production, started and removed by
//! the benchmark itself, and the raw PostgreSQL and Kafka rates it is compared with.
//!
//! A deployment is a fresh PostgreSQL database (migrated, with a non-owner runtime
//! role, made and dropped by `eventlog::postgres::testing::TestDatabase` on the server
//! of `TIDEMARK_TEST_DATABASE_URL`), a fresh topic on a running Kafka-API broker
//! (`scripts/kafka start`; `kafka.brokers`, default `127.0.0.1:9092`; the run's topics
//! are deleted together when it ends, see [`Production::finish`]), and three
//! `tidemark serve` processes of this same binary, configured only through
//! `TIDEMARK_…` environment variables, as the end-to-end suite starts them
//! (`tests/tests/it/production_support.rs`): `command-api query-api` (one process, one
//! port), `relay` (which creates the topic) and `projector`. It is ready once a command
//! written through it shows up in its read models. Stopping sends SIGTERM, waits, then
//! kills; the database is dropped even when the run fails, and the children die with
//! the benchmark (`kill_on_drop`). Everything listens on loopback only.
//!
//! The services are checked before anything starts, and a missing one stops the run
//! with a message that names it and how to start it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use auth::{Authenticator, Role};
use chrono::{TimeDelta, Utc};
use eventlog::postgres::testing::{DATABASE_URL_VAR, DEFAULT_DATABASE_URL, TestDatabase};
use futures::FutureExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::util::Timeout;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::settings::Settings;

use super::baseline;
use super::commands::{Answer, Http};
use super::fixture::{self, FixturePlan};
use super::load::{Progress, Tally};
use super::target::{Deployment, FixtureStore, Target};

/// Where `scripts/kafka start` puts its broker.
const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Partitions of a deployment's topic, as in the end-to-end suite.
const PARTITIONS: i32 = 4;
/// How long a process may take to say it runs.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first command may take to reach the read models (the projector's
/// consumer group must form first).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a service has to answer the check before the run starts.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL, a Kafka-API broker and `tidemark serve` processes.
pub struct Production {
    settings: Settings,
    work_dir: PathBuf,
    brokers: String,
    /// Topics of this run's finished workloads, deleted when the run ends.
    spent_topics: Arc<Mutex<Vec<String>>>,
}

impl Production {
    /// The target for `settings` (only `kafka.brokers`, `http.max_body_bytes`,
    /// `query.consistency_wait_ms` and `workflows.tick_ms` are taken from them),
    /// keeping its files under `work_dir`.
    pub fn new(settings: &Settings, work_dir: &Path) -> Self {
        Self {
            settings: settings.clone(),
            work_dir: work_dir.to_path_buf(),
            brokers: settings
                .kafka
                .brokers
                .clone()
                .unwrap_or_else(|| DEFAULT_BROKERS.to_owned()),
            spent_topics: Arc::default(),
        }
    }

    /// The environment of every child process.
    fn environment(
        &self,
        db: &TestDatabase,
        secret: &SecretString,
        data_dir: &Path,
        suffix: &str,
    ) -> Vec<(String, String)> {
        let settings = &self.settings;
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
        [
            ("TIDEMARK_DATABASE__URL", db.owner_url()),
            ("TIDEMARK_DATABASE__APP_URL", db.app_url()),
            (
                "TIDEMARK_AUTH__JWT_SECRET",
                secret.expose_secret().to_owned(),
            ),
            ("TIDEMARK_KAFKA__BROKERS", self.brokers.clone()),
            ("TIDEMARK_KAFKA__TOPIC", topic_name(suffix)),
            ("TIDEMARK_KAFKA__PARTITIONS", PARTITIONS.to_string()),
            ("TIDEMARK_KAFKA__GROUP", format!("projector-{suffix}")),
            (
                "TIDEMARK_KAFKA__FETCH_WAIT_MS",
                settings.kafka.fetch_wait_ms.to_string(),
            ),
            (
                "TIDEMARK_KAFKA__BATCH_LINGER_MS",
                settings.kafka.batch_linger_ms.to_string(),
            ),
            ("TIDEMARK_DATA_DIR", data_dir.display().to_string()),
            ("TIDEMARK_HTTP__HOST", "127.0.0.1".to_owned()),
            (
                "TIDEMARK_HTTP__MAX_BODY_BYTES",
                settings.http.max_body_bytes.to_string(),
            ),
            (
                "TIDEMARK_QUERY__CONSISTENCY_WAIT_MS",
                settings.query.consistency_wait_ms.to_string(),
            ),
            (
                "TIDEMARK_WORKFLOWS__TICK_MS",
                settings.workflows.tick_ms.to_string(),
            ),
            ("RUST_LOG", log),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        // Unset, the children take the store's own default, as a deployment would.
        .chain(
            settings
                .database
                .writers
                .map(|writers| ("TIDEMARK_DATABASE__WRITERS".to_owned(), writers.to_string())),
        )
        .collect()
    }
}

fn topic_name(suffix: &str) -> String {
    format!("tidemark.bench.events.{suffix}")
}

#[async_trait(?Send)]
impl Target for Production {
    fn name(&self) -> &'static str {
        "production"
    }

    async fn start(&self) -> anyhow::Result<Box<dyn Deployment>> {
        let exe = tidemark_binary()?;
        check_postgres().await?;
        check_kafka(&self.brokers).await?;
        let dir = tempfile::Builder::new()
            .prefix("tidemark-bench-production-")
            .tempdir_in(&self.work_dir)
            .with_context(|| {
                format!(
                    "failed to create a directory in {}",
                    self.work_dir.display()
                )
            })?;
        let secret = crate::secret::load_or_create(dir.path())?;
        let auth = Authenticator::new(&secret).map_err(|e| anyhow::anyhow!(e))?;
        let db = create_database().await?;
        let suffix = Uuid::new_v4().simple().to_string();
        let env = self.environment(&db, &secret, dir.path(), &suffix);
        let mut deployment = ProductionDeployment {
            base_url: String::new(),
            auth,
            children: Vec::new(),
            db: Some(db),
            topic: topic_name(&suffix),
            spent_topics: Arc::clone(&self.spent_topics),
            dir,
        };
        // The relay creates the topic; the projector joins once it exists.
        for components in [
            &["command-api", "query-api"][..],
            &["relay"],
            &["projector"],
        ] {
            deployment.spawn(&exe, components, &env).await?;
        }
        deployment.wait_until_projected().await?;
        Ok(Box::new(deployment))
    }

    fn insert_baseline_case(&self) -> &'static str {
        "postgres insert, 1 row/txn"
    }

    async fn insert_baseline(
        &self,
        concurrency: usize,
        duration: Duration,
        progress: &Progress,
    ) -> anyhow::Result<Tally> {
        check_postgres().await?;
        let db = create_database().await?;
        let tally =
            baseline::postgres_inserts(db.owner_options(), concurrency, duration, progress).await;
        db.drop_database().await;
        tally
    }

    fn has_broker(&self) -> bool {
        true
    }

    async fn produce_baseline(
        &self,
        concurrency: usize,
        duration: Duration,
        progress: &Progress,
    ) -> anyhow::Result<Tally> {
        check_kafka(&self.brokers).await?;
        let topic = format!("tidemark.bench.{}", Uuid::new_v4().simple());
        let tally = baseline::kafka_produce(
            &self.brokers,
            &topic,
            PARTITIONS,
            concurrency,
            duration,
            progress,
        )
        .await;
        spend(&self.spent_topics, topic);
        tally
    }

    /// Deletes the run's topics, all at once. A workload's topic is not deleted when
    /// the workload ends: tansu on PostgreSQL deletes a topic's rows, and until they
    /// are vacuumed the next workload's fetches and produces run beside them. Lag at
    /// 2,500 cmd/s right after a c=64 commands run on the same broker was 334 and 393
    /// ms p99, against a median of 246 on a fresh one (docs/benchmarks.md).
    async fn finish(&self) {
        let topics = std::mem::take(
            &mut *self
                .spent_topics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        delete_topics(&self.brokers, &topics).await;
    }

    /// A fresh database of its own (dropped with the fixture), filled as its owner,
    /// and the store on it as the runtime role, as `tidemark serve` runs it.
    async fn fixture_store(
        &self,
        plan: &FixturePlan,
        progress: &Progress,
    ) -> anyhow::Result<FixtureStore> {
        check_postgres().await?;
        let dir = tempfile::Builder::new()
            .prefix("tidemark-bench-fixture-")
            .tempdir_in(&self.work_dir)
            .with_context(|| {
                format!(
                    "failed to create a directory in {}",
                    self.work_dir.display()
                )
            })?;
        let db = create_database().await?;
        fixture::write_postgres(&db.owner_options(), plan, Some(progress.counters())).await?;
        let store = eventlog::postgres::PostgresStore::connect_with(&db.owner_url(), &db.app_url())
            .await
            .context("failed to open the fixture store")?;
        Ok(FixtureStore::postgres(Arc::new(store), dir, db))
    }
}

/// This binary, which must be `tidemark`: the deployment runs `tidemark serve`.
fn tidemark_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("failed to find this binary")?;
    anyhow::ensure!(
        exe.file_stem().is_some_and(|s| s == "tidemark"),
        "the production target starts `tidemark serve` processes of this binary, but it \
         runs as {}: use `cargo run --release --bin tidemark -- bench … --target production`",
        exe.display()
    );
    Ok(exe)
}

/// The PostgreSQL server that test databases are made on, from the same variable the
/// test suites read.
fn server_options() -> anyhow::Result<(PgConnectOptions, String)> {
    let url = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let options = PgConnectOptions::from_str(&url)
        .with_context(|| format!("{DATABASE_URL_VAR} is not a PostgreSQL URL"))?;
    let shown = format!("{}:{}", options.get_host(), options.get_port());
    Ok((options, shown))
}

/// Fails with a message naming PostgreSQL unless its server answers.
async fn check_postgres() -> anyhow::Result<()> {
    let (options, shown) = server_options()?;
    let hint = format!(
        "the production target needs PostgreSQL, with a role that may create databases \
         and roles, at {DATABASE_URL_VAR} (default {DEFAULT_DATABASE_URL})"
    );
    match tokio::time::timeout(CHECK_TIMEOUT, options.connect()).await {
        Ok(Ok(connection)) => {
            connection.close().await.ok();
            Ok(())
        }
        Ok(Err(error)) => anyhow::bail!("PostgreSQL at {shown} refused: {error}; {hint}"),
        Err(_) => anyhow::bail!(
            "PostgreSQL at {shown} did not answer within {} s; {hint}",
            CHECK_TIMEOUT.as_secs()
        ),
    }
}

/// Fails with a message naming the Kafka-API broker unless one answers at `brokers`.
async fn check_kafka(brokers: &str) -> anyhow::Result<()> {
    let hint = "the production target needs a Kafka-API broker: start one with \
                `scripts/kafka start` (or name yours in TIDEMARK_KAFKA__BROKERS)";
    for address in brokers.split(',').map(str::trim) {
        match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                anyhow::bail!("no Kafka-API broker at {address}: {error}; {hint}")
            }
            Err(_) => anyhow::bail!(
                "the Kafka-API broker at {address} did not answer within {} s; {hint}",
                CHECK_TIMEOUT.as_secs()
            ),
        }
    }
    Ok(())
}

/// A fresh, migrated database with its runtime role. `TestDatabase::create` panics
/// on failure (it is test support); this turns the panic into an error.
async fn create_database() -> anyhow::Result<TestDatabase> {
    std::panic::AssertUnwindSafe(TestDatabase::create())
        .catch_unwind()
        .await
        .map_err(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            anyhow::anyhow!("failed to create a PostgreSQL database: {reason}")
        })
}

/// One started `tidemark serve` process.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A running production deployment; dropping it kills what still runs and drops the
/// database.
struct ProductionDeployment {
    base_url: String,
    auth: Authenticator,
    children: Vec<Process>,
    db: Option<TestDatabase>,
    topic: String,
    /// Where the topic goes when the deployment stops ([`Production::finish`]).
    spent_topics: Arc<Mutex<Vec<String>>>,
    // Holds the processes' logs and data directory; removed last.
    dir: tempfile::TempDir,
}

impl ProductionDeployment {
    /// Starts `tidemark serve <components>` and waits until it says it runs.
    async fn spawn(
        &mut self,
        exe: &Path,
        components: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        let name = components.join(" ");
        let log = self
            .dir
            .path()
            .join(format!("{}.log", components.join("+")));
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("failed to create {}", log.display()))?;
        let mut command = Command::new(exe);
        command.arg("serve").args(components);
        if components.contains(&"command-api") {
            command.args(["--port", "0"]);
        }
        // Only what this deployment sets: no settings of the benchmark's own
        // environment (a real database URL, a config file) may reach the children.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TIDEMARK_") {
                command.env_remove(key);
            }
        }
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start tidemark serve {name}"))?;
        let stdout = child.stdout.take().context("the child's stdout is piped")?;
        self.children.push(Process {
            name: name.clone(),
            child,
            log: log.clone(),
        });

        let mut lines = BufReader::new(stdout).lines();
        let said = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("tidemark serve") {
                    return Ok(Some(line));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let line = match said {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                anyhow::bail!("tidemark serve {name} stopped: {}", log_tail(&log))
            }
            Err(_) => anyhow::bail!(
                "tidemark serve {name} did not say it runs within {} s: {}",
                START_TIMEOUT.as_secs(),
                log_tail(&log)
            ),
        };
        // Keep reading, so the pipe never fills and blocks the child.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if components.contains(&"command-api") {
            let port: u16 = line
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .with_context(|| format!("no port in {line:?}"))?;
            self.base_url = format!("http://127.0.0.1:{port}");
        }
        Ok(())
    }

    /// Writes a post and waits until the query API shows it: the relay, the topic and
    /// the projector's consumer group all work.
    async fn wait_until_projected(&self) -> anyhow::Result<()> {
        let http = Http::new(&self.base_url)?;
        let token = self.token(Uuid::now_v7(), Role::Editor)?;
        let post = Uuid::now_v7();
        let body = json!({"channel": "linkedin", "body": "Readiness probe.", "post_id": post});
        let position = match http.command(&token, "create-post", &body).await {
            Answer::Ok(answer) => answer["position"].as_u64().unwrap_or(0),
            Answer::Refused(status, code) => {
                anyhow::bail!("the production deployment refused a command: {status} {code}")
            }
            Answer::Failed(reason) => {
                anyhow::bail!("the production deployment did not take a command: {reason}")
            }
        };
        let path = format!("/v1/posts/{post}?min_position={position}");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        // Each GET itself waits up to the query API's consistency wait, so this polls
        // only as often as the API gives up.
        let mut every = tokio::time::interval(Duration::from_millis(200));
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            every.tick().await;
            match http.get(&token, &path).await {
                Answer::Ok(_) => return Ok(()),
                Answer::Refused(status, code) => last = format!("{status} {code}"),
                Answer::Failed(reason) => last = reason,
            }
        }
        let logs: Vec<String> = self
            .children
            .iter()
            .map(|p| format!("{}: {}", p.name, log_tail(&p.log)))
            .collect();
        anyhow::bail!(
            "a command did not reach the read models within {} s (last answer: {last}); {}",
            READY_TIMEOUT.as_secs(),
            logs.join("; ")
        )
    }
}

#[async_trait]
impl Deployment for ProductionDeployment {
    fn base_url(&self) -> &str {
        &self.base_url
    }

    fn processes(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.child.id()?)))
            .collect()
    }

    fn token(&self, tenant: Uuid, role: Role) -> anyhow::Result<String> {
        self.auth
            .mint("bench", tenant, &[role], Utc::now(), TimeDelta::hours(12))
            .map_err(|e| anyhow::anyhow!("failed to mint a token: {e}"))
    }

    async fn stop(self: Box<Self>) -> anyhow::Result<()> {
        let mut this = *self;
        let mut unclean = Vec::new();
        // The API first, so nothing new arrives while the others finish.
        for mut process in std::mem::take(&mut this.children) {
            if !terminate(&mut process.child).await {
                unclean.push(process.name.clone());
            }
        }
        if let Some(db) = this.db.take() {
            // Dropping a `TestDatabase` drops the database, on a thread of its own.
            tokio::task::spawn_blocking(move || drop(db)).await.ok();
        }
        spend(&this.spent_topics, std::mem::take(&mut this.topic));
        anyhow::ensure!(
            unclean.is_empty(),
            "tidemark serve {} did not stop within {} s of SIGTERM and was killed",
            unclean.join(", "),
            STOP_TIMEOUT.as_secs()
        );
        Ok(())
    }
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. True when the process stopped by itself.
async fn terminate(child: &mut Child) -> bool {
    let Some(pid) = child.id() else {
        // It already ended and was reaped.
        return true;
    };
    let signalled = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .is_ok_and(|s| s.success());
    if signalled
        && tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_ok()
    {
        return true;
    }
    child.kill().await.ok();
    false
}

/// Keeps a finished workload's topic for [`Production::finish`].
fn spend(spent: &Mutex<Vec<String>>, topic: String) {
    spent
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(topic);
}

/// Best effort: a topic left on a broker for tests harms nothing.
async fn delete_topics(brokers: &str, topics: &[String]) {
    if topics.is_empty() {
        return;
    }
    let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    let Ok(admin) = admin else {
        return;
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(CHECK_TIMEOUT)));
    if let Err(error) = admin.delete_topics(&names, &options).await {
        tracing::warn!(%error, ?topics, "failed to delete the run's topics");
    }
}

/// The last lines of a process's log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join(" | ");
    if tail.is_empty() {
        format!("its log {} is empty", log.display())
    } else {
        format!("last lines of its log: {tail}")
    }
}
