//! The two databases the read models run on, and the few places where they differ.
//!
//! Every read-model statement in this crate is one SQL text with `$1, $2, …`
//! placeholders, run through sqlx's `Any` driver, which SQLite and PostgreSQL both
//! accept (docs/adr/0003-read-models-on-sqlite-and-postgresql.md). What cannot be one
//! text lives here: how each backend is opened and migrated, how a writer shuts out
//! every other writer until it commits (SQLite: `BEGIN IMMEDIATE`, the database's one
//! write lock; PostgreSQL: a row lock on the writer's checkpoint), and how a
//! transaction is scoped to one tenant (PostgreSQL: `app.tenant`, which row-level
//! security reads; SQLite has no such thing and relies on the `tenant_id = $1` that
//! every query carries anyway).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use eventlog::Position;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};
use uuid::Uuid;

/// The PostgreSQL schema that holds the read models (and their migration history), so
/// they can share a database with the event store, whose objects are in `public`.
pub const POSTGRES_SCHEMA: &str = "read_models";

/// Connections each read-model pool opens at most.
const MAX_CONNECTIONS: u32 = 8;

/// How long a SQLite statement waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// What every SQLite connection of the Any pool runs first: the options the pool of
/// `open_sqlite`'s migrator sets through the SQLite driver (busy timeout of
/// [`SQLITE_BUSY_TIMEOUT`], WAL, full sync, foreign keys).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 30000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;";

/// What every PostgreSQL connection runs first, so the shared SQL text finds the read
/// models' tables in [`POSTGRES_SCHEMA`]. `pg_temp` last, so no temporary table can
/// stand in for one of them.
const POSTGRES_SEARCH_PATH: &str = "SET search_path TO read_models, pg_temp";

/// Advisory lock that serializes creating the schema and granting privileges across
/// processes: PostgreSQL refuses two `CREATE SCHEMA IF NOT EXISTS` or two GRANTs on one
/// object at the same moment. "tidemark" in ASCII plus two, next to the event store's
/// position and grant locks.
const SETUP_LOCK: i64 = 8_388_346_167_743_836_781;

/// Which database the read models are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// One SQLite file, the embedded default.
    Sqlite,
    /// PostgreSQL, the production backend, with row-level security per tenant.
    Postgres,
}

impl Dialect {
    /// Starts the transaction of a writer (a projector batch, a rebuild). Together with
    /// [`Dialect::lock_checkpoint`] it keeps every other writer out until it commits.
    pub(crate) async fn begin_write(
        self,
        pool: &AnyPool,
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self {
            // SQLite has one write lock per database; take it now rather than at the
            // first write, so the checkpoint read below is already under it.
            Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => pool.begin().await,
        }
    }

    /// Starts a transaction that only reads, scoped to `tenant`. On PostgreSQL
    /// `BEGIN READ ONLY` and the tenant setting (local to the transaction, as in
    /// [`Dialect::scope_to_tenant`]) travel as one simple-protocol message: one round
    /// trip instead of two. The tenant is written into the text, which is safe because
    /// a [`Uuid`] formats as hex digits and hyphens only.
    pub(crate) async fn begin_read_as(
        self,
        pool: &AnyPool,
        tenant: Uuid,
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self {
            Dialect::Sqlite => pool.begin().await,
            Dialect::Postgres => {
                pool.begin_with(format!(
                    "BEGIN READ ONLY; SELECT set_config('app.tenant', '{}', true)",
                    tenant.hyphenated()
                ))
                .await
            }
        }
    }

    /// Reads a checkpoint inside a writer's transaction, and holds it against every
    /// other writer of that checkpoint until the transaction ends.
    pub(crate) async fn lock_checkpoint(
        self,
        conn: &mut AnyConnection,
        name: &str,
    ) -> Result<Position, sqlx::Error> {
        let held = self.lock_checkpoints(conn, &[name]).await?;
        Ok(held.get(name).copied().unwrap_or(0))
    }

