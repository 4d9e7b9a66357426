//! What every PostgreSQL read-model test needs: a database of its own, an event log
//! with a bit of everything in it, and a snapshot of every query's answers, so two
//! read-model databases can be compared with one `assert_eq!`.
//!
//! Each test gets a fresh database `tidemark_rm_<uuid>` on the server named by
//! `TIDEMARK_TEST_DATABASE_URL` (default: the machine's own, as `postgres`, trust
//! auth), owned by a fresh non-superuser login role that runs the migrations, and a
//! second login role for the runtime — so row-level security applies to the
//! queries exactly as in production. Both go again at the end, even after a panic.

#![allow(dead_code)]

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use command_api::{Clock, CommandService, Envelope, GenerateRequest};
use domain::budget;
use domain::generation::{self, AttemptCost, AttemptReason, Priority};
use domain::post::{self, PublishTrigger};
use domain::pricing::{ModelRef, Usage};
use domain::{CampaignId, Channel, GenerationId, Micros, Period, PostId, ReservationId, TenantId};
use eventlog::sqlite::SqliteStore;
use eventlog::{EventStore, Position};
use projector::{
    BudgetView, DueTimer, GenerationView, OpenDelivery, PostFilter, PostPage, PostView,
    READ_MODELS, ReadModels, ReservationStatus, ReservationView, TimerCursor, UsageGroup, UsageRow,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

/// The environment variable naming the PostgreSQL server the tests use.
pub const DATABASE_URL_VAR: &str = "TIDEMARK_TEST_DATABASE_URL";

/// The server used when [`DATABASE_URL_VAR`] is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Longest any one test may run; a lock that is never released fails the test
/// instead of hanging the suite.
const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Runs a test body, failing it if it takes longer than [`TEST_TIME_LIMIT`].
pub async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_TIME_LIMIT, body)
        .await
        .expect("the test did not finish within its time limit")
}

/// A database of one test's own, with an owner role and a runtime role.
pub struct TestDatabase {
    server: PgConnectOptions,
    name: String,
    owner_role: String,
    app_role: String,
    password: String,
    /// Further roles a test made; dropped with the database.
    extra_roles: Mutex<Vec<String>>,
    removed: bool,
}

impl TestDatabase {
    /// Creates the roles and the (empty) database. The read models are migrated by the
    /// first [`ReadModels::connect_postgres`].
    pub async fn create() -> Self {
        let url =
            std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let server = PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} is not a PostgreSQL URL: {e}"));
        let id = Uuid::new_v4().simple();
        let db = Self {
            server,
            name: format!("tidemark_rm_{id}"),
            owner_role: format!("tidemark_rm_{id}_owner"),
            app_role: format!("tidemark_rm_{id}_app"),
            password: Uuid::new_v4().simple().to_string(),
            extra_roles: Mutex::new(Vec::new()),
            removed: false,
        };
        // Names and password are letters, digits and underscores only: no quoting needed.
        db.admin(&[
            format!(
                "CREATE ROLE {} LOGIN PASSWORD '{}' NOSUPERUSER NOBYPASSRLS NOCREATEROLE",
                db.owner_role, db.password
            ),
            format!(
                "CREATE ROLE {} LOGIN PASSWORD '{}' NOSUPERUSER NOBYPASSRLS NOCREATEROLE",
                db.app_role, db.password
            ),
            format!("CREATE DATABASE {} OWNER {}", db.name, db.owner_role),
        ])
        .await;
        db
    }

    /// Runs statements on the server as its administrator.
    pub async fn admin(&self, statements: &[String]) {
        let mut admin = self.server.connect().await.unwrap_or_else(|e| {
            panic!("cannot connect to the test server ({DATABASE_URL_VAR}): {e}")
        });
        for sql in statements {
            sqlx::raw_sql(sql)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
        }
        admin.close().await.ok();
    }

    /// Creates one more login role (`tidemark_rm_<uuid>_<suffix>`) with `attributes`,
    /// dropped with the database. Returns its name.
    pub async fn create_role(&self, suffix: &str, attributes: &str) -> String {
        let role = format!("{}_{suffix}", self.name);
        self.admin(&[format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{}' {attributes}",
            self.password
        )])
        .await;
        self.extra_roles
            .lock()
            .expect("role list")
            .push(role.clone());
        role
    }

    /// The owner's name: the role that migrates and owns the read models.
    pub fn owner_role(&self) -> &str {
        &self.owner_role
    }

    /// The runtime role's name.
    pub fn app_role(&self) -> &str {
        &self.app_role
    }

    /// The URL of this database as `role`.
    pub fn url_as(&self, role: &str) -> String {
        let host = self.server.get_host();
        let port = self.server.get_port();
        match self.server.get_socket() {
            Some(socket) => format!(
                "postgres://{role}:{}@localhost:{port}/{}?host={}",
                self.password,
                self.name,
                socket.display()
            ),
            None => format!(
                "postgres://{role}:{}@{host}:{port}/{}",
                self.password, self.name
            ),
        }
    }

    /// The URL of this database as the owner, who runs the migrations.
    pub fn owner_url(&self) -> String {
        self.url_as(&self.owner_role)
    }

    /// The URL of this database as the runtime role.
    pub fn app_url(&self) -> String {
        self.url_as(&self.app_role)
    }

    /// Read models as production runs them: migrated by the owner, queried as the
    /// runtime role.
    pub async fn models(&self) -> ReadModels {
        ReadModels::connect_postgres(&self.owner_url(), Some(&self.app_url()))
            .await
            .unwrap_or_else(|e| panic!("connecting the read models to {} failed: {e:?}", self.name))
    }

    /// A plain connection as `role`, for raw SQL.
    pub async fn connect_as(&self, role: &str) -> PgConnection {
        PgConnection::connect(&self.url_as(role))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {} as {role}: {e}", self.name))
    }

    /// Drops the database (ending every connection to it) and the roles.
    pub async fn drop_database(mut self) {
        self.removed = true;
        remove(self.server.clone(), self.name.clone(), self.roles()).await;
    }

    fn roles(&self) -> Vec<String> {
        let mut roles = vec![self.app_role.clone(), self.owner_role.clone()];
        roles.extend(
            self.extra_roles
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        roles
    }
}

