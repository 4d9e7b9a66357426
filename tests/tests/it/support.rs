//! `spawn_app()` and typed helpers shared by every end-to-end test.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth::{Authenticator, Role};
use chrono::{DateTime, TimeDelta, Utc};
use cli::app::{Application, Stopper, Stores};
use cli::settings::{AuthSettings, HttpSettings, QuerySettings, Settings, WorkflowSettings};
use command_api::Clock;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::Value;
use tempfile::TempDir;
use uuid::Uuid;

/// A clock the test moves by hand. Against the production deployment (separate
/// processes, which run on the system clock) it reads the real time and cannot move.
#[derive(Clone)]
pub struct ManualClock {
    at: Arc<Mutex<DateTime<Utc>>>,
    movable: bool,
}

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            at: Arc::new(Mutex::new(at)),
            movable: true,
        }
    }

    fn system() -> Self {
        Self {
            at: Arc::new(Mutex::new(Utc::now())),
            movable: false,
        }
    }

    pub fn advance(&self, by: TimeDelta) {
        assert!(
            self.movable,
            "this test moves time, which only the embedded deployment allows"
        );
        let mut now = self.at.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        if self.movable {
            *self.at.lock().expect("clock lock")
        } else {
            Utc::now()
        }
    }
}

/// Which deployment the end-to-end tests drive: `TIDEMARK_TEST_DEPLOYMENT=production`
/// runs them against separate `tidemark serve` processes on PostgreSQL and Kafka;
/// anything else (the default) against the embedded deployment in-process.
pub fn production() -> bool {
    std::env::var("TIDEMARK_TEST_DEPLOYMENT").is_ok_and(|d| d == "production")
}

/// A running application and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub auth: Authenticator,
    pub settings: Settings,
    pub stores: Stores,
    pub clock: ManualClock,
    stopper: Option<Stopper>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The production deployment's processes, broker and database.
    pub production: Option<crate::production_support::Deployment>,
    // Kept so the directory lives as long as the app; `None` when a test passed its own.
    _dir: Option<TempDir>,
}

const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";

/// Settings for a test app in `data_dir`.
pub fn test_settings(data_dir: PathBuf) -> Settings {
    Settings {
        http: HttpSettings {
            host: "127.0.0.1".into(),
            port: 0,
            max_body_bytes: 16 * 1024,
        },
        data_dir,
        auth: AuthSettings {
            jwt_secret: Some(SecretString::from(SECRET)),
        },
        query: QuerySettings {
            consistency_wait_ms: 3_000,
        },
        workflows: WorkflowSettings {
            tick_ms: 50,
            timer_concurrency: 8,
        },
        database: Default::default(),
        kafka: Default::default(),
        ai: Default::default(),
        publishing: Default::default(),
    }
}

/// Starts an application on port 0 with a fresh data directory and a manual clock
/// set to the real current time (or, under `TIDEMARK_TEST_DEPLOYMENT=production`,
/// the production deployment as separate processes).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts an embedded application on an existing data directory (to test restarts).
pub async fn spawn_app_in(data_dir: PathBuf, clock: ManualClock) -> TestApp {
    assert!(
        !production(),
        "restarting on a data directory is an embedded-only test"
    );
    start(test_settings(data_dir), None, clock).await
}

/// Starts an embedded application on an existing data directory with custom settings.
pub async fn spawn_app_in_with(
    data_dir: PathBuf,
    clock: ManualClock,
    edit: impl FnOnce(&mut Settings),
) -> TestApp {
    assert!(
        !production(),
        "restarting on a data directory is an embedded-only test"
    );
    let mut settings = test_settings(data_dir);
    edit(&mut settings);
    start(settings, None, clock).await
}

/// Starts an application with custom settings.
pub async fn spawn_app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(dir.path().to_path_buf());
    edit(&mut settings);
    if production() {
        return spawn_production_app(settings, dir).await;
    }
    start(settings, Some(dir), ManualClock::new(Utc::now())).await
}