    /// [`Dialect::lock_checkpoint`] for several checkpoints at once, in one statement
    /// when they all exist already (every batch but a partition's first). Returns
    /// each name's position, 0 for one never saved.
    ///
    /// On PostgreSQL the rows are locked in name order, whatever order `names` is in,
    /// so two writers whose sets overlap cannot deadlock on each other's rows.
    pub(crate) async fn lock_checkpoints(
        self,
        conn: &mut AnyConnection,
        names: &[&str],
    ) -> Result<BTreeMap<String, Position>, sqlx::Error> {
        let mut names = names.to_vec();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut held: BTreeMap<String, Position> = self
            .read_checkpoints_for_update(conn, &names)
            .await?
            .into_iter()
            .map(|(name, position)| (name, position as Position))
            .collect();
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| !held.contains_key(*name))
            .collect();
        if missing.is_empty() || self == Dialect::Sqlite {
            return Ok(held);
        }
        // A row lock needs a row. If another writer is inserting one right now, this
        // waits for that writer and then does nothing.
        let sql = format!(
            "INSERT INTO checkpoints (name, position) VALUES {} ON CONFLICT (name) DO NOTHING",
            crate::batch::placeholders(self, missing.len(), 2)
        );
        let mut insert = sqlx::query(&sql).persistent(false);
        for name in &missing {
            insert = insert.bind(*name).bind(0_i64);
        }
        insert.execute(&mut *conn).await?;
        for (name, position) in self.read_checkpoints_for_update(conn, &missing).await? {
            held.insert(name, position as Position);
        }
        Ok(held)
    }

    /// The checkpoints among `names` that exist, locked (see
    /// [`Dialect::lock_checkpoints`]).
    async fn read_checkpoints_for_update(
        self,
        conn: &mut AnyConnection,
        names: &[&str],
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let list = crate::batch::parameters(self, 1, names.len());
        let sql = match self {
            // `BEGIN IMMEDIATE` already holds the database's write lock.
            Dialect::Sqlite => {
                format!("SELECT name, position FROM checkpoints WHERE name IN ({list})")
            }
            // At READ COMMITTED a locking read waits for the holder to finish and then
            // returns the row as that holder committed it. The rows are locked as the
            // sort hands them up, so in name order.
            Dialect::Postgres => format!(
                "SELECT name, position FROM checkpoints WHERE name IN ({list})
                 ORDER BY name FOR UPDATE"
            ),
        };
        // Prepared once per connection and count: a batch names two checkpoints per
        // partition it read, so there are few counts, and a statement sqlx has not
        // prepared costs a round trip of its own.
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for name in names {
            query = query.bind(*name);
        }
        query.fetch_all(conn).await
    }

    /// Scopes the rest of the transaction to `tenant`: on PostgreSQL, row-level
    /// security then shows and accepts only that tenant's rows.
    pub(crate) async fn scope_to_tenant(
        self,
        conn: &mut AnyConnection,
        tenant: &str,
    ) -> Result<(), sqlx::Error> {
        match self {
            Dialect::Sqlite => Ok(()),
            Dialect::Postgres => {
                // `true`: SET LOCAL, gone at the end of the transaction, so a pooled
                // connection never carries one request's tenant into the next.
                sqlx::query("SELECT set_config('app.tenant', $1, true)")
                    .bind(tenant)
                    .execute(conn)
                    .await?;
                Ok(())
            }
        }
    }

    /// Sets both forms of PostgreSQL's tenant scope for the rest of the transaction:
    /// `app.tenant` (one tenant, or empty) and `app.tenants` (a comma-separated list,
    /// or empty; migrations/postgres/0008). Nothing on SQLite.
    async fn scope_to_tenants(
        self,
        conn: &mut AnyConnection,
        tenant: &str,
        tenants: &str,
    ) -> Result<(), sqlx::Error> {
        if self == Dialect::Sqlite {
            return Ok(());
        }
        sqlx::query(
            "SELECT set_config('app.tenant', $1, true), set_config('app.tenants', $2, true)",
        )
        .bind(tenant)
        .bind(tenants)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Tracks which tenant a writer's transaction is scoped to, so a batch of events of
/// one tenant sets it once rather than once per event.
pub(crate) struct TenantScope {
    dialect: Dialect,
    current: Option<String>,
    /// Whether `app.tenants` names several tenants right now (see
    /// [`TenantScope::enter_several`]).
    several: bool,
}

impl TenantScope {
    /// A transaction not yet scoped to any tenant.
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            current: None,
            several: false,
        }
    }

    /// A transaction whose scope is not known: the next [`TenantScope::enter`] sets
    /// both forms of it.
    pub(crate) fn unknown(dialect: Dialect) -> Self {
        Self {
            dialect,
            current: None,
            several: true,
        }
    }

    /// Scopes the transaction to `tenant`, unless it already is.
    pub(crate) async fn enter(
        &mut self,
        conn: &mut AnyConnection,
        tenant: &str,
    ) -> Result<(), sqlx::Error> {
        if self.current.as_deref() != Some(tenant) {
            if self.several {
                // Back to one tenant: the list of the last write-back goes.
                self.dialect.scope_to_tenants(conn, tenant, "").await?;
                self.several = false;
            } else {
                self.dialect.scope_to_tenant(conn, tenant).await?;
            }
            self.current = Some(tenant.to_owned());
        }
        Ok(())
    }

    /// Scopes the next statements to exactly `tenants` (PostgreSQL's `app.tenants`,
    /// migrations/postgres/0008), for a write-back that holds rows of all of them;
    /// `app.tenant` is emptied meanwhile. Nothing on SQLite.
    pub(crate) async fn enter_several(
        &mut self,
        conn: &mut AnyConnection,
        tenants: &[&str],
    ) -> Result<(), sqlx::Error> {
        if let [one] = tenants {
            return self.enter(conn, one).await;
        }
        self.dialect
            .scope_to_tenants(conn, "", &tenants.join(","))
            .await?;
        self.current = None;
        self.several = true;
        Ok(())
    }
}