impl Drop for TestDatabase {
    /// Cleans up after a test that did not reach [`TestDatabase::drop_database`]
    /// (it panicked). `Drop` cannot await, so a thread with its own runtime does it.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (server, name, roles) = (self.server.clone(), self.name.clone(), self.roles());
        let cleanup =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(remove(server, name, roles)),
                    Err(error) => {
                        eprintln!("cannot start a runtime to drop a test database: {error}")
                    }
                }
            });
        if cleanup.join().is_err() {
            eprintln!("dropping test database {} panicked", self.name);
        }
    }
}

/// Best effort: a leftover database or role is reported, never fatal.
async fn remove(server: PgConnectOptions, name: String, roles: Vec<String>) {
    let mut admin = match server.connect().await {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("cannot connect to drop test database {name}: {error}");
            return;
        }
    };
    let mut statements = vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")];
    statements.extend(
        roles
            .iter()
            .map(|role| format!("DROP ROLE IF EXISTS {role}")),
    );
    for sql in statements {
        if let Err(error) = sqlx::raw_sql(&sql).execute(&mut admin).await {
            eprintln!("test cleanup `{sql}` failed: {error}");
        }
    }
    admin.close().await.ok();
}

/// A clock the log builder moves by hand.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }

    fn advance(&self, by: TimeDelta) {
        *self.0.lock().expect("clock lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// `YYYY-MM-DD HH:MM` UTC.
pub fn at(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, 0)
        .single()
        .expect("a valid time")
}

fn period(year: i32, month: u32) -> Period {
    Period::new(year, month).expect("a valid month")
}

fn micros(value: i64) -> Micros {
    Micros::new(value).expect("a valid amount")
}

/// An event log in a SQLite store, written through the command side, with budgets,
/// reservations and posts of three tenants in every state the read models know.
pub struct Log {
    _dir: TempDir,
    pub store: Arc<dyn EventStore>,
    service: CommandService,
    clock: ManualClock,
    /// Has a budget in February and March, and posts in every state.
    pub tenant_a: TenantId,
    /// Has a budget in March only, and a few posts.
    pub tenant_b: TenantId,
    /// Has no budget; one post scheduled far ahead.
    pub tenant_c: TenantId,
    /// Has nothing at all.
    pub stranger: TenantId,
    pub campaign_x: CampaignId,
    pub campaign_y: CampaignId,
    /// Every post, with its tenant.
    pub posts: Vec<(TenantId, PostId)>,
    /// Every generation, with its tenant.
    pub generations: Vec<(TenantId, GenerationId)>,
}

impl Log {
    /// An empty log (the clock on 2026-02-20 09:00 UTC).
    pub async fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("events.db"))
            .await
            .expect("open the event store");
        let store: Arc<dyn EventStore> = Arc::new(store);
        let clock = ManualClock::new(at(2026, 2, 20, 9, 0));
        let service = CommandService::new(store.clone(), Arc::new(clock.clone()));
        Self {
            _dir: dir,
            store,
            service,
            clock,
            tenant_a: TenantId::from_uuid(Uuid::new_v4()),
            tenant_b: TenantId::from_uuid(Uuid::new_v4()),
            tenant_c: TenantId::from_uuid(Uuid::new_v4()),
            stranger: TenantId::from_uuid(Uuid::new_v4()),
            campaign_x: CampaignId::from_uuid(Uuid::new_v4()),
            campaign_y: CampaignId::from_uuid(Uuid::new_v4()),
            posts: Vec::new(),
            generations: Vec::new(),
        }
    }

    /// The log with both phases written.
    pub async fn full() -> Self {
        let mut log = Self::new().await;
        log.phase_one().await;
        log.phase_two().await;
        log
    }

    /// February: tenant A's ledger (commit with overrun, a threshold crossed, release,
    /// expiry, open holds) and posts in every state.
    pub async fn phase_one(&mut self) {
        let a = self.tenant_a;
        self.clock.set(at(2026, 2, 20, 9, 0));
        self.budget(
            a,
            None,
            budget::Command::SetLimits {
                soft: micros(6_000_000),
                hard: micros(10_000_000),
                alert_thresholds_pct: vec![50, 80],
            },
        )
        .await;
        let r1 = self.reserve(a, 2_000_000, "draft post", 60).await;
        self.commit(a, r1, 2_500_000).await; // costs more than held: an overrun
        let r2 = self.reserve(a, 3_000_000, "image", 60).await;
        self.commit(a, r2, 3_000_000).await; // 55% committed: the 50% alert
        let r3 = self.reserve(a, 1_000_000, "caption", 120).await;
        self.budget(a, None, budget::Command::Release { reservation_id: r3 })
            .await;
        let _r4 = self.reserve(a, 500_000, "expires soon", 1).await;
        self.clock.advance(TimeDelta::minutes(2));
        self.budget(a, None, budget::Command::ExpireDue).await;
        let _r5 = self.reserve(a, 400_000, "open, due in an hour", 60).await;
        let _r6 = self
            .reserve(a, 300_000, "open for a week", 7 * 24 * 60)
            .await;

        let linkedin = Channel::new("linkedin").expect("channel");
        let newsletter = Channel::new("newsletter-eu").expect("channel");
        let x = Channel::new("x").expect("channel");
        let p1 = self
            .create_post(a, &linkedin, "launch day", Some(self.campaign_x))
            .await;
        self.post(
            a,
            p1,
            post::Command::Edit {
                body: "launch day, edited".into(),
            },
        )
        .await;
        self.post(
            a,
            p1,
            post::Command::Schedule {
                publish_at: at(2026, 2, 20, 12, 0),
            },
        )
        .await;
        let p2 = self
            .create_post(a, &newsletter, "monthly letter", None)
            .await;
        self.post(
            a,
            p2,
            post::Command::Publish {
                trigger: PublishTrigger::Manual,
            },
        )
        .await;
        self.post(
            a,
            p2,
            post::Command::RecordPublished {
                channel: newsletter.clone(),
                network_post_id: "nl-42".into(),
                url: Some("https://example.test/nl-42".into()),
            },
        )
        .await;
        let p3 = self
            .create_post(a, &linkedin, "will fail", Some(self.campaign_x))
            .await;
        self.post(
            a,
            p3,
            post::Command::Publish {
                trigger: PublishTrigger::Manual,
            },
        )
        .await;
        self.post(
            a,
            p3,
            post::Command::RecordFailed {
                channel: linkedin.clone(),
                reason: "token expired".into(),
            },
        )
        .await;
        let p4 = self
            .create_post(a, &x, "never mind", Some(self.campaign_y))
            .await;
        self.post(a, p4, post::Command::Cancel).await;
        let p5 = self.create_post(a, &x, "stuck publishing", None).await;
        self.post(
            a,
            p5,
            post::Command::Publish {
                trigger: PublishTrigger::Manual,
            },
        )
        .await;
        for n in 0..4 {
            self.create_post(a, &linkedin, &format!("draft {n}"), None)
                .await;
        }

        // Generations: one generated after a failed attempt, one failed, one pending.
        let g1 = self
            .generate(a, "spring teaser", Some(self.campaign_x))
            .await;
        self.attempt(a, g1, 1, Err(0)).await;
        self.attempt(a, g1, 2, Ok(1_234)).await;
        let g2 = self.generate(a, "doomed", None).await;
        self.attempt(a, g2, 1, Err(55)).await;
        self.generation(
            a,
            g2,
            generation::Command::Fail {
                reason: "provider_timeout".into(),
            },
        )
        .await;
        self.generate(a, "still waiting", None).await;
        self.delivery_states(a, &linkedin).await;
    }

    /// Posts whose deliveries end in each state an attempt can leave.
    async fn delivery_states(&mut self, tenant: TenantId, channel: &Channel) {
        let publish = || post::Command::Publish {
            trigger: PublishTrigger::Manual,
        };
        let start = || post::Command::StartAttempt {
            channel: channel.clone(),
            network: "mastodon".into(),
        };
        let retrying = self.create_post(tenant, channel, "retrying", None).await;
        self.post(tenant, retrying, publish()).await;
        self.post(tenant, retrying, start()).await;
        self.post(
            tenant,
            retrying,
            post::Command::RecordAttemptFailed {
                channel: channel.clone(),
                code: "network_rate_limited".into(),
                reason: "429 Too Many Requests".into(),
                retry_at: Some(at(2026, 2, 20, 9, 5)),
            },
        )
        .await;
        let unconfirmed = self.create_post(tenant, channel, "in doubt", None).await;
        self.post(tenant, unconfirmed, publish()).await;
        self.post(tenant, unconfirmed, start()).await;
        self.post(
            tenant,
            unconfirmed,
            post::Command::RecordUnconfirmed {
                channel: channel.clone(),
                reason: "timeout".into(),
            },
        )
        .await;
        let in_flight = self.create_post(tenant, channel, "in flight", None).await;
        self.post(tenant, in_flight, publish()).await;
        self.post(tenant, in_flight, start()).await;
        let removed = self.create_post(tenant, channel, "removed", None).await;
        self.post(tenant, removed, publish()).await;
        self.post(tenant, removed, start()).await;
        self.post(
            tenant,
            removed,
            post::Command::RecordPublished {
                channel: channel.clone(),
                network_post_id: "m-7".into(),
                url: None,
            },
        )
        .await;
        self.post(
            tenant,
            removed,
            post::Command::RecordRemoved {
                channel: None,
                network_post_id: "m-7".into(),
            },
        )
        .await;
        self.several_targets(tenant, channel).await;
    }

    /// Posts of several channels: one partially published (a target published, one
    /// failed for good, one removed) and one still going out on one of its two.
    async fn several_targets(&mut self, tenant: TenantId, channel: &Channel) {
        let mastodon = Channel::new("mastodon").expect("channel");
        let crm = Channel::new("crm").expect("channel");
        let publish = || post::Command::Publish {
            trigger: PublishTrigger::Manual,
        };
        let start = |channel: &Channel| post::Command::StartAttempt {
            channel: channel.clone(),
            network: "mastodon".into(),
        };
        let partial = self
            .create_post_for(
                tenant,
                vec![mastodon.clone(), channel.clone(), crm.clone()],
                "everywhere",
                Some(self.campaign_y),
            )
            .await;
        self.post(tenant, partial, publish()).await;
        for target in [&mastodon, channel, &crm] {
            self.post(tenant, partial, start(target)).await;
        }
        self.post(
            tenant,
            partial,
            post::Command::RecordPublished {
                channel: mastodon.clone(),
                network_post_id: "m-8".into(),
                url: Some("https://mastodon.example/@t/m-8".into()),
            },
        )
        .await;
        self.post(
            tenant,
            partial,
            post::Command::RecordAttemptFailed {
                channel: channel.clone(),
                code: "network_refused_content".into(),
                reason: "422 too long".into(),
                retry_at: None,
            },
        )
        .await;
        self.post(
            tenant,
            partial,
            post::Command::RecordPublished {
                channel: crm.clone(),
                network_post_id: "crm-1".into(),
                url: None,
            },
        )
        .await;
        self.post(
            tenant,
            partial,
            post::Command::RecordRemoved {
                channel: None,
                network_post_id: "crm-1".into(),
            },
        )
        .await;
        let going = self
            .create_post_for(
                tenant,
                vec![channel.clone(), mastodon.clone()],
                "half way",
                None,
            )
            .await;
        self.post(tenant, going, publish()).await;
        self.post(tenant, going, start(&mastodon)).await;
        self.post(
            tenant,
            going,
            post::Command::RecordPublished {
                channel: mastodon,
                network_post_id: "m-9".into(),
                url: None,
            },
        )
        .await;
    }

    /// March: tenant A inherits February's limits and reuses a reservation id, tenant
    /// B sets its own, and B and C schedule posts.
    pub async fn phase_two(&mut self) {
        let (a, b, c) = (self.tenant_a, self.tenant_b, self.tenant_c);
        self.clock.set(at(2026, 3, 2, 8, 0));
        // The first reservation of an unconfigured month inherits the limits.
        let reused = ReservationId::from_uuid(Uuid::new_v4());
        self.budget(
            a,
            None,
            budget::Command::Reserve {
                reservation_id: reused,
                amount: micros(700_000),
                purpose: "march".into(),
                ttl: TimeDelta::minutes(30),
            },
        )
        .await;
        self.budget(
            a,
            Some(period(2026, 4)),
            budget::Command::Reserve {
                reservation_id: reused,
                amount: micros(100_000),
                purpose: "same id, next month".into(),
                ttl: TimeDelta::minutes(30),
            },
        )
        .await;
        self.budget(
            b,
            None,
            budget::Command::SetLimits {
                soft: micros(1_000_000),
                hard: micros(1_000_000),
                alert_thresholds_pct: vec![90],
            },
        )
        .await;
        // B's generation holds its worst case (about 1,100 µ$) until it is settled.
        let gb = self.generate(b, "march copy", Some(self.campaign_y)).await;
        self.attempt(b, gb, 1, Ok(777)).await;
        let rb = self.reserve(b, 990_000, "nearly everything", 30).await;
        self.commit(b, rb, 950_000).await; // 95%: the 90% alert, soft exceeded
        let _rb2 = self.reserve(b, 48_000, "the rest", 30).await; // nearly at the hard limit

        let linkedin = Channel::new("linkedin").expect("channel");
        let pb1 = self
            .create_post(b, &linkedin, "tenant b", Some(self.campaign_x))
            .await;
        self.post(
            b,
            pb1,
            post::Command::Schedule {
                publish_at: at(2026, 3, 2, 9, 0),
            },
        )
        .await;
        let pb2 = self
            .create_post(b, &linkedin, "tenant b, later", None)
            .await;
        self.post(
            b,
            pb2,
            post::Command::Schedule {
                publish_at: at(2026, 3, 2, 9, 0),
            },
        )
        .await;
        self.create_post(b, &linkedin, "tenant b draft", None).await;
        let pb3 = self
            .create_post_for(
                b,
                vec![linkedin.clone(), Channel::new("x").expect("channel")],
                "tenant b, two channels",
                None,
            )
            .await;
        self.post(
            b,
            pb3,
            post::Command::Schedule {
                publish_at: at(2026, 3, 2, 9, 30),
            },
        )
        .await;
        self.post(
            b,
            pb3,
            post::Command::Edit {
                body: "tenant b, two channels, edited".into(),
            },
        )
        .await;
        let pc = self
            .create_post(
                c,
                &Channel::new("blog").expect("channel"),
                "far ahead",
                None,
            )
            .await;
        self.post(
            c,
            pc,
            post::Command::Schedule {
                publish_at: at(2027, 1, 1, 0, 0),
            },
        )
        .await;
    }

    async fn generate(
        &mut self,
        tenant: TenantId,
        brief: &str,
        campaign_id: Option<CampaignId>,
    ) -> GenerationId {
        let id = GenerationId::from_uuid(Uuid::new_v4());
        let envelope = Envelope::system(tenant, "test", None);
        self.service
            .generate(
                &envelope,
                GenerateRequest {
                    generation_id: id,
                    brief: brief.into(),
                    channel: Channel::new("linkedin").expect("channel"),
                    campaign_id,
                    max_output_tokens: 100,
                    priority: Priority::Core,
                    model: None,
                },
            )
            .await
            .expect("a generation the scenario expects to be accepted");
        self.generations.push((tenant, id));
        id
    }

    /// Starts attempt `n` and records it generated at a cost, or failed at a cost.
    async fn attempt(&self, tenant: TenantId, id: GenerationId, n: u32, outcome: Result<i64, i64>) {
        let model = ModelRef::new("local", "local-large");
        self.generation(
            tenant,
            id,
            generation::Command::StartAttempt {
                attempt: n,
                model,
                reason: if n == 1 {
                    AttemptReason::Primary
                } else {
                    AttemptReason::Retry
                },
            },
        )
        .await;
        let cost = |micros: i64| AttemptCost {
            usage: Usage {
                input_tokens: 40,
                cached_input_tokens: 8,
                output_tokens: 90,
            },
            cost: Micros::new(micros).expect("amount"),
            latency_ms: 120,
            price_version: "local-1".into(),
        };
        let command = match outcome {
            Ok(micros) => generation::Command::RecordGenerated {
                attempt: n,
                text: format!("text {n}"),
                outcome: cost(micros),
            },
            Err(micros) => generation::Command::RecordAttemptFailed {
                attempt: n,
                error: "rate_limited".into(),
                message: "slow down".into(),
                retryable: true,
                outcome: cost(micros),
            },
        };
        self.generation(tenant, id, command).await;
    }

    async fn generation(&self, tenant: TenantId, id: GenerationId, command: generation::Command) {
        let envelope = Envelope::system(tenant, "test", None);
        self.service
            .generation(&envelope, id, None, command)
            .await
            .expect("a generation command the scenario expects to succeed");
    }

    /// The store's head.
    pub async fn head(&self) -> Position {
        self.store.head().await.expect("head")
    }

    /// How many events the log holds.
    pub async fn len(&self) -> usize {
        self.store
            .read_all(0, 1_000_000)
            .await
            .expect("read the log")
            .len()
    }

    async fn budget(&self, tenant: TenantId, period: Option<Period>, command: budget::Command) {
        let envelope = Envelope::system(tenant, "test", None);
        self.service
            .budget(&envelope, period, command)
            .await
            .expect("a budget command the scenario expects to succeed");
    }

    async fn reserve(
        &self,
        tenant: TenantId,
        amount: i64,
        purpose: &str,
        ttl_minutes: i64,
    ) -> ReservationId {
        let id = ReservationId::from_uuid(Uuid::new_v4());
        self.budget(
            tenant,
            None,
            budget::Command::Reserve {
                reservation_id: id,
                amount: micros(amount),
                purpose: purpose.into(),
                ttl: TimeDelta::minutes(ttl_minutes),
            },
        )
        .await;
        id
    }

    async fn commit(&self, tenant: TenantId, reservation_id: ReservationId, actual: i64) {
        self.budget(
            tenant,
            None,
            budget::Command::Commit {
                reservation_id,
                actual: micros(actual),
            },
        )
        .await;
    }

    async fn create_post(
        &mut self,
        tenant: TenantId,
        channel: &Channel,
        body: &str,
        campaign_id: Option<CampaignId>,
    ) -> PostId {
        self.create_post_for(tenant, vec![channel.clone()], body, campaign_id)
            .await
    }

    async fn create_post_for(
        &mut self,
        tenant: TenantId,
        channels: Vec<Channel>,
        body: &str,
        campaign_id: Option<CampaignId>,
    ) -> PostId {
        let id = PostId::from_uuid(Uuid::new_v4());
        self.post(
            tenant,
            id,
            post::Command::Create {
                channels,
                body: body.into(),
                campaign_id,
            },
        )
        .await;
        self.posts.push((tenant, id));
        id
    }

    async fn post(&self, tenant: TenantId, post_id: PostId, command: post::Command) {
        let envelope = Envelope::system(tenant, "test", None);
        self.service
            .post(&envelope, post_id, None, command)
            .await
            .expect("a post command the scenario expects to succeed");
    }
}

