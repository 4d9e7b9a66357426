//! The read-model rows a batch of events changes, held in memory and written back
//! with a few multi-row statements (DESIGN: batched projection).
//!
//! Applying an event used to cost two or three SQL statements, each a round trip to
//! SQLite's worker thread or to the PostgreSQL server; a rebuild of a million events
//! spent nearly all its time in those round trips (docs/benchmarks.md). Now `apply`
//! works on a [`Batch`]: the first time an event needs a row, the batch reads it (one
//! `SELECT` by key); a row that an event creates needs no read at all. Every later
//! event of the batch finds the row in memory. [`Batch::flush`] then writes every
//! changed row with one `INSERT … ON CONFLICT DO UPDATE` and one `DELETE` per table,
//! many rows each — on PostgreSQL for up to 64 tenants at a time, named in
//! `app.tenants` for row-level security (migrations/postgres/0008), and for every
//! tenant at once on SQLite.
//!
//! The batch lives inside one writer transaction, whose lock (see `projector.rs`)
//! shuts every other read-model writer out, so a row held here is never stale: every
//! change to it since it was read is the batch's own. The flush happens before the
//! checkpoint is saved, in the same transaction, so the batch and its checkpoint still
//! commit together.
//!
//! A rebuild does not wait for its write-backs: it takes the changed rows out of the
//! batch ([`Batch::take_write_back`]) and lends its transaction to a task that writes
//! them ([`Lane::lend`]), while it goes on applying the next events on top of what the
//! batch still holds. A row it must read waits until that write-back has ended
//! ([`Lane::conn`]), so every read still sees every row written before it. The
//! database writes while the projector applies, where each used to wait for the other
//! (docs/adr/0006).
//!
//! Rows are described by [`Table`]s, one per read-model table, column for column; a
//! test checks them against the migrated tables of both databases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row as _, Transaction};
use tokio::task::JoinHandle;

use crate::dialect::{Dialect, TenantScope};

/// A column's SQL type, as the read models use them: BIGINT or TEXT (see
/// `migrations/postgres/0001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
}

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// A column: its name, type, and the value a new row starts with (the table's
/// `DEFAULT`, or NULL).
pub(crate) struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub initial: Initial,
}

/// The value a new row's column starts with.
#[derive(Clone, Copy)]
pub(crate) enum Initial {
    Null,
    Int(i64),
    Text(&'static str),
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        initial: Initial::Null,
    }
}

const fn int0(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
        initial: Initial::Int(0),
    }
}

const fn text(name: &'static str, initial: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
        initial: Initial::Text(initial),
    }
}

/// A read-model table: its columns, the first `key` of which are its primary key
/// (always starting with `tenant_id`).
pub(crate) struct Table {
    pub name: &'static str,
    pub key: usize,
    pub columns: &'static [Column],
}

use Kind::{Int, Text};

pub(crate) const BUDGETS: Table = Table {
    name: "budgets",
    key: 2,
    columns: &[
        col("tenant_id", Text),
        col("period", Text),
        int0("soft_limit_micros"),
        int0("hard_limit_micros"),
        text("alert_thresholds_pct", "[]"),
        int0("committed_micros"),
        int0("reserved_micros"),
        int0("overrun_micros"),
        text("thresholds_crossed", "[]"),
        col("inherited_from", Text),
        int0("limits_set"),
        col("version", Int),
        col("updated_at", Text),
    ],
};

pub(crate) const RESERVATIONS: Table = Table {
    name: "reservations",
    key: 3,
    columns: &[
        col("tenant_id", Text),
        col("period", Text),
        col("reservation_id", Text),
        col("amount_micros", Int),
        col("purpose", Text),
        col("status", Text),
        col("expires_at", Text),
        col("actual_micros", Int),
        col("created_at", Text),
        col("settled_at", Text),
    ],
};

pub(crate) const POSTS: Table = Table {
    name: "posts",
    key: 2,
    columns: &[
        col("tenant_id", Text),
        col("post_id", Text),
        col("channel", Text),
        col("body", Text),
        col("campaign_id", Text),
        col("status", Text),
        col("publish_at", Text),
        col("version", Int),
        col("created_position", Int),
        col("created_at", Text),
        col("updated_at", Text),
    ],
};

pub(crate) const POST_TARGETS: Table = Table {
    name: "post_targets",
    key: 3,
    columns: &[
        col("tenant_id", Text),
        col("post_id", Text),
        col("channel", Text),
        col("position", Int),
        col("state", Text),
        col("network", Text),
        int0("attempts"),
        col("next_attempt_at", Text),
        col("network_post_id", Text),
        col("url", Text),
        col("failure_reason", Text),
        text("delivery_attempts", "[]"),
    ],
};

pub(crate) const GENERATIONS: Table = Table {
    name: "generations",
    key: 2,
    columns: &[
        col("tenant_id", Text),
        col("generation_id", Text),
        col("status", Text),
        col("brief", Text),
        col("channel", Text),
        col("campaign_id", Text),
        col("priority", Text),
        text("mode", "normal"),
        col("requested_model", Text),
        col("provider", Text),
        col("model", Text),
        col("reservation_id", Text),
        col("period", Text),
        col("reserved_micros", Int),
        col("text", Text),
        int0("input_tokens"),
        int0("cached_input_tokens"),
        int0("output_tokens"),
        int0("cost_micros"),
        int0("attempts"),
        col("failure_reason", Text),
        col("version", Int),
        col("created_at", Text),
        col("updated_at", Text),
    ],
};

