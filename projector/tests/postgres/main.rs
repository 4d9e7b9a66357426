//! The read models on PostgreSQL: they answer every query exactly as the SQLite read
//! models do for the same log, survive rebuilds and racing projectors, and hold
//! tenants apart with row-level security even against raw SQL from the runtime role.
//!
//! Needs a PostgreSQL server (see `support` for which); every test makes a database
//! of its own and drops it afterwards.

#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod equivalence;
mod isolation;
mod plans;
mod support;