/// Starts the production deployment (API, projector, relay and workflows processes on
/// a fresh PostgreSQL database and a fresh Kafka broker), whatever the environment says.
pub async fn spawn_production_app(settings: Settings, dir: TempDir) -> TestApp {
    let deployment = crate::production_support::Deployment::start(&settings, dir.path()).await;
    let mut settings = settings;
    settings.database.url = Some(SecretString::from(deployment.db.owner_url()));
    settings.database.app_url = Some(SecretString::from(deployment.db.app_url()));
    let stores = Stores::open(&settings)
        .await
        .expect("test process opens the stores");
    TestApp {
        address: deployment.api_address(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        auth: Authenticator::new(&SecretString::from(SECRET)).expect("secret"),
        settings,
        stores,
        clock: ManualClock::system(),
        stopper: None,
        join: None,
        production: Some(deployment),
        _dir: Some(dir),
    }
}

async fn start(settings: Settings, dir: Option<TempDir>, clock: ManualClock) -> TestApp {
    let app = Application::build_with_clock(&settings, Arc::new(clock.clone()))
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stores = app.stores().clone();
    let stopper = app.stopper();
    let join = tokio::spawn(app.run_until_stopped());
    let auth = Authenticator::new(&SecretString::from(SECRET)).expect("secret");
    TestApp {
        address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        auth,
        settings,
        stores,
        clock,
        stopper: Some(stopper),
        join: Some(join),
        production: None,
        _dir: dir,
    }
}

impl TestApp {
    /// A token for `tenant` with one role.
    pub fn token(&self, tenant: Uuid, role: Role) -> String {
        self.auth
            .mint("test", tenant, &[role], Utc::now(), TimeDelta::hours(1))
            .expect("mint token")
    }

    /// POSTs a command as JSON.
    pub async fn command(&self, token: &str, name: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/v1/commands/{name}", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a command and expects 200; returns the JSON answer.
    pub async fn ok_command(&self, token: &str, name: &str, body: &Value) -> Value {
        let response = self.command(token, name, body).await;
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::OK, "{name} failed: {text}");
        serde_json::from_str(&text).expect("json answer")
    }

    /// GETs a path (with query string) with a token.
    pub async fn get(&self, token: &str, path_and_query: &str) -> Response {
        self.client
            .get(format!("{}{path_and_query}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// GETs and expects 200; returns the JSON body.
    pub async fn ok_get(&self, token: &str, path_and_query: &str) -> Value {
        let response = self.get(token, path_and_query).await;
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(
            status,
            StatusCode::OK,
            "GET {path_and_query} failed: {text}"
        );
        serde_json::from_str(&text).expect("json body")
    }

    /// GETs `path` every 20 ms until a 200 answer satisfies `done`, for at most
    /// `within` (another status, such as 404 before the read model has a row, keeps
    /// polling); panics with the last answer.
    pub async fn poll_get(
        &self,
        token: &str,
        path: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let response = self.get(token, path).await;
            let ok = response.status() == StatusCode::OK;
            let answer: Value = response.json().await.unwrap_or_default();
            if ok && done(&answer) {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} did not reach the expected state within {within:?}; last answer: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The number of events in the store (to show a refused request stored nothing).
    ///
    /// On PostgreSQL the store's head is gap-safe: it stops below any write
    /// transaction still open in the database, read-model writes included, so it can
    /// trail the events already committed for a moment. A count needs every committed
    /// event, so production counts the rows as the superuser that created the database.
    pub async fn event_count(&self) -> u64 {
        let Some(deployment) = &self.production else {
            return self.stores.store.head().await.expect("head");
        };
        use sqlx::{ConnectOptions, Connection};
        let mut connection = deployment
            .db
            .owner_options()
            .connect()
            .await
            .expect("owner connects");
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut connection)
            .await
            .expect("count events");
        connection.close().await.ok();
        u64::try_from(count).expect("a count is not negative")
    }

    /// Restarts the whole application on its stores: embedded, stops it and starts
    /// it again on its data directory (with the same clock); production, kills every
    /// process (SIGKILL) and starts them again on the same database and broker.
    pub async fn restart(mut self) -> TestApp {
        if let Some(deployment) = self.production.as_mut() {
            deployment.restart_all();
            return self;
        }
        let dir = self._dir.take();
        let (settings, clock) = (self.settings.clone(), self.clock.clone());
        self.stop().await;
        start(settings, dir, clock).await
    }

    /// Stops the server and the background components and waits for them.
    pub async fn stop(mut self) {
        if let Some(deployment) = self.production.take() {
            deployment.stop().await;
            return;
        }
        if let Some(stopper) = &self.stopper {
            stopper.stop().await;
        }
        if let Some(join) = self.join.take() {
            join.await.expect("app task").expect("app stopped cleanly");
        }
    }
}

/// Asserts a problem answer: status, content type and code. Returns the body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type was {content_type}"
    );
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["code"], code, "problem body: {body}");
    assert_eq!(body["status"], status.as_u16(), "problem body: {body}");
    for field in ["type", "title", "detail"] {
        assert!(
            body[field].is_string(),
            "problem body lacks {field}: {body}"
        );
    }
    body
}
