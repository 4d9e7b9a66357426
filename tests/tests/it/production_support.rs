//! The production deployment for end-to-end tests: a fresh PostgreSQL database (with
//! a non-owner runtime role), a fresh Kafka-API broker (tansu) on a free loopback
//! port, and each component as its own `tidemark serve` process, which a test can
//! kill (`kill -9`) and start again. The broker keeps its log in SQLite in the test's
//! directory or, with `TIDEMARK_TEST_KAFKA_STORAGE=postgres` (the test script's last
//! pass), in a PostgreSQL database of its own that `scripts/kafka prepare` makes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cli::settings::Settings;
use eventlog::postgres::testing::{ScratchDatabase, TestDatabase, broker_database_from_env};
use secrecy::ExposeSecret;
use uuid::Uuid;
use workflows::networks::ChannelCredentials;

#[path = "../common/binary.rs"]
mod binary;
use binary::tidemark_binary;

#[path = "../common/kafka_script.rs"]
mod kafka_script;

const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// A process role in the production deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Process {
    /// `tidemark serve command-api query-api`.
    Api,
    Projector,
    /// A second projector in the same group, sharing the partitions.
    SecondProjector,
    Relay,
    Workflows,
}

impl Process {
    fn components(self) -> &'static [&'static str] {
        match self {
            Process::Api => &["command-api", "query-api"],
            Process::Projector | Process::SecondProjector => &["projector"],
            Process::Relay => &["relay"],
            Process::Workflows => &["workflows"],
        }
    }
}

/// A tansu broker on loopback.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    /// tansu's `--storage-engine`.
    storage: String,
    /// The database of a broker on PostgreSQL storage, dropped after the broker stops.
    _database: Option<ScratchDatabase>,
}

impl Broker {
    /// Starts a broker keeping its topics in `dir`, or in a database of its own when
    /// `TIDEMARK_TEST_KAFKA_STORAGE` is `postgres` (so a restart keeps them).
    pub fn start(dir: &Path) -> Self {
        let database = broker_database_from_env();
        let storage = match &database {
            None => format!("sqlite://{}/tansu.db", dir.display()),
            Some(database) => prepare_postgres_storage(database, dir),
        };
        let mut broker = Self {
            child: None,
            port: free_port(),
            storage,
            _database: database,
        };
        broker.restart();
        broker
    }

    /// Starts the broker again on the same port and storage (after [`Broker::kill`]).
    pub fn restart(&mut self) {
        let tansu = std::env::var("TIDEMARK_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/tidemark/tools/bin/tansu")
            });
        assert!(
            tansu.exists(),
            "the Kafka-API broker is not installed at {}: run scripts/kafka install",
            tansu.display()
        );
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&tansu)
            .current_dir("/")
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(["--storage-engine", &self.storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(30));
    }

    /// Kills the broker at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes the database and tansu's tables with `scripts/kafka prepare`, and returns
/// the storage URL it prints.
fn prepare_postgres_storage(database: &ScratchDatabase, dir: &Path) -> String {
    let url = database.url();
    let kafka_dir = dir.join("kafka");
    kafka_script::run_for(
        [
            "prepare".as_ref(),
            "--postgres".as_ref(),
            url.as_ref(),
            "--data-dir".as_ref(),
            kafka_dir.as_os_str(),
        ],
        "TANSU_STORAGE",
    )
}

/// The whole production deployment of one test.
pub struct Deployment {
    pub db: TestDatabase,
    pub broker: Broker,
    env: BTreeMap<String, String>,
    processes: BTreeMap<Process, Child>,
    api_port: u16,
}

