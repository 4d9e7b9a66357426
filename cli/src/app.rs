//! Wires the components into a running application.
//!
//! [`Application::build`] opens the stores, starts the background components
//! (projector, publisher, generator, timers) and binds the HTTP listener;
//! tests build it on port 0 and drive it over HTTP. [`Application::build_components`]
//! runs any subset, which is what `tidemark serve <component>…` does in production:
//! each component its own process, scaled on its own. `main.rs` does nothing else but
//! load settings, start telemetry and call into this library.

use std::net::TcpListener;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use auth::{Authenticator, Problem};
use clap::ValueEnum;
use command_api::{Clock, CommandApi, CommandService, InboundWebhooks, SystemClock};
use eventlog::EventStore;
use eventlog::postgres::{PostgresOptions, PostgresStore};
use eventlog::sqlite::SqliteStore;
use projector::{Projector, ReadModels};
use query_api::QueryApi;
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use workflows::generation::Generator;
use workflows::publisher::Publisher;
use workflows::timers::Timers;

use crate::settings::Settings;

/// The embedded deployment's SQLite stores.
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

/// The event store and read models of a deployment, whichever database holds them.
#[derive(Clone)]
pub struct Stores {
    pub store: Arc<dyn EventStore>,
    pub models: ReadModels,
}

impl Stores {
    /// PostgreSQL when `database.url` is set (migrations as that owner, runtime as
    /// `database.app_url` when given), else the SQLite files in the data directory.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let Some(owner) = &settings.database.url else {
            let embedded = Embedded::open(settings).await?;
            return Ok(Self {
                store: Arc::new(embedded.store),
                models: embedded.models,
            });
        };
        let owner = owner.expose_secret();
        let app = settings
            .database
            .app_url
            .as_ref()
            .map(|u| u.expose_secret().to_owned());
        let owner_options =
            PgConnectOptions::from_str(owner).context("database.url is not a PostgreSQL URL")?;
        let run_as = match &app {
            Some(app) => PgConnectOptions::from_str(app)
                .context("database.app_url is not a PostgreSQL URL")?,
            None => owner_options.clone(),
        };
        let mut options = PostgresOptions::new(run_as).migrate_as(owner_options);
        if let Some(writers) = settings.database.writers {
            options = options.writers(writers);
        }
        let store = PostgresStore::open(options)
            .await
            .context("failed to open the PostgreSQL event store")?;
        let models = ReadModels::connect_postgres(owner, app.as_deref())
            .await
            .context("failed to open the PostgreSQL read models")?;
        Ok(Self {
            store: Arc::new(store),
            models,
        })
    }
}

/// A part of Tidemark that can run in its own process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Component {
    /// `POST /v1/commands/…`: the only appender.
    CommandApi,
    /// `GET /v1/…`: the read models.
    QueryApi,
    /// Builds the read models (from Kafka when `kafka.brokers` is set, else the store).
    Projector,
    /// Feeds the store's global log to Kafka.
    Relay,
    /// Publisher, generator (AI calls) and timers (scheduled posts, reservation expiry).
    Workflows,
}

impl Component {
    /// Every component: what `tidemark dev` runs.
    pub const ALL: [Component; 4] = [
        Component::CommandApi,
        Component::QueryApi,
        Component::Projector,
        Component::Workflows,
    ];
}

/// A running Tidemark: the HTTP server (if an API component runs) plus background
/// components.
pub struct Application {
    port: Option<u16>,
    server: Option<Server>,
    stores: Stores,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Application {
    /// Builds every component and binds the listener (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with a given clock, so tests can move time.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Self::build_components(settings, &Component::ALL, clock).await
    }

    /// Builds the given components on the stores `settings` name.
    pub async fn build_components(
        settings: &Settings,
        components: &[Component],
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let runs = |c: Component| components.contains(&c);
        let stores = Stores::open(settings).await?;
        let store = stores.store.clone();
        let models = stores.models.clone();
        let policy = crate::ai::policy(&settings.ai)?;
        let service = Arc::new(CommandService::new(store.clone(), clock).with_ai_policy(policy));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tick = Duration::from_millis(settings.workflows.tick_ms);
        let mut tasks = Vec::new();

        if runs(Component::Projector) {
            match &settings.kafka.brokers {
                Some(brokers) => tasks.push(tokio::spawn(crate::kafka::run_projector(
                    brokers.clone(),
                    settings.kafka.clone(),
                    settings
                        .database
                        .app_url
                        .as_ref()
                        .or(settings.database.url.as_ref())
                        .map(|url| url.expose_secret().to_owned()),
                    models.clone(),
                    shutdown_rx.clone(),
                ))),
                None => {
                    // The read models must be current before the workflows that read them start.
                    let projector = Projector::new(store.clone(), models.clone());
                    projector
                        .catch_up()
                        .await
                        .context("failed to catch up the read models")?;
                    tasks.push(tokio::spawn(projector.run(shutdown_rx.clone())));
                }
            }
        }
        if runs(Component::Relay) {
            let brokers = settings
                .kafka
                .brokers
                .clone()
                .context("the relay needs kafka.brokers (TIDEMARK_KAFKA__BROKERS)")?;
            tasks.push(tokio::spawn(crate::kafka::run_relay(
                brokers,
                settings.kafka.clone(),
                store.clone(),
                models.clone(),
                shutdown_rx.clone(),
            )));
        }
        if runs(Component::Workflows) {
            tasks.push(tokio::spawn(
                Publisher {
                    service: service.clone(),
                    models: models.clone(),
                    networks: Arc::new(crate::publishing::networks(&settings.publishing)?),
                    retry: crate::publishing::retry(&settings.publishing),
                    every: tick,
                    concurrency: settings.publishing.concurrency.max(1),
                }
                .run(shutdown_rx.clone()),
            ));
            tasks.push(tokio::spawn(
                Generator {
                    store: store.clone(),
                    service: service.clone(),
                    models: models.clone(),
                    providers: crate::ai::providers(&settings.ai)?,
                    retry: crate::ai::retry(&settings.ai),
                    concurrency: settings.ai.concurrency.max(1),
                }
                .run(shutdown_rx.clone()),
            ));
            tasks.push(tokio::spawn(
                Timers {
                    service: service.clone(),
                    models: models.clone(),
                    every: tick,
                    concurrency: settings.workflows.timer_concurrency.max(1),
                }
                .run(shutdown_rx.clone()),
            ));
        }

        let (port, server) = if runs(Component::CommandApi) || runs(Component::QueryApi) {
            let (port, server) = http_server(settings, components, service, models.clone())?;
            (Some(port), Some(server))
        } else {
            (None, None)
        };
        Ok(Self {
            port,
            server,
            stores,
            shutdown,
            tasks,
        })
    }