/// `reservations(tenant, period, status, limit)` and its answer.
pub type ReservationsAnswer = (
    Uuid,
    String,
    Option<ReservationStatus>,
    u32,
    Vec<ReservationView>,
);
/// `due_timers(now, …, page)` paged to the end, and its pages.
pub type DueTimersAnswer = (DateTime<Utc>, u32, Vec<Vec<DueTimer>>);

/// Every query's answer over one read-model database, for one log. Compare two with
/// [`assert_same`], which names the first answer that differs.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub checkpoint: Position,
    pub budgets: Vec<(Uuid, String, Option<BudgetView>)>,
    pub reservations: Vec<ReservationsAnswer>,
    pub posts: Vec<(Uuid, Uuid, Option<PostView>)>,
    pub pages: Vec<(String, Vec<PostPage>)>,
    pub due_timers: Vec<DueTimersAnswer>,
    pub open_deliveries: Vec<(DateTime<Utc>, Vec<OpenDelivery>)>,
    pub row_counts: Vec<(&'static str, i64)>,
    pub generations: Vec<(Uuid, Uuid, Option<GenerationView>)>,
    pub usage: Vec<(Uuid, String, Vec<UsageRow>)>,
}

/// The times the cross-tenant scans are asked about: before anything is due, after
/// the February holds and posts fell due, after March's, and far ahead.
pub fn scan_times() -> [DateTime<Utc>; 4] {
    [
        at(2026, 2, 1, 0, 0),
        at(2026, 2, 21, 0, 0),
        at(2026, 3, 2, 10, 0),
        at(2027, 6, 1, 0, 0),
    ]
}

