//! Builds the read models from the event log, and answers queries over them.
//!
//! [`Projector`] tails the store's global log and applies each batch of events to
//! the read-model database in one transaction that also moves its checkpoint, so a
//! crash can never apply an event twice or skip one. [`ReadModels`] is the only way
//! anything reads those tables: the query API and the workflows go through it.

mod apply;
mod projector;
pub mod readmodel;

pub use projector::{Outcome, Projector, READ_MODELS};
pub use readmodel::{
    BudgetView, PostFilter, PostPage, PostView, ReadModels, ReservationStatus, ReservationView,
};
