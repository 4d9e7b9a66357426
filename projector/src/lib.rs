//! Builds the read models from the event log, and answers queries over them.
//!
//! [`Projector`] tails the store's global log and applies each batch of events to
//! the read-model database in one transaction that also moves its checkpoint, so a
//! crash can never apply an event twice or skip one. [`ReadModels`] is the only way
//! anything reads those tables: the query API and the workflows go through it.
//!
//! The read models live in SQLite (the embedded default, [`ReadModels::open`]) or in
//! PostgreSQL (production, [`ReadModels::connect_postgres`]), where row-level security
//! confines every transaction to the tenant it names. Both run the same SQL text; the
//! few differences are in [`Dialect`].

mod apply;
mod batch;
mod dialect;
pub mod generations;
pub mod kafka;
mod projector;
pub mod readmodel;

pub use dialect::{Dialect, POSTGRES_SCHEMA};
pub use generations::{GenerationView, UsageGroup, UsageRow};
pub use projector::{Outcome, ProjectError, Projector, READ_MODELS};
pub use readmodel::{
    BudgetView, DeliveryAttemptView, DeliveryView, DueTimer, OpenDelivery, PostFilter, PostPage,
    PostView, ReadModels, ReservationStatus, ReservationView, TargetView, TimerCursor, TimerKind,
};

/// The columns the projector writes in each read-model table, in order, as
/// `batch.rs` describes them: for the tests that check them against the migrated
/// tables of both databases.
#[doc(hidden)]
pub fn described_tables() -> Vec<(&'static str, Vec<&'static str>)> {
    batch::ALL
        .iter()
        .map(|t| (t.name, t.columns.iter().map(|c| c.name).collect()))
        .collect()
}

/// The tenant tables, in the order `row_counts` reports them.
pub(crate) const TABLES: [&str; 7] = [
    "budgets",
    "reservations",
    "posts",
    "post_targets",
    "generations",
    "generation_attempts",
    "timers",
];