impl Deployment {
    /// Creates the database and broker and starts every process.
    pub async fn start(settings: &Settings, dir: &Path) -> Self {
        let db = TestDatabase::create().await;
        let broker = Broker::start(dir);
        let suffix = Uuid::new_v4().simple().to_string();
        let mut env = BTreeMap::new();
        env.insert("TIDEMARK_DATABASE__URL".into(), db.owner_url());
        env.insert("TIDEMARK_DATABASE__APP_URL".into(), db.app_url());
        env.insert("TIDEMARK_AUTH__JWT_SECRET".into(), SECRET.into());
        env.insert("TIDEMARK_KAFKA__BROKERS".into(), broker.address());
        env.insert(
            "TIDEMARK_KAFKA__TOPIC".into(),
            format!("tidemark.events.{suffix}"),
        );
        env.insert("TIDEMARK_KAFKA__PARTITIONS".into(), "4".into());
        env.insert(
            "TIDEMARK_KAFKA__GROUP".into(),
            format!("projector-{suffix}"),
        );
        env.insert("TIDEMARK_DATA_DIR".into(), dir.display().to_string());
        env.insert(
            "TIDEMARK_HTTP__MAX_BODY_BYTES".into(),
            settings.http.max_body_bytes.to_string(),
        );
        env.insert(
            "TIDEMARK_QUERY__CONSISTENCY_WAIT_MS".into(),
            settings.query.consistency_wait_ms.to_string(),
        );
        env.insert(
            "TIDEMARK_WORKFLOWS__TICK_MS".into(),
            settings.workflows.tick_ms.to_string(),
        );
        // The AI policy's scalar settings; the price book and HTTP providers stay at
        // their defaults (the local provider), which the mock-provider tests need
        // in-process.
        let ai = &settings.ai;
        for (key, value) in [
            ("DEFAULT_MODEL", ai.default_model.clone()),
            ("FALLBACK_MODEL", ai.fallback_model.clone()),
            (
                "RESERVATION_TTL_SECONDS",
                ai.reservation_ttl_seconds.to_string(),
            ),
            ("REQUESTS_PER_MINUTE", ai.requests_per_minute.to_string()),
            ("TOKENS_PER_MINUTE", ai.tokens_per_minute.to_string()),
            ("CONCURRENCY", ai.concurrency.to_string()),
            ("LOCAL_LATENCY_MS", ai.local_latency_ms.to_string()),
        ] {
            env.insert(format!("TIDEMARK_AI__{key}"), value);
        }
        // Publishing: the scalar settings as variables; channels and webhook secrets,
        // which are keyed by tenant and channel, in a settings file the processes read
        // through TIDEMARK_CONFIG (the variables still override it).
        let publishing = &settings.publishing;
        for (key, value) in [
            ("MAX_ATTEMPTS", publishing.max_attempts.to_string()),
            ("RETRY_BASE_MS", publishing.retry_base_ms.to_string()),
            ("RETRY_MAX_MS", publishing.retry_max_ms.to_string()),
            ("CONCURRENCY", publishing.concurrency.to_string()),
            (
                "CONNECT_TIMEOUT_MS",
                publishing.connect_timeout_ms.to_string(),
            ),
            (
                "REQUEST_TIMEOUT_MS",
                publishing.request_timeout_ms.to_string(),
            ),
        ] {
            env.insert(format!("TIDEMARK_PUBLISHING__{key}"), value);
        }
        if !publishing.channels.is_empty() || !publishing.webhook_secrets.is_empty() {
            let file = dir.join("publishing.toml");
            std::fs::write(&file, publishing_toml(settings)).expect("write publishing.toml");
            env.insert("TIDEMARK_CONFIG".into(), file.display().to_string());
        }
        env.insert(
            "TIDEMARK_WORKFLOWS__TIMER_CONCURRENCY".into(),
            settings.workflows.timer_concurrency.to_string(),
        );
        env.insert(
            "RUST_LOG".into(),
            std::env::var("TIDEMARK_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let mut deployment = Self {
            db,
            broker,
            env,
            processes: BTreeMap::new(),
            api_port: 0,
        };
        // The relay creates the topic; the projectors join after it exists.
        for process in [
            Process::Api,
            Process::Relay,
            Process::Projector,
            Process::Workflows,
        ] {
            deployment.start_process(process);
        }
        deployment
    }

    /// The events topic of this deployment.
    pub fn topic(&self) -> String {
        self.env
            .get("TIDEMARK_KAFKA__TOPIC")
            .cloned()
            .unwrap_or_default()
    }

    /// The projectors' group of this deployment.
    pub fn group(&self) -> String {
        self.env
            .get("TIDEMARK_KAFKA__GROUP")
            .cloned()
            .unwrap_or_default()
    }

    /// The events topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.env
            .get("TIDEMARK_KAFKA__PARTITIONS")
            .and_then(|p| p.parse().ok())
            .expect("the deployment sets its partition count")
    }