/// Opens (creating if needed) the SQLite read models at `path`, migrated.
pub(crate) async fn open_sqlite(path: &Path) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    // Migrate through the SQLite driver itself: it creates the file and switches it to
    // WAL, which is a property of the file and stays.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let migrator = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let migrated = sqlx::migrate!("./migrations/sqlite").run(&migrator).await;
    migrator.close().await;
    migrated.map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;

    // The Any driver takes a URL and knows none of the options above, so every
    // connection sets the per-connection ones itself.
    AnyPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                Ok(())
            })
        })
        .connect(&sqlite_url(path)?)
        .await
}

/// The `sqlite://` URL of `path` for the Any driver: absolute, symlinks resolved (a
/// URL parser would fold `..` segments, which is wrong across a symlink), and every
/// byte outside a small safe set percent-encoded, `%` included, so the driver decodes
/// it back to exactly this path.
fn sqlite_url(path: &Path) -> Result<String, sqlx::Error> {
    let config = |e: std::io::Error| sqlx::Error::Configuration(Box::new(e));
    let file_name = path.file_name().ok_or_else(|| {
        config(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let absolute = dir.canonicalize().map_err(config)?.join(file_name);
    let mut url = String::from("sqlite://");
    for &byte in absolute.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(url, "%{byte:02X}");
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}

/// Connects to the PostgreSQL read models: migrates as `owner_url`, grants the runtime
/// role of `app_url` (when given and not the owner) its privileges, and returns a pool
/// of runtime connections — as `app_url`'s role, or the owner's when there is none.
pub(crate) async fn connect_postgres(
    owner_url: &str,
    app_url: Option<&str>,
) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let owner = PgConnectOptions::from_str(owner_url)?;
    let migrator = migrate_postgres(&owner).await?;
    let granted = match app_url {
        Some(app_url) => {
            let app = PgConnectOptions::from_str(app_url)?;
            if app.get_username() == owner.get_username() {
                Ok(())
            } else {
                grant_app_role(&migrator, app.get_username()).await
            }
        }
        None => Ok(()),
    };
    migrator.close().await;
    granted?;

    AnyPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(POSTGRES_SEARCH_PATH).await?;
                Ok(())
            })
        })
        .connect(app_url.unwrap_or(owner_url))
        .await
}

/// Migrates the read models as `owner_url` and grants `role` what the runtime needs.
pub(crate) async fn setup_app_role(owner_url: &str, role: &str) -> Result<(), sqlx::Error> {
    let owner = PgConnectOptions::from_str(owner_url)?;
    let migrator = migrate_postgres(&owner).await?;
    let granted = grant_app_role(&migrator, role).await;
    migrator.close().await;
    granted
}

/// Creates the schema and runs the PostgreSQL migrations as `owner`, who thereby owns
/// every object. Returns the owner's connection for further setup. Several processes
/// may do this at once: the schema is created under an advisory lock, and sqlx
/// serializes the migrations with one of its own.
async fn migrate_postgres(owner: &PgConnectOptions) -> Result<PgPool, sqlx::Error> {
    // sqlx keeps its migration history in an unqualified `_sqlx_migrations`; with the
    // search path on our schema alone, that table is ours and not the event store's.
    let options = owner.clone().options([("search_path", POSTGRES_SCHEMA)]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let migrated = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SETUP_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))
    }
    .await;
    match migrated {
        Ok(()) => Ok(pool),
        Err(error) => {
            pool.close().await;
            Err(error)
        }
    }
}

