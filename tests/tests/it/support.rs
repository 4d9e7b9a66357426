//! `spawn_app()` and typed helpers shared by every end-to-end test.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use auth::{Authenticator, Role};
use chrono::{DateTime, TimeDelta, Utc};
use cli::app::{Application, Embedded};
use cli::settings::{AuthSettings, HttpSettings, QuerySettings, Settings, WorkflowSettings};
use command_api::Clock;
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::Value;
use tempfile::TempDir;
use uuid::Uuid;

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.0.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// A running application and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub auth: Authenticator,
    pub settings: Settings,
    pub embedded: Embedded,
    pub clock: ManualClock,
    handle: ServerHandle,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
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
        workflows: WorkflowSettings { tick_ms: 50 },
    }
}

/// Starts an application on port 0 with a fresh data directory and a manual clock
/// set to the real current time.
pub async fn spawn_app() -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let settings = test_settings(dir.path().to_path_buf());
    start(settings, Some(dir), ManualClock::new(Utc::now())).await
}

/// Starts an application on an existing data directory (to test restarts).
pub async fn spawn_app_in(data_dir: PathBuf, clock: ManualClock) -> TestApp {
    start(test_settings(data_dir), None, clock).await
}

/// Starts an application with custom settings.
pub async fn spawn_app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = TempDir::new().expect("temp dir");
    let mut settings = test_settings(dir.path().to_path_buf());
    edit(&mut settings);
    start(settings, Some(dir), ManualClock::new(Utc::now())).await
}

async fn start(settings: Settings, dir: Option<TempDir>, clock: ManualClock) -> TestApp {
    let app = Application::build_with_clock(&settings, Arc::new(clock.clone()))
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let embedded = app.embedded().clone();
    let handle = app.server_handle();
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
        embedded,
        clock,
        handle,
        join: Some(join),
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

    /// The number of events in the store (to show a refused request stored nothing).
    pub async fn event_count(&self) -> u64 {
        use eventlog::EventStore;
        self.embedded.store.head().await.expect("head")
    }

    /// Stops the server and the background components and waits for them.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
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
