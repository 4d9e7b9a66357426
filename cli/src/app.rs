//! Wires the components into one running application.
//!
//! [`Application::build`] opens the stores, starts the background components
//! (projector, publisher, scheduler, reservation expiry) and binds the HTTP listener;
//! tests build it on port 0 and drive it over HTTP. `main.rs` does nothing else but
//! load settings, start telemetry and call this.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use auth::{Authenticator, Problem};
use command_api::{Clock, CommandApi, CommandService, SystemClock};
use eventlog::EventStore;
use eventlog::sqlite::SqliteStore;
use projector::{Projector, ReadModels};
use query_api::QueryApi;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use workflows::expiry::ReservationExpiry;
use workflows::network::LocalNetwork;
use workflows::publisher::Publisher;
use workflows::scheduler::Scheduler;

use crate::settings::Settings;

/// The embedded deployment's stores.
#[derive(Clone)]
pub struct Embedded {
    pub store: SqliteStore,
    pub models: ReadModels,
}

impl Embedded {
    /// Opens (creating if needed) the SQLite event store and read models in `settings.data_dir`.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let dir = &settings.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let store = SqliteStore::open(&dir.join("events.db"))
            .await
            .context("failed to open the event store")?;
        let models = ReadModels::open(&dir.join("read_models.db"))
            .await
            .context("failed to open the read models")?;
        Ok(Self { store, models })
    }
}

/// A running Tidemark: HTTP server plus background components.
pub struct Application {
    port: u16,
    server: Server,
    embedded: Embedded,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Application {
    /// Builds everything and binds the listener (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with a given clock, so tests can move time.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let embedded = Embedded::open(settings).await?;
        let secret = match &settings.auth.jwt_secret {
            Some(secret) => secret.clone(),
            None => crate::secret::load_or_create(&settings.data_dir)?,
        };
        let authenticator = Authenticator::new(&secret).map_err(|e| anyhow::anyhow!(e))?;
        let store: Arc<dyn EventStore> = Arc::new(embedded.store.clone());
        let service = Arc::new(CommandService::new(store.clone(), clock));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tick = Duration::from_millis(settings.workflows.tick_ms);

        // The read models must be current before the workflows that read them start.
        let projector = Projector::new(store.clone(), embedded.models.clone());
        projector
            .catch_up()
            .await
            .context("failed to catch up the read models")?;
        let tasks = vec![
            tokio::spawn(projector.run(shutdown_rx.clone())),
            tokio::spawn(
                Publisher {
                    store: store.clone(),
                    service: service.clone(),
                    models: embedded.models.clone(),
                    network: Arc::new(LocalNetwork),
                }
                .run(shutdown_rx.clone()),
            ),
            tokio::spawn(
                Scheduler {
                    service: service.clone(),
                    models: embedded.models.clone(),
                    every: tick,
                }
                .run(shutdown_rx.clone()),
            ),
            tokio::spawn(
                ReservationExpiry {
                    service: service.clone(),
                    models: embedded.models.clone(),
                    every: tick,
                }
                .run(shutdown_rx.clone()),
            ),
        ];

        let command_api = CommandApi {
            service,
            max_body_bytes: settings.http.max_body_bytes,
        };
        let query_api = QueryApi {
            models: embedded.models.clone(),
            max_consistency_wait: Duration::from_millis(settings.query.consistency_wait_ms),
        };
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| {
                format!(
                    "failed to bind {}:{}",
                    settings.http.host, settings.http.port
                )
            })?;
        let port = listener.local_addr()?.port();
        let authenticator = web::Data::new(authenticator);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(tracing_actix_web::TracingLogger::default())
                .app_data(authenticator.clone())
                .configure(command_api::configure(command_api.clone()))
                .configure(query_api::configure(query_api.clone()))
                .route("/openapi.json", web::get().to(openapi))
                .route("/health", web::get().to(health))
                .default_service(web::to(not_found))
        })
        .workers(2)
        .shutdown_timeout(10)
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            embedded,
            shutdown,
            tasks,
        })
    }

    /// The port the HTTP server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The stores, for operator commands and tests.
    pub fn embedded(&self) -> &Embedded {
        &self.embedded
    }

    /// A handle that stops the HTTP server gracefully.
    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (Ctrl-C, SIGTERM or a handle), then stops the
    /// background components and waits for them.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.shutdown.send_replace(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = ?e, "a background component ended abnormally");
            }
        }
        served.context("the HTTP server failed")
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    Problem::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.path()),
    )
    .to_response()
}