/// Asks `models` every query over what `log` wrote.
pub async fn snapshot(models: &ReadModels, log: &Log) -> Snapshot {
    let tenants = [log.tenant_a, log.tenant_b, log.tenant_c, log.stranger].map(|t| t.as_uuid());
    // A post id no tenant has, fixed per log so snapshots of one log compare equal.
    let unknown = log.stranger.as_uuid();
    let periods =
        [(2026, 1), (2026, 2), (2026, 3), (2026, 4), (2026, 5)].map(|(y, m)| period(y, m));
    let statuses = [
        None,
        Some(ReservationStatus::Open),
        Some(ReservationStatus::Committed),
        Some(ReservationStatus::Released),
        Some(ReservationStatus::Expired),
    ];

    let mut budgets = Vec::new();
    let mut reservations = Vec::new();
    for tenant in tenants {
        for period in periods {
            let view = models.budget(tenant, period).await.expect("budget");
            budgets.push((tenant, period.to_string(), view));
            for status in statuses {
                for limit in [100, 2] {
                    let items = models
                        .reservations(tenant, period, status, limit)
                        .await
                        .expect("reservations");
                    reservations.push((tenant, period.to_string(), status, limit, items));
                }
            }
        }
    }

    let mut posts = Vec::new();
    // Every post asked for by every tenant: only its own tenant gets an answer.
    for &(_, post) in &log.posts {
        for tenant in tenants {
            let view = models.post(tenant, post.as_uuid()).await.expect("post");
            posts.push((tenant, post.as_uuid(), view));
        }
    }
    let missing = models
        .post(log.tenant_a.as_uuid(), unknown)
        .await
        .expect("post");
    posts.push((log.tenant_a.as_uuid(), unknown, missing));

    let mut filters: Vec<(String, PostFilter)> = vec![("all".into(), PostFilter::default())];
    for status in [
        "draft",
        "scheduled",
        "publishing",
        "published",
        "failed",
        "cancelled",
        "failed_retryable",
        "unconfirmed",
        "removed",
        "partially_published",
    ] {
        filters.push((
            format!("status={status}"),
            PostFilter {
                status: Some(status.into()),
                ..PostFilter::default()
            },
        ));
    }
    for channel in ["linkedin", "newsletter-eu", "x", "mastodon", "crm", "none"] {
        filters.push((
            format!("channel={channel}"),
            PostFilter {
                channel: Some(channel.into()),
                ..PostFilter::default()
            },
        ));
    }
    for (name, campaign) in [("x", log.campaign_x), ("y", log.campaign_y)] {
        filters.push((
            format!("campaign={name}"),
            PostFilter {
                campaign_id: Some(campaign.as_uuid()),
                ..PostFilter::default()
            },
        ));
    }
    filters.push((
        "status=draft&channel=linkedin".into(),
        PostFilter {
            status: Some("draft".into()),
            channel: Some("linkedin".into()),
            ..PostFilter::default()
        },
    ));
    let mut pages = Vec::new();
    for tenant in tenants {
        for (name, filter) in &filters {
            for limit in [2, 200] {
                let mut filter = PostFilter {
                    limit,
                    ..filter.clone()
                };
                let mut all = Vec::new();
                loop {
                    let page = models.posts(tenant, &filter).await.expect("posts");
                    let next = page.next_cursor.clone();
                    all.push(page);
                    match next {
                        Some(cursor) => {
                            filter.after = Some(
                                projector::readmodel::decode_cursor(&cursor).expect("a cursor"),
                            );
                        }
                        None => break,
                    }
                    assert!(all.len() < 100, "paging does not end");
                }
                pages.push((format!("{tenant} {name} limit={limit}"), all));
            }
        }
    }

    let mut generations = Vec::new();
    for &(_, id) in &log.generations {
        for tenant in tenants {
            let view = models
                .generation(tenant, id.as_uuid())
                .await
                .expect("generation");
            generations.push((tenant, id.as_uuid(), view));
        }
    }
    let mut usage = Vec::new();
    let days = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .zip(chrono::NaiveDate::from_ymd_opt(2026, 12, 31))
        .expect("days");
    for tenant in tenants {
        for group in [
            UsageGroup::Day,
            UsageGroup::Model,
            UsageGroup::Provider,
            UsageGroup::Campaign,
        ] {
            let rows = models
                .usage(tenant, days.0, days.1, group)
                .await
                .expect("usage");
            usage.push((tenant, format!("{group:?}"), rows));
        }
    }

    let mut due_timers = Vec::new();
    let mut open_deliveries = Vec::new();
    for now in scan_times() {
        open_deliveries.push((
            now,
            models
                .open_deliveries(now, 500)
                .await
                .expect("open deliveries"),
        ));
        // A page of one walks the keyset cursor through every timer.
        for limit in [500, 1] {
            let mut pages = Vec::new();
            let mut cursor = TimerCursor::default();
            loop {
                let page = models
                    .due_timers(now, &cursor, limit)
                    .await
                    .expect("due timers");
                let Some(last) = page.last() else { break };
                cursor = TimerCursor::after(last);
                pages.push(page);
                assert!(pages.len() < 1_000, "paging does not end");
            }
            due_timers.push((now, limit, pages));
        }
    }

    Snapshot {
        checkpoint: models.checkpoint(READ_MODELS).await.expect("checkpoint"),
        budgets,
        reservations,
        posts,
        pages,
        due_timers,
        open_deliveries,
        row_counts: models.row_counts().await.expect("row counts"),
        generations,
        usage,
    }
}

