//! Fresh PostgreSQL databases for tests, one per test.
//!
//! Every test suite that touches PostgreSQL — this crate's, the projector's, the
//! end-to-end tests — needs the same thing: a database nobody else uses, migrated, with
//! a runtime role that is *not* the owner (so row-level security really applies, as in
//! production), gone again afterwards. [`TestDatabase::create`] makes one on the server
//! named by `TIDEMARK_TEST_DATABASE_URL` (default [`DEFAULT_DATABASE_URL`]; the URL's
//! role must be able to create databases and roles, e.g. the superuser of a local
//! server), and drops it — with `DROP DATABASE … WITH (FORCE)`, which ends any
//! connection still open — when the value is dropped, even if the test panicked.
//!
//! ```no_run
//! # async fn example() {
//! use eventlog::postgres::testing::TestDatabase;
//! let db = TestDatabase::create().await;      // tidemark_t_<uuid>, migrated
//! let store = db.store().await;               // runs as the non-owner role
//! // ... exercise `store`; `db.owner_options()` / `db.app_options()` for raw SQL ...
//! drop(store);
//! db.drop_database().await;                   // or just let `db` go out of scope
//! # }
//! ```
//!
//! This is test support that ships in the library so other crates' tests can use it;
//! it panics (with a message naming what failed) instead of returning errors.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

use super::{PostgresOptions, PostgresStore, migrate, setup_roles};

/// The environment variable naming the PostgreSQL server tests use. Its role must be
/// allowed to create databases and roles; its database is where they are created from.
pub const DATABASE_URL_VAR: &str = "TIDEMARK_TEST_DATABASE_URL";

/// The server tests use when [`DATABASE_URL_VAR`] is not set: the machine's own.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The test server's connection options, from [`DATABASE_URL_VAR`] or the default.
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} is not a PostgreSQL URL: {e}"))
}

/// The server URL without its database (`postgres://user@host:port`), and its
/// `host:port` alone.
fn split_url() -> (String, String) {
    let url = std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let url = url.split('?').next().unwrap_or_default();
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let server = url[..authority_end].to_owned();
    let host = server[scheme_end..]
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_owned();
    (server, host)
}

/// A migrated database of its own for one test, and a login role for the runtime.
///
/// The database is `tidemark_t_<uuid>`, owned by the server URL's role, which also
/// ran the migrations (the owner). The runtime role `tidemark_t_<uuid>_app` was made
/// by [`setup_roles`](super::setup_roles) with a random password. Both are removed
/// on [`TestDatabase::drop_database`] or, failing that, when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    server: PgConnectOptions,
    name: String,
    app_role: String,
    app_password: String,
    removed: bool,
}

impl TestDatabase {
    /// Creates, migrates and sets up a fresh database. Panics if the server cannot
    /// be reached or refuses.
    pub async fn create() -> Self {
        let server = server_options();
        let id = Uuid::new_v4().simple();
        let db = Self {
            name: format!("tidemark_t_{id}"),
            app_role: format!("tidemark_t_{id}_app"),
            app_password: Uuid::new_v4().simple().to_string(),
            server,
            removed: false,
        };

        let mut admin = db.server.connect().await.unwrap_or_else(|e| {
            panic!("cannot connect to the test server ({DATABASE_URL_VAR}): {e}")
        });
        // The name is letters, digits and underscores only, so it needs no quoting.
        sqlx::raw_sql(&format!("CREATE DATABASE {}", db.name))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {}: {e}", db.name));
        admin.close().await.ok();

        let owner = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(db.owner_options())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", db.name));
        migrate(&owner)
            .await
            .unwrap_or_else(|e| panic!("migrating test database {} failed: {e:?}", db.name));
        setup_roles(&owner, &db.app_role, Some(&db.app_password))
            .await
            .unwrap_or_else(|e| panic!("setting up role {} failed: {e:?}", db.app_role));
        owner.close().await;
        db
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The runtime role's name.
    pub fn app_role(&self) -> &str {
        &self.app_role
    }

    /// The test database's URL as the owner: the server URL with this database's name,
    /// for code that takes URLs (settings, child processes).
    pub fn owner_url(&self) -> String {
        let (server, _) = split_url();
        format!("{server}/{}", self.name)
    }

    /// The test database's URL as the runtime role.
    pub fn app_url(&self) -> String {
        let (_, host) = split_url();
        format!(
            "postgres://{}:{}@{host}/{}",
            self.app_role, self.app_password, self.name
        )
    }

    /// Connection options for the test database as the owner (the server URL's role).
    pub fn owner_options(&self) -> PgConnectOptions {
        self.server.clone().database(&self.name)
    }

    /// Connection options for the test database as the runtime role.
    pub fn app_options(&self) -> PgConnectOptions {
        self.owner_options()
            .username(&self.app_role)
            .password(&self.app_password)
    }

    /// Store options as production would use them — migrate as the owner, run as the
    /// runtime role — with small pools, since many tests run at once on one server.
    pub fn store_options(&self) -> PostgresOptions {
        PostgresOptions::new(self.app_options())
            .migrate_as(self.owner_options())
            .writers(2)
            .read_connections(2)
    }

    /// A store on this database with [`TestDatabase::store_options`].
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::open(self.store_options())
            .await
            .unwrap_or_else(|e| panic!("opening a store on {} failed: {e:?}", self.name))
    }