pub(crate) const GENERATION_ATTEMPTS: Table = Table {
    name: "generation_attempts",
    key: 3,
    columns: &[
        col("tenant_id", Text),
        col("generation_id", Text),
        col("attempt", Int),
        col("provider", Text),
        col("model", Text),
        col("reason", Text),
        col("status", Text),
        col("error", Text),
        col("campaign_id", Text),
        int0("input_tokens"),
        int0("cached_input_tokens"),
        int0("output_tokens"),
        int0("cost_micros"),
        col("latency_ms", Int),
        col("price_version", Text),
        col("day", Text),
        col("started_at", Text),
        col("finished_at", Text),
    ],
};

pub(crate) const TIMERS: Table = Table {
    name: "timers",
    key: 3,
    columns: &[
        col("tenant_id", Text),
        col("kind", Text),
        col("timer_key", Text),
        col("subject", Text),
        col("due_at", Text),
        col("version", Int),
    ],
};

/// Every table a batch writes, in the order a flush writes them.
pub(crate) const ALL: [&Table; 7] = [
    &BUDGETS,
    &RESERVATIONS,
    &POSTS,
    &POST_TARGETS,
    &GENERATIONS,
    &GENERATION_ATTEMPTS,
    &TIMERS,
];

/// Bind parameters one statement carries at most: below SQLite's limit (32,766) and
/// PostgreSQL's (65,535).
const MAX_PARAMETERS: usize = 30_000;

/// Tenants whose rows one PostgreSQL write-back statement holds at most. Row-level
/// security checks each row against the list of them (migrations/postgres/0008).
const TENANTS_PER_STATEMENT: usize = 64;

/// Rows one statement writes at most. Past a few hundred rows a larger statement
/// saves no measurable time and only costs memory to build.
const MAX_ROWS: usize = 1_000;

impl Table {
    fn index(&self, column: &str) -> usize {
        // Column names are this crate's constants, and `batch::tests` runs every
        // event kind through `apply`, so a misspelt one fails there.
        self.columns
            .iter()
            .position(|c| c.name == column)
            .unwrap_or_else(|| panic!("table {} has no column {column}", self.name))
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_list(&self) -> String {
        self.columns[..self.key]
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn select_by_key(&self, key_columns: usize) -> String {
        let filter = self.columns[..key_columns]
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ${}", c.name, i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "SELECT {} FROM {} WHERE {filter}",
            self.column_list(),
            self.name
        )
    }

    fn upsert(&self, dialect: Dialect, rows: usize) -> String {
        let width = self.columns.len();
        let values = placeholders(dialect, rows, width);
        let set = self.columns[self.key..]
            .iter()
            .map(|c| format!("{0} = excluded.{0}", c.name))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES {values} ON CONFLICT ({}) DO UPDATE SET {set}",
            self.name,
            self.column_list(),
            self.key_list()
        )
    }

    fn delete(&self, dialect: Dialect, rows: usize) -> String {
        format!(
            "DELETE FROM {} WHERE ({}) IN (VALUES {})",
            self.name,
            self.key_list(),
            placeholders(dialect, rows, self.key)
        )
    }
}

/// `($1, $2), ($3, $4)` for two rows of two, or `(?, ?), (?, ?)` on SQLite.
///
/// SQLite keeps `$1` and `?1` as *named* parameters in a list, and finding a name
/// there (as sqlx does for each parameter it binds) walks the list, so binding a
/// statement of thousands of them takes time in the square of their number; a bare
/// `?` is numbered by its place and has no name to look up.
///
/// The list for `rows` rows is the start of the list for more rows, so each dialect
/// and width has one list, built once and cut to length ([`PlaceholderList`]): a
/// write-back sends statements of up to 30,000 parameters, and formatting each
/// parameter anew was 9 % of a PostgreSQL rebuild's CPU (docs/benchmarks.md).
pub(crate) fn placeholders(dialect: Dialect, rows: usize, width: usize) -> String {
    PlaceholderList::shared(dialect, rows, width)
        .prefix(rows)
        .to_owned()
}