/// The log projected into fresh SQLite read models by one projector: the reference
/// every PostgreSQL projection is compared with.
pub async fn sqlite_reference(log: &Log) -> Snapshot {
    let dir = TempDir::new().expect("temp dir");
    let models = ReadModels::open(&dir.path().join("read_models.db"))
        .await
        .expect("open SQLite read models");
    projector::Projector::new(log.store.clone(), models.clone())
        .catch_up()
        .await
        .expect("project into SQLite");
    snapshot(&models, log).await
}

/// Asserts two snapshots are equal, reporting the first answer that differs rather
/// than both snapshots whole.
#[track_caller]
pub fn assert_same(actual: &Snapshot, expected: &Snapshot) {
    fn first_difference<T: std::fmt::Debug + PartialEq>(name: &str, actual: &[T], expected: &[T]) {
        for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert_eq!(a, e, "{name}[{index}] differs");
        }
        assert_eq!(
            actual.len(),
            expected.len(),
            "{name}: different numbers of answers"
        );
    }
    assert_eq!(actual.checkpoint, expected.checkpoint, "checkpoint differs");
    first_difference("budgets", &actual.budgets, &expected.budgets);
    first_difference("reservations", &actual.reservations, &expected.reservations);
    first_difference("posts", &actual.posts, &expected.posts);
    first_difference("pages", &actual.pages, &expected.pages);
    first_difference("due_timers", &actual.due_timers, &expected.due_timers);
    first_difference(
        "open_deliveries",
        &actual.open_deliveries,
        &expected.open_deliveries,
    );
    first_difference("row_counts", &actual.row_counts, &expected.row_counts);
    first_difference("generations", &actual.generations, &expected.generations);
    first_difference("usage", &actual.usage, &expected.usage);
    assert!(actual == expected, "the snapshots differ");
}