    /// The port the HTTP server listens on (0 when this process serves no API).
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(0)
    }

    /// The stores, for operator commands and tests.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// A handle that stops the application gracefully (its HTTP server, or, for a
    /// process without one, its background components).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.as_ref().map(Server::handle),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Runs until stopped (Ctrl-C, SIGTERM or a [`Stopper`]), then stops the
    /// background components and waits for them.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = match self.server {
            Some(server) => server.await.context("the HTTP server failed"),
            None => {
                let mut stopped = self.shutdown.subscribe();
                tokio::select! {
                    signal = shutdown_signal() => signal,
                    _ = stopped.wait_for(|s| *s) => Ok(()),
                }
            }
        };
        self.shutdown.send_replace(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = ?e, "a background component ended abnormally");
            }
        }
        served
    }
}

/// Stops an [`Application`] from outside.
#[derive(Clone)]
pub struct Stopper {
    server: Option<ServerHandle>,
    shutdown: watch::Sender<bool>,
}

impl Stopper {
    /// Stops the HTTP server gracefully (if any) and signals the background components.
    pub async fn stop(&self) {
        if let Some(server) = &self.server {
            server.stop(true).await;
        }
        self.shutdown.send_replace(true);
    }
}

pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to listen for SIGTERM")?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("failed to listen for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

fn http_server(
    settings: &Settings,
    components: &[Component],
    service: Arc<CommandService>,
    models: ReadModels,
) -> anyhow::Result<(u16, Server)> {
    let secret = match &settings.auth.jwt_secret {
        Some(secret) => secret.clone(),
        None => crate::secret::load_or_create(&settings.data_dir)?,
    };
    let authenticator =
        web::Data::new(Authenticator::new(&secret).map_err(|e| anyhow::anyhow!(e))?);
    let query_api = components.contains(&Component::QueryApi).then(|| QueryApi {
        store: service.store().clone(),
        models: models.clone(),
        max_consistency_wait: Duration::from_millis(settings.query.consistency_wait_ms),
    });
    let metrics = web::Data::new(MetricsSource {
        stores: Stores {
            store: service.store().clone(),
            models: models.clone(),
        },
        kafka: settings
            .kafka
            .brokers
            .is_some()
            .then(|| settings.kafka.clone()),
    });
    let inbound = Arc::new(crate::publishing::verifiers(&settings.publishing)?);
    let command_api = components.contains(&Component::CommandApi).then(|| {
        let webhooks = InboundWebhooks {
            service: service.clone(),
            verifiers: inbound,
            max_body_bytes: settings.http.max_body_bytes,
        };
        let api = CommandApi {
            service,
            max_body_bytes: settings.http.max_body_bytes,
        };
        (api, webhooks)
    });

    let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
        .with_context(|| {
            format!(
                "failed to bind {}:{}",
                settings.http.host, settings.http.port
            )
        })?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(authenticator.clone())
            .app_data(metrics.clone());
        if let Some((api, webhooks)) = &command_api {
            app = app
                .configure(command_api::configure(api.clone()))
                .configure(command_api::configure_webhooks(webhooks.clone()));
        }
        if let Some(api) = &query_api {
            app = app.configure(query_api::configure(api.clone()));
        }
        app.route("/openapi.json", web::get().to(openapi))
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(metrics_text))
            .default_service(web::to(not_found))
    })
    .workers(2)
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok((port, server))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

/// What `GET /metrics` reads: the whole deployment's stores, and Kafka's topic when
/// the relay and projectors go through it.
struct MetricsSource {
    stores: Stores,
    kafka: Option<crate::settings::KafkaSettings>,
}

async fn metrics_text(source: web::Data<MetricsSource>) -> HttpResponse {
    match crate::pipeline_positions(&source.stores, source.kafka.as_ref()).await {
        Ok(status) => HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(crate::metrics::render(&status)),
        Err(error) => {
            tracing::error!(error = ?error, "reading the pipeline's positions failed");
            Problem::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "metrics_unavailable",
                "the stores could not be read; see the server log",
            )
            .to_response()
        }
    }
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