    /// Where the API process listens.
    pub fn api_address(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Starts (or starts again) one process and waits until it says it runs.
    pub fn start_process(&mut self, process: Process) {
        let mut command = Command::new(tidemark_binary());
        command.arg("serve").args(process.components());
        if process == Process::Api {
            let port = if self.api_port == 0 {
                free_port()
            } else {
                self.api_port
            };
            command.args(["--port", &port.to_string()]);
        }
        command
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("tidemark serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("tidemark serve") {
                    tx.send(line).ok();
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{process:?} did not report that it runs within 60 s"));
        if process == Process::Api {
            let port = line
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no port in {line:?}"));
            self.api_port = port;
        }
        self.processes.insert(process, child);
    }

    /// Kills one process with SIGKILL, as a crash would.
    pub fn kill(&mut self, process: Process) {
        if let Some(mut child) = self.processes.remove(&process) {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Runs `tidemark <args>` with this deployment's settings, as an operator on the
    /// same machine would; returns its standard output (and fails on an error exit).
    pub fn run_cli(&self, args: &[&str]) -> String {
        let output = Command::new(tidemark_binary())
            .args(args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .output()
            .expect("tidemark runs");
        assert!(
            output.status.success(),
            "tidemark {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Kills every process with SIGKILL, as a machine losing power would, and starts
    /// them all again on the same database and broker (the API on the same port).
    pub fn restart_all(&mut self) {
        let running: Vec<Process> = self.processes.keys().copied().collect();
        for process in &running {
            self.kill(*process);
        }
        // The relay creates the topic; the projectors read after it exists.
        for process in [
            Process::Api,
            Process::Relay,
            Process::Projector,
            Process::SecondProjector,
            Process::Workflows,
        ] {
            if running.contains(&process) {
                self.start_process(process);
            }
        }
    }

    /// Stops every process gracefully (SIGTERM), then the broker and database.
    pub async fn stop(mut self) {
        tokio::task::yield_now().await;
        for (process, mut child) in std::mem::take(&mut self.processes) {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .ok();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    eprintln!("{process:?} did not stop within 15 s; killing it");
                    child.kill().ok();
                    child.wait().ok();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.broker.kill();
        // Dropping the deployment drops the test database too.
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// The `[publishing]` channels and webhook secrets of `settings` as a TOML settings
/// file (see docs/publishing.md). Strings are written as JSON strings, which TOML
/// reads as the same basic strings.
fn publishing_toml(settings: &Settings) -> String {
    let quote = |text: &str| serde_json::to_string(text).expect("a string serializes");
    let mut toml = String::new();
    for (key, credentials) in &settings.publishing.channels {
        toml.push_str(&format!("[publishing.channels.{}]\n", quote(key)));
        match credentials {
            ChannelCredentials::Mastodon(config) => {
                toml.push_str("network = \"mastodon\"\n");
                toml.push_str(&format!("base_url = {}\n", quote(&config.base_url)));
                let token = config.access_token.expose_secret();
                toml.push_str(&format!("access_token = {}\n", quote(token)));
            }
            ChannelCredentials::Webhook(config) => {
                toml.push_str("network = \"webhook\"\n");
                toml.push_str(&format!("url = {}\n", quote(&config.url)));
                let secret = config.secret.expose_secret();
                toml.push_str(&format!("secret = {}\n", quote(secret)));
            }
        }
        toml.push('\n');
    }
    if !settings.publishing.webhook_secrets.is_empty() {
        toml.push_str("[publishing.webhook_secrets]\n");
        for (network, secrets) in &settings.publishing.webhook_secrets {
            let secrets: Vec<String> = secrets.iter().map(|s| quote(s.expose_secret())).collect();
            toml.push_str(&format!("{} = [{}]\n", quote(network), secrets.join(", ")));
        }
    }
    toml
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