/// Grants `role` exactly what the runtime needs: use the schema; read and write
/// checkpoints (no delete); read, write and delete tenant rows, which row-level
/// security confines to the tenant it sets; read the cross-tenant views. Refuses a role
/// that does not exist, bypasses row-level security, or owns the tables. Idempotent.
///
/// The same as SQL, for an operator (run as the owner, after the migrations):
///
/// ```sql
/// GRANT USAGE ON SCHEMA read_models TO tidemark_app;
/// GRANT SELECT, INSERT, UPDATE ON read_models.checkpoints TO tidemark_app;
/// GRANT SELECT, INSERT, UPDATE, DELETE
///     ON read_models.budgets, read_models.reservations, read_models.posts,
///        read_models.post_targets, read_models.generations,
///        read_models.generation_attempts, read_models.timers TO tidemark_app;
/// GRANT SELECT ON read_models.timer_schedule, read_models.open_deliveries,
///     read_models.read_model_tenants, read_models.read_model_row_counts TO tidemark_app;
/// ```
async fn grant_app_role(owner: &PgPool, role: &str) -> Result<(), sqlx::Error> {
    let mut tx = owner.begin().await?;
    // The role travels as a setting, so it is never spliced into statement text;
    // `format('%I')` quotes it as an identifier inside.
    sqlx::query(
        "SELECT set_config('tidemark.read_models_role', $1, true), pg_advisory_xact_lock($2)",
    )
    .bind(role)
    .bind(SETUP_LOCK)
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql(
        r#"
        DO $$
        DECLARE
            app_role text := current_setting('tidemark.read_models_role');
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = app_role) THEN
                RAISE EXCEPTION 'tidemark: role % does not exist', app_role;
            END IF;
            IF EXISTS (SELECT FROM pg_roles
                        WHERE rolname = app_role AND (rolsuper OR rolbypassrls)) THEN
                RAISE EXCEPTION 'tidemark: role % bypasses row-level security', app_role;
            END IF;
            IF EXISTS (SELECT FROM pg_tables
                        WHERE schemaname = 'read_models' AND tableowner = app_role) THEN
                RAISE EXCEPTION 'tidemark: role % owns the read-model tables', app_role;
            END IF;
            EXECUTE format('GRANT USAGE ON SCHEMA read_models TO %I', app_role);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE ON read_models.checkpoints TO %I',
                           app_role);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON read_models.budgets, '
                           'read_models.reservations, read_models.posts, '
                           'read_models.post_targets, read_models.generations, '
                           'read_models.generation_attempts, read_models.timers TO %I',
                           app_role);
            EXECUTE format('GRANT SELECT ON read_models.timer_schedule, '
                           'read_models.open_deliveries, read_models.read_model_tenants, '
                           'read_models.read_model_row_counts TO %I', app_role);
        END
        $$
        "#,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    #[test]
    fn the_per_connection_settings_agree_with_the_constants_they_spell_out() {
        let busy = format!("busy_timeout = {};", SQLITE_BUSY_TIMEOUT.as_millis());
        assert!(SQLITE_PRAGMAS.contains(&busy), "{SQLITE_PRAGMAS}");
        assert!(POSTGRES_SEARCH_PATH.contains(&format!("TO {POSTGRES_SCHEMA},")));
    }

    #[tokio::test]
    async fn sqlite_read_models_open_the_very_file_named_whatever_its_characters() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let odd = dir.path().join("odd dir %41 #1");
        std::fs::create_dir(&odd).expect("create dir");
        let path = odd.join("read models?%2e.db");
        let pool = open_sqlite(&path).await.expect("open");
        assert!(path.is_file(), "{} was not created", path.display());

        // Every pooled connection carries the settings the old SQLite pool had.
        let mut conn = pool.acquire().await.expect("connection");
        for (pragma, expected) in [
            ("busy_timeout", "30000"),
            ("journal_mode", "wal"),
            ("synchronous", "2"),
            ("foreign_keys", "1"),
        ] {
            let row = sqlx::query(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut *conn)
                .await
                .expect("pragma");
            let value = row
                .try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                .expect("a pragma value");
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }

    #[test]
    fn a_path_without_a_file_name_is_a_configuration_error() {
        assert!(matches!(
            sqlite_url(Path::new("/")),
            Err(sqlx::Error::Configuration(_))
        ));
    }
}