/// `$first, …` for `count` parameters (`?, …` on SQLite; see [`placeholders`]).
pub(crate) fn parameters(dialect: Dialect, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| match dialect {
            Dialect::Sqlite => "?".to_owned(),
            Dialect::Postgres => format!("${n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The placeholders of many rows of one width, and where each row's tuple ends.
struct PlaceholderList {
    text: String,
    /// `ends[n]` is the length of the list of the first `n + 1` rows.
    ends: Vec<usize>,
}

impl PlaceholderList {
    fn build(dialect: Dialect, rows: usize, width: usize) -> Self {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(rows);
        for row in 0..rows {
            if row > 0 {
                text.push_str(", ");
            }
            text.push('(');
            text.push_str(&parameters(dialect, row * width + 1, width));
            text.push(')');
            ends.push(text.len());
        }
        Self { text, ends }
    }

    /// The list of `dialect` and `width` for at least `rows` rows, built on first use
    /// for at least [`MAX_ROWS`], the most a write-back's statement holds.
    fn shared(dialect: Dialect, rows: usize, width: usize) -> Arc<Self> {
        static LISTS: Mutex<Vec<(Dialect, usize, Arc<PlaceholderList>)>> = Mutex::new(Vec::new());
        // A poisoned lock only means another thread panicked while building a list;
        // the lists already in it are whole.
        let mut lists = LISTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, list)) = lists
            .iter()
            .find(|(d, w, list)| *d == dialect && *w == width && list.ends.len() >= rows)
        {
            return Arc::clone(list);
        }
        let list = Arc::new(Self::build(dialect, rows.max(MAX_ROWS), width));
        lists.retain(|(d, w, _)| !(*d == dialect && *w == width));
        lists.push((dialect, width, Arc::clone(&list)));
        list
    }

    /// The placeholders of the first `rows` rows.
    fn prefix(&self, rows: usize) -> &str {
        match rows.checked_sub(1) {
            Some(last) => &self.text[..self.ends[last]],
            None => "",
        }
    }
}

/// A table's primary key values, `tenant_id` first.
pub(crate) type Key = Vec<Value>;

/// One row of a table, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    table: &'static Table,
    values: Vec<Value>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Table {}

impl Row {
    /// A new row of `table` with its key and every other column at its default.
    pub(crate) fn new(table: &'static Table, key: Key) -> Self {
        let mut values: Vec<Value> = table
            .columns
            .iter()
            .map(|c| match c.initial {
                Initial::Null => Value::Null,
                Initial::Int(v) => Value::Int(v),
                Initial::Text(v) => Value::Text(v.to_owned()),
            })
            .collect();
        for (slot, value) in values.iter_mut().zip(key) {
            *slot = value;
        }
        Self { table, values }
    }

    fn key(&self) -> Key {
        self.values[..self.table.key].to_vec()
    }

    /// Sets `column` to `value`.
    pub(crate) fn set(&mut self, column: &str, value: impl Into<Value>) -> &mut Self {
        let index = self.table.index(column);
        self.values[index] = value.into();
        self
    }

    /// Adds `delta` to an integer column (a NULL counts as 0).
    pub(crate) fn add(&mut self, column: &str, delta: i64) -> &mut Self {
        let index = self.table.index(column);
        let now = match self.values[index] {
            Value::Int(v) => v,
            _ => 0,
        };
        self.values[index] = Value::Int(now.saturating_add(delta));
        self
    }

    /// A text column, or `None` when it is NULL (or not text).
    pub(crate) fn text(&self, column: &str) -> Option<&str> {
        match &self.values[self.table.index(column)] {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }

    /// An integer column, or `None` when it is NULL (or not an integer).
    pub(crate) fn int(&self, column: &str) -> Option<i64> {
        match self.values[self.table.index(column)] {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }

    fn decode(table: &'static Table, row: &AnyRow) -> Result<Self, sqlx::Error> {
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, column) in table.columns.iter().enumerate() {
            values.push(match column.kind {
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.into(),
                Kind::Text => row.try_get::<Option<String>, _>(i)?.into(),
            });
        }
        Ok(Self { table, values })
    }
}

/// What the batch knows of one row.
#[derive(Debug)]
enum Slot {
    /// The row as it is now; `dirty` when the batch changed it.
    Present { row: Row, dirty: bool },
    /// There is no such row now; `dirty` when the batch deleted it (or does not know
    /// whether the database has one to delete).
    Absent { dirty: bool },
}

/// What a batch holds of one table.
#[derive(Default)]
struct TableRows {
    slots: BTreeMap<Key, Slot>,
    /// Key prefixes all of whose rows are held (read, or created by the batch).
    complete: BTreeSet<Key>,
}

/// The rows a batch of events has read or changed, written back by [`Batch::flush`].
pub(crate) struct Batch {
    dialect: Dialect,
    scope: TenantScope,
    tables: Vec<TableRows>,
    held: usize,
    reads: usize,
}

/// The connection a batch reads rows through. During a rebuild the batch's
/// transaction is lent to a write-back of earlier rows while the batch goes on applying
/// events; a read then waits for that write-back to end and takes the transaction back
/// ([`Lane::conn`]), so it sees every row written so far.
pub(crate) enum Lane<'c> {
    /// A connection the caller holds.
    Borrowed(&'c mut AnyConnection),
    /// A rebuild's transaction, not lent.
    Owned(Transaction<'static, Any>),
    /// A rebuild's transaction, lent to the write-back running in this task (a task
    /// of its own).
    WritingBack(JoinHandle<WriteBackDone>),
    /// Between taking a write-back's result and putting the transaction back, and for
    /// good after a write-back failed.
    Taken,
}

/// A write-back task's transaction, and how it went.
pub(crate) type WriteBackDone = (Transaction<'static, Any>, Result<usize, sqlx::Error>);

impl Lane<'_> {
    /// The connection, once no write-back holds it; a write-back's failure is the
    /// error here.
    pub(crate) async fn conn(&mut self) -> Result<&mut AnyConnection, sqlx::Error> {
        if matches!(self, Lane::WritingBack(_)) {
            let tx = self.finish_write_back().await?;
            *self = Lane::Owned(tx);
        }
        match self {
            Lane::Borrowed(conn) => Ok(conn),
            Lane::Owned(tx) => Ok(&mut **tx),
            Lane::WritingBack(_) | Lane::Taken => Err(no_transaction()),
        }
    }

    /// The rebuild's transaction, once no write-back holds it.
    pub(crate) async fn into_transaction(
        mut self,
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        if matches!(self, Lane::WritingBack(_)) {
            return self.finish_write_back().await;
        }
        match self {
            Lane::Owned(tx) => Ok(tx),
            // A rebuild's lane is never borrowed, and never left taken.
            Lane::Borrowed(_) | Lane::WritingBack(_) | Lane::Taken => Err(no_transaction()),
        }
    }

    /// Lends the rebuild's transaction to `write_back`, which runs in a task of its
    /// own from now on, after any write-back still running ends. The batch forgets
    /// which tenant its transaction is scoped to, since the write-back changes it.
    pub(crate) async fn lend(
        &mut self,
        batch: &mut Batch,
        write_back: WriteBack,
    ) -> Result<(), sqlx::Error> {
        let mut tx = match std::mem::replace(self, Lane::Taken) {
            Lane::Owned(tx) => tx,
            Lane::WritingBack(handle) => {
                *self = Lane::WritingBack(handle);
                self.finish_write_back().await?
            }
            other @ (Lane::Borrowed(_) | Lane::Taken) => {
                *self = other;
                return Err(no_transaction());
            }
        };
        batch.scope = TenantScope::unknown(batch.dialect);
        let dialect = batch.dialect;
        *self = Lane::WritingBack(tokio::spawn(async move {
            let mut scope = TenantScope::unknown(dialect);
            let written = write_back.run(&mut tx, &mut scope).await;
            (tx, written)
        }));
        Ok(())
    }

    async fn finish_write_back(&mut self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let Lane::WritingBack(handle) = std::mem::replace(self, Lane::Taken) else {
            return Err(no_transaction());
        };
        let (tx, written) = handle.await.map_err(|e| {
            sqlx::Error::Protocol(format!("a rebuild's write-back task ended abnormally: {e}"))
        })?;
        written?;
        Ok(tx)
    }
}

/// What a lane answers when it has no transaction to give: a borrowed connection asked
/// to be lent, or a rebuild's transaction after its write-back failed (whose error was
/// answered first).
fn no_transaction() -> sqlx::Error {
    sqlx::Error::Protocol("the rebuild's transaction is not available".to_owned())
}

/// Where `table` is in [`ALL`]. Every table this crate describes is listed there (the
/// column tests go through `ALL`), so the panic would be a table added to one and not
/// the other.
fn position(table: &Table) -> usize {
    ALL.iter()
        .position(|t| t.name == table.name)
        .unwrap_or_else(|| panic!("{} is not a read-model table", table.name))
}

impl Batch {
    /// An empty batch in a writer's transaction on `dialect`.
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            scope: TenantScope::new(dialect),
            tables: ALL.iter().map(|_| TableRows::default()).collect(),
            held: 0,
            reads: 0,
        }
    }

    /// How many rows the batch holds (read or changed).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// How many statements the batch has sent to read rows so far.
    pub(crate) fn reads(&self) -> usize {
        self.reads
    }

    fn rows(&mut self, table: &Table) -> &mut TableRows {
        &mut self.tables[position(table)]
    }

    /// Reads the row of `table` at `key` unless the batch knows it already.
    async fn ensure(
        &mut self,
        conn: &mut Lane<'_>,
        table: &'static Table,
        key: &Key,
    ) -> Result<(), sqlx::Error> {
        if self.rows(table).slots.contains_key(key) {
            return Ok(());
        }
        let prefix_known = (1..key.len()).any(|n| self.rows(table).complete.contains(&key[..n]));
        let slot = if prefix_known {
            Slot::Absent { dirty: false }
        } else {
            let found = self.select(conn, table, key).await?;
            match found.into_iter().next() {
                Some(row) => Slot::Present { row, dirty: false },
                None => Slot::Absent { dirty: false },
            }
        };
        self.rows(table).slots.insert(key.clone(), slot);
        self.held += 1;
        Ok(())
    }

    /// The rows of `table` whose key starts with `prefix`, read under the tenant's
    /// scope (the prefix's first value).
    async fn select(
        &mut self,
        conn: &mut Lane<'_>,
        table: &'static Table,
        prefix: &[Value],
    ) -> Result<Vec<Row>, sqlx::Error> {
        let conn = conn.conn().await?;
        if let Some(Value::Text(tenant)) = prefix.first() {
            self.scope.enter(conn, tenant).await?;
        }
        let sql = table.select_by_key(prefix.len());
        // Planned for each call, never from a cached generic plan: a generic plan made
        // while the table was small may take an index that shares only the key's first
        // columns (`reservations_by_period` for a reservation's key) and then filter
        // every row of the tenant's month; the primary key answers every such read.
        let mut query = sqlx::query(&sql).persistent(false);
        for (value, column) in prefix.iter().zip(table.columns) {
            query = bind(query, value, column.kind);
        }
        self.reads += 1;
        let found = query.fetch_all(&mut *conn).await?;
        found.iter().map(|r| Row::decode(table, r)).collect()
    }

    /// The row of `table` at `key`, if there is one.
    pub(crate) async fn get(
        &mut self,
        conn: &mut Lane<'_>,
        table: &'static Table,
        key: Key,
    ) -> Result<Option<&Row>, sqlx::Error> {
        self.ensure(conn, table, &key).await?;
        Ok(match self.rows(table).slots.get(&key) {
            Some(Slot::Present { row, .. }) => Some(row),
            _ => None,
        })
    }

    /// The row of `table` at `key` to change, if there is one. Like an `UPDATE … WHERE
    /// key`, a missing row is not an error: there is just nothing to change.
    pub(crate) async fn update(
        &mut self,
        conn: &mut Lane<'_>,
        table: &'static Table,
        key: Key,
    ) -> Result<Option<&mut Row>, sqlx::Error> {
        self.ensure(conn, table, &key).await?;
        Ok(match self.rows(table).slots.get_mut(&key) {
            Some(Slot::Present { row, dirty }) => {
                *dirty = true;
                Some(row)
            }
            _ => None,
        })
    }

    /// The row of `table` at `key` to change, made from `Row::new` with `fill` when
    /// there is none yet (an upsert).
    pub(crate) async fn upsert(
        &mut self,
        conn: &mut Lane<'_>,
        table: &'static Table,
        key: Key,
        fill: impl FnOnce(&mut Row),
    ) -> Result<&mut Row, sqlx::Error> {
        self.ensure(conn, table, &key).await?;
        let slot = self
            .rows(table)
            .slots
            .get_mut(&key)
            .expect("ensure just put the slot in");
        if let Slot::Absent { .. } = slot {
            let mut row = Row::new(table, key);
            fill(&mut row);
            *slot = Slot::Present { row, dirty: true };
        }
        match slot {
            Slot::Present { row, dirty } => {
                *dirty = true;
                Ok(row)
            }
            Slot::Absent { .. } => unreachable!("the slot was just filled"),
        }
    }

    /// Puts `row` in, replacing whatever the database holds at its key: for a row
    /// that an event creates, which needs no read first.
    pub(crate) fn insert(&mut self, row: Row) {
        let key = row.key();
        let table = row.table;
        let previous = self
            .rows(table)
            .slots
            .insert(key, Slot::Present { row, dirty: true });
        if previous.is_none() {
            self.held += 1;
        }
    }

    /// Deletes the row of `table` at `key`, if there is one; no read needed.
    pub(crate) fn delete(&mut self, table: &'static Table, key: Key) {
        let previous = self
            .rows(table)
            .slots
            .insert(key, Slot::Absent { dirty: true });
        if previous.is_none() {
            self.held += 1;
        }
    }

    /// Records that there is no row of `table` at `key`, when the batch knows it
    /// without reading (the timer of a post the batch created).
    pub(crate) fn absent(&mut self, table: &'static Table, key: Key) {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.rows(table).slots.entry(key)
        {
            slot.insert(Slot::Absent { dirty: false });
            self.held += 1;
        }
    }

    /// Records that every row of `table` under `prefix` is held: the batch created
    /// the parent (a post and all its targets), so no read is needed to list them.
    pub(crate) fn complete(&mut self, table: &'static Table, prefix: Key) {
        self.rows(table).complete.insert(prefix);
    }

    /// The rows of `table` whose key starts with `prefix`, reading them all once.
    pub(crate) async fn children(
        &mut self,
        conn: &mut Lane<'_>,
        table: &'static Table,
        prefix: Key,
    ) -> Result<Vec<Row>, sqlx::Error> {
        if !self.rows(table).complete.contains(&prefix) {
            let found = self.select(conn, table, &prefix).await?;
            let rows = self.rows(table);
            let mut added = 0;
            for row in found {
                // A slot the batch holds already is newer than the database's row.
                rows.slots.entry(row.key()).or_insert_with(|| {
                    added += 1;
                    Slot::Present { row, dirty: false }
                });
            }
            rows.complete.insert(prefix.clone());
            self.held += added;
        }
        let rows = self.rows(table);
        Ok(rows
            .slots
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .filter_map(|(_, slot)| match slot {
                Slot::Present { row, .. } => Some(row.clone()),
                Slot::Absent { .. } => None,
            })
            .collect())
    }

    /// Writes every changed row: per table, one multi-row upsert of the rows that
    /// exist and one multi-row delete of those that do not, for each group of up to
    /// [`TENANTS_PER_STATEMENT`] tenants on PostgreSQL (row-level security) and for all
    /// of them at once on SQLite. Empties the batch. Returns how many statements it
    /// sent.
    pub(crate) async fn flush(&mut self, conn: &mut AnyConnection) -> Result<usize, sqlx::Error> {
        self.flush_keeping(conn, &[]).await
    }

    /// [`Batch::flush`], but the rows of the tables in `keep` stay held (as written),
    /// so that the rest of the transaction need not read them again: a rebuild keeps
    /// the budget months, which nearly every budget event touches.
    pub(crate) async fn flush_keeping(
        &mut self,
        conn: &mut AnyConnection,
        keep: &[&Table],
    ) -> Result<usize, sqlx::Error> {
        let write_back = self.take_write_back(keep);
        write_back.run(conn, &mut self.scope).await
    }

    /// Takes every changed row out of the batch, as [`Batch::flush_keeping`] writes
    /// them, leaving the rows of `keep` held (as written); [`WriteBack::run`] writes
    /// them.
    pub(crate) fn take_write_back(&mut self, keep: &[&Table]) -> WriteBack {
        let mut changes: Changes = BTreeMap::new();
        let per_tenant = self.dialect == Dialect::Postgres;
        let mut kept = 0;
        for (index, rows) in self.tables.iter_mut().enumerate() {
            let keeping = keep.iter().any(|t| t.name == ALL[index].name);
            for (key, slot) in std::mem::take(&mut rows.slots) {
                if keeping && let Slot::Present { row, dirty } = &slot {
                    if *dirty {
                        let tables = changes
                            .entry(per_tenant.then(|| tenant_of(&key)))
                            .or_insert_with(|| ALL.iter().map(|_| Default::default()).collect());
                        tables[index].0.push(row.clone());
                    }
                    let row = row.clone();
                    rows.slots.insert(key, Slot::Present { row, dirty: false });
                    kept += 1;
                    continue;
                }
                let tables = changes
                    .entry(per_tenant.then(|| tenant_of(&key)))
                    .or_insert_with(|| ALL.iter().map(|_| Default::default()).collect());
                match slot {
                    Slot::Present { row, dirty: true } => tables[index].0.push(row),
                    Slot::Absent { dirty: true } => tables[index].1.push(key),
                    _ => {}
                }
            }
            rows.complete.clear();
        }
        self.held = kept;
        changes.retain(|_, tables| tables.iter().any(|(w, d)| !w.is_empty() || !d.is_empty()));
        WriteBack {
            dialect: self.dialect,
            changes,
        }
    }
}

/// The changed rows a batch handed over to be written, by tenant
/// ([`Batch::take_write_back`]).
pub(crate) struct WriteBack {
    dialect: Dialect,
    changes: Changes,
}

impl WriteBack {
    /// Writes the rows: per table, one multi-row upsert of the rows that exist and one
    /// multi-row delete of those that do not, for each group of up to
    /// [`TENANTS_PER_STATEMENT`] tenants on PostgreSQL (row-level security) and for all
    /// of them at once on SQLite. Returns how many statements it sent.
    pub(crate) async fn run(
        self,
        conn: &mut AnyConnection,
        scope: &mut TenantScope,
    ) -> Result<usize, sqlx::Error> {
        // On PostgreSQL the tenants go in groups, each named in `app.tenants` for the
        // statements that hold its rows: long enough a list to save the round trips,
        // short enough that checking a row against it stays cheap.
        let groups: Vec<Vec<(Option<String>, Vec<TableChanges>)>> = {
            let mut groups = Vec::new();
            let mut changes = self.changes.into_iter().peekable();
            while changes.peek().is_some() {
                groups.push(changes.by_ref().take(TENANTS_PER_STATEMENT).collect());
            }
            groups
        };
        let mut statements = 0;
        for group in groups {
            let tenants: Vec<&str> = group.iter().filter_map(|(t, _)| t.as_deref()).collect();
            if !tenants.is_empty() {
                scope.enter_several(conn, &tenants).await?;
                statements += 1;
            }
            let mut tables: Vec<TableChanges> = ALL.iter().map(|_| Default::default()).collect();
            for (_, per_table) in group {
                for (merged, (writes, deletes)) in tables.iter_mut().zip(per_table) {
                    merged.0.extend(writes);
                    merged.1.extend(deletes);
                }
            }
            for (table, (writes, deletes)) in ALL.iter().zip(tables) {
                statements += write_rows(conn, self.dialect, table, writes).await?;
                statements += delete_keys(conn, self.dialect, table, deletes).await?;
            }
        }
        Ok(statements)
    }
}

/// One table's part of a write-back: the rows to write and the keys to delete.
type TableChanges = (Vec<Row>, Vec<Key>);

/// A write-back's changes by tenant (on PostgreSQL; one entry for all on SQLite), each
/// with one [`TableChanges`] per table of [`ALL`].
type Changes = BTreeMap<Option<String>, Vec<TableChanges>>;

/// The tenant of a key: its first value.
fn tenant_of(key: &Key) -> String {
    match key.first() {
        Some(Value::Text(tenant)) => tenant.clone(),
        _ => String::new(),
    }
}

async fn write_rows(
    conn: &mut AnyConnection,
    dialect: Dialect,
    table: &Table,
    rows: Vec<Row>,
) -> Result<usize, sqlx::Error> {
    let rows = rows.into_iter().map(|row| row.values).collect();
    run_chunked(conn, table, table.columns.len(), rows, |n| {
        table.upsert(dialect, n)
    })
    .await
}

async fn delete_keys(
    conn: &mut AnyConnection,
    dialect: Dialect,
    table: &Table,
    keys: Vec<Key>,
) -> Result<usize, sqlx::Error> {
    run_chunked(conn, table, table.key, keys, |n| table.delete(dialect, n)).await
}

/// Runs `sql(n)` for each chunk of `n` tuples (of `width` leading columns of `table`),
/// as many as one statement takes, with the tuples' values bound in order. Returns
/// how many statements it ran.
async fn run_chunked(
    conn: &mut AnyConnection,
    table: &Table,
    width: usize,
    tuples: Vec<Vec<Value>>,
    sql: impl Fn(usize) -> String,
) -> Result<usize, sqlx::Error> {
    let per_statement = (MAX_PARAMETERS / width.max(1)).clamp(1, MAX_ROWS);
    let mut statements = 0;
    for chunk in tuples.chunks(per_statement) {
        let sql = sql(chunk.len());
        // A statement's text depends on its row count. Full chunks all share one text,
        // so those stay prepared on the connection (the server parses and plans them
        // once, not per statement: 15 % of a PostgreSQL rebuild's rate); the last,
        // shorter chunk of a write-back has a text of its own and is not kept.
        let mut query = sqlx::query(&sql).persistent(chunk.len() == per_statement);
        for tuple in chunk {
            for (value, column) in tuple.iter().zip(table.columns) {
                query = bind(query, value, column.kind);
            }
        }
        query.execute(&mut *conn).await?;
        statements += 1;
    }
    Ok(statements)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds `value`; a NULL is bound with the column's type, which PostgreSQL checks.
/// Text is bound by reference: sqlx's `Any` driver copies an owned `String` it is
/// given, and a borrowed `&str` it does not.
fn bind<'q>(query: AnyQuery<'q>, value: &'q Value, kind: Kind) -> AnyQuery<'q> {
    match (value, kind) {
        (Value::Int(v), _) => query.bind(*v),
        (Value::Text(v), _) => query.bind(v.as_str()),
        (Value::Null, Kind::Int) => query.bind(None::<i64>),
        (Value::Null, Kind::Text) => query.bind(None::<String>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReadModels;

    async fn sqlite() -> (tempfile::TempDir, ReadModels) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let models = ReadModels::open(&dir.path().join("read_models.db"))
            .await
            .expect("open SQLite read models");
        (dir, models)
    }

    fn text(v: &str) -> Value {
        Value::from(v)
    }

    fn timer(tenant: &str, key: &str) -> Row {
        let mut row = Row::new(&TIMERS, vec![text(tenant), text("post_publish"), text(key)]);
        row.set("subject", key)
            .set("due_at", "2026-12-01T00:00:00.000000Z");
        row
    }

    async fn timers(conn: &mut AnyConnection) -> Vec<(String, String, Option<i64>)> {
        sqlx::query_as(
            "SELECT tenant_id, timer_key, version FROM timers ORDER BY tenant_id, timer_key",
        )
        .fetch_all(conn)
        .await
        .expect("read timers")
    }

    #[tokio::test]
    async fn the_projector_knows_every_column_of_every_sqlite_read_model_table() {
        let (_dir, models) = sqlite().await;
        for table in ALL {
            let mut found: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                    .bind(table.name)
                    .fetch_all(models.pool())
                    .await
                    .expect("list columns");
            let mut described: Vec<String> =
                table.columns.iter().map(|c| c.name.to_owned()).collect();
            found.sort();
            described.sort();
            assert_eq!(found, described, "columns of {}", table.name);
        }
    }

    #[tokio::test]
    async fn a_flush_writes_changed_rows_deletes_removed_ones_and_leaves_read_ones_alone() {
        let (_dir, models) = sqlite().await;
        let mut conn = models.pool().acquire().await.expect("connection");
        let mut batch = Batch::new(Dialect::Sqlite);
        for key in ["a", "b", "c"] {
            batch.insert(timer("t1", key));
        }
        batch.insert(timer("t2", "a"));
        assert_eq!(
            batch.flush(&mut conn).await.expect("flush"),
            1,
            "one upsert for both tenants"
        );
        assert_eq!(batch.held(), 0);

        let mut batch = Batch::new(Dialect::Sqlite);
        let key = |tenant: &str, k: &str| vec![text(tenant), text("post_publish"), text(k)];
        // Read, changed, read but unchanged, deleted, and a delete of nothing.
        batch
            .update(&mut Lane::Borrowed(&mut conn), &TIMERS, key("t1", "a"))
            .await
            .expect("read")
            .expect("the row is there")
            .set("version", 7);
        let unchanged = batch
            .get(&mut Lane::Borrowed(&mut conn), &TIMERS, key("t1", "b"))
            .await
            .expect("read");
        assert_eq!(unchanged.and_then(|r| r.text("subject")), Some("b"));
        batch.delete(&TIMERS, key("t1", "c"));
        batch.delete(&TIMERS, key("t2", "nothing"));
        assert!(
            batch
                .update(
                    &mut Lane::Borrowed(&mut conn),
                    &TIMERS,
                    key("t2", "missing")
                )
                .await
                .expect("read")
                .is_none()
        );
        assert_eq!(batch.reads(), 3);
        assert_eq!(
            batch.flush(&mut conn).await.expect("flush"),
            2,
            "one upsert, one delete"
        );
        assert_eq!(
            timers(&mut conn).await,
            vec![
                ("t1".into(), "a".into(), Some(7)),
                ("t1".into(), "b".into(), None),
                ("t2".into(), "a".into(), None),
            ]
        );
    }

    #[tokio::test]
    async fn a_flush_of_more_rows_than_one_statement_takes_writes_them_all() {
        let (_dir, models) = sqlite().await;
        let mut conn = models.pool().acquire().await.expect("connection");
        let mut batch = Batch::new(Dialect::Sqlite);
        for n in 0..2_500 {
            batch.insert(timer("t", &format!("{n:05}")));
        }
        assert_eq!(
            batch.flush(&mut conn).await.expect("flush"),
            3,
            "1,000 rows a statement"
        );
        let mut batch = Batch::new(Dialect::Sqlite);
        for n in (0..2_500).step_by(2) {
            let key = vec![text("t"), text("post_publish"), text(&format!("{n:05}"))];
            batch.delete(&TIMERS, key);
        }
        assert_eq!(batch.flush(&mut conn).await.expect("flush"), 2);
        let left = timers(&mut conn).await;
        assert_eq!(left.len(), 1_250);
        assert!(
            left.iter()
                .all(|(_, key, _)| key.ends_with(['1', '3', '5', '7', '9']))
        );
    }

    #[tokio::test]
    async fn rows_kept_through_a_flush_are_written_and_need_no_second_read() {
        let (_dir, models) = sqlite().await;
        let mut conn = models.pool().acquire().await.expect("connection");
        let mut batch = Batch::new(Dialect::Sqlite);
        let month = vec![text("t"), text("2026-12")];
        batch
            .upsert(
                &mut Lane::Borrowed(&mut conn),
                &BUDGETS,
                month.clone(),
                |_| {},
            )
            .await
            .expect("read")
            .set("version", 1)
            .set("updated_at", "2026-12-01T00:00:00.000000Z")
            .add("committed_micros", 5);
        batch.insert(timer("t", "a"));
        assert_eq!(batch.reads(), 1);
        batch
            .flush_keeping(&mut conn, &[&BUDGETS])
            .await
            .expect("flush");
        assert_eq!(batch.held(), 1, "the month stays, the timer goes");
        let stored: i64 = sqlx::query_scalar("SELECT committed_micros FROM budgets")
            .fetch_one(&mut *conn)
            .await
            .expect("read back");
        assert_eq!(stored, 5);
        batch
            .update(&mut Lane::Borrowed(&mut conn), &BUDGETS, month)
            .await
            .expect("held")
            .expect("there")
            .add("committed_micros", 2);
        assert_eq!(batch.reads(), 1, "the kept row was not read again");
        assert_eq!(
            batch.flush(&mut conn).await.expect("flush"),
            1,
            "it was changed again"
        );
        let stored: i64 = sqlx::query_scalar("SELECT committed_micros FROM budgets")
            .fetch_one(&mut *conn)
            .await
            .expect("read back");
        assert_eq!(stored, 7);
    }

    #[tokio::test]
    async fn children_merges_the_rows_it_reads_with_the_newer_ones_it_holds() {
        let (_dir, models) = sqlite().await;
        let mut conn = models.pool().acquire().await.expect("connection");
        let target = |channel: &str, position: i64| {
            let mut row = Row::new(&POST_TARGETS, vec![text("t"), text("p"), text(channel)]);
            row.set("position", position);
            row
        };
        let mut batch = Batch::new(Dialect::Sqlite);
        batch.insert(target("one", 0));
        batch.insert(target("two", 1));
        batch.flush(&mut conn).await.expect("flush");

        let mut batch = Batch::new(Dialect::Sqlite);
        batch
            .update(
                &mut Lane::Borrowed(&mut conn),
                &POST_TARGETS,
                vec![text("t"), text("p"), text("two")],
            )
            .await
            .expect("read")
            .expect("there")
            .set("state", "published");
        batch.delete(&POST_TARGETS, vec![text("t"), text("p"), text("one")]);
        let prefix = vec![text("t"), text("p")];
        let rows = batch
            .children(
                &mut Lane::Borrowed(&mut conn),
                &POST_TARGETS,
                prefix.clone(),
            )
            .await
            .expect("children");
        assert_eq!(rows.len(), 1, "the deleted target is gone: {rows:?}");
        assert_eq!(
            rows[0].text("state"),
            Some("published"),
            "the held row wins"
        );
        // Listed once: a second call, and a missing child under it, read nothing.
        let reads = batch.reads();
        batch
            .children(&mut Lane::Borrowed(&mut conn), &POST_TARGETS, prefix)
            .await
            .expect("children");
        let missing = vec![text("t"), text("p"), text("three")];
        assert!(
            batch
                .get(&mut Lane::Borrowed(&mut conn), &POST_TARGETS, missing)
                .await
                .expect("get")
                .is_none()
        );
        assert_eq!(batch.reads(), reads);
    }

    #[test]
    fn statements_are_built_for_any_number_of_rows() {
        assert_eq!(placeholders(Dialect::Postgres, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(Dialect::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(placeholders(Dialect::Postgres, 0, 3), "");
        // Cut from one shared list, the text for any number of rows is the one built
        // for that number alone, past the list's first length too.
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            for rows in [1, 2, 999, MAX_ROWS, MAX_ROWS + 1, 2_500, 7] {
                for width in [1, 3, 11] {
                    let built = PlaceholderList::build(dialect, rows, width);
                    assert_eq!(built.ends.len(), rows);
                    assert_eq!(placeholders(dialect, rows, width), built.text);
                }
            }
        }
        assert!(placeholders(Dialect::Postgres, 2_500, 2).ends_with("($4999, $5000)"));
        assert_eq!(
            TIMERS.delete(Dialect::Postgres, 1),
            "DELETE FROM timers WHERE (tenant_id, kind, timer_key) IN (VALUES ($1, $2, $3))"
        );
        assert!(BUDGETS.upsert(Dialect::Sqlite, 1).ends_with(
            "ON CONFLICT (tenant_id, period) DO UPDATE SET soft_limit_micros = excluded.soft_limit_micros, \
             hard_limit_micros = excluded.hard_limit_micros, alert_thresholds_pct = excluded.alert_thresholds_pct, \
             committed_micros = excluded.committed_micros, reserved_micros = excluded.reserved_micros, \
             overrun_micros = excluded.overrun_micros, thresholds_crossed = excluded.thresholds_crossed, \
             inherited_from = excluded.inherited_from, limits_set = excluded.limits_set, \
             version = excluded.version, updated_at = excluded.updated_at"
        ));
    }
}