    /// Drops the database (ending any connection to it) and the runtime role.
    pub async fn drop_database(mut self) {
        self.removed = true;
        remove(
            self.server.clone(),
            self.name.clone(),
            Some(self.app_role.clone()),
        )
        .await;
    }
}

impl Drop for TestDatabase {
    /// Cleans up after a test that did not call [`TestDatabase::drop_database`], for
    /// example because it panicked. `Drop` cannot await, so the work runs on a thread
    /// of its own with its own small runtime, and this waits for it.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        remove_blocking(
            self.server.clone(),
            self.name.clone(),
            Some(self.app_role.clone()),
        );
    }
}

/// The environment variable that says where the Kafka-API brokers tests start keep
/// their log: `sqlite` (the default, a file in the test's directory) or `postgres` (a
/// [`ScratchDatabase`] of their own; the test script's second pass).
pub const KAFKA_STORAGE_VAR: &str = "TIDEMARK_TEST_KAFKA_STORAGE";

/// A database for a test's broker when [`KAFKA_STORAGE_VAR`] is `postgres`; `None`
/// when the broker keeps its log in SQLite. Panics on any other value.
pub fn broker_database_from_env() -> Option<ScratchDatabase> {
    match std::env::var(KAFKA_STORAGE_VAR).as_deref() {
        Err(_) | Ok("sqlite") => None,
        Ok("postgres") => Some(ScratchDatabase::new()),
        Ok(other) => panic!("{KAFKA_STORAGE_VAR} is sqlite or postgres, not {other}"),
    }
}

/// The name and URL of a database of its own for a process a test starts that makes
/// its own tables (a Kafka-API broker keeping its log in PostgreSQL): nothing is
/// created here, and the database, if that process made it, is dropped with the value.
#[derive(Debug)]
pub struct ScratchDatabase {
    name: String,
}

impl ScratchDatabase {
    /// A fresh name, `tidemark_k_<uuid>`, on the test server.
    pub fn new() -> Self {
        Self {
            name: format!("tidemark_k_{}", Uuid::new_v4().simple()),
        }
    }

    /// Its URL as the test server's role.
    pub fn url(&self) -> String {
        let (server, _) = split_url();
        format!("{server}/{}", self.name)
    }
}

impl Default for ScratchDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        remove_blocking(server_options(), self.name.clone(), None);
    }
}

/// [`remove`] from synchronous code (`Drop` cannot await): on a thread of its own with
/// its own small runtime, waited for.
fn remove_blocking(server: PgConnectOptions, name: String, role: Option<String>) {
    let label = name.clone();
    let cleanup = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(remove(server, name, role)),
            Err(error) => eprintln!("cannot start a runtime to drop a test database: {error}"),
        }
    });
    if cleanup.join().is_err() {
        eprintln!("dropping test database {label} panicked");
    }
}

/// Best effort: a leftover database or role is reported, never fatal to the test.
async fn remove(server: PgConnectOptions, name: String, role: Option<String>) {
    let mut admin = match server.connect().await {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("cannot connect to drop test database {name}: {error}");
            return;
        }
    };
    // Names are letters, digits and underscores only (see `create`).
    let drop_role = role.map(|role| format!("DROP ROLE IF EXISTS {role}"));
    for sql in
        std::iter::once(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).chain(drop_role)
    {
        if let Err(error) = sqlx::raw_sql(&sql).execute(&mut admin).await {
            eprintln!("test cleanup `{sql}` failed: {error}");
        }
    }
    admin.close().await.ok();
}
