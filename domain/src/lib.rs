//! The pure heart of Tidemark: aggregates, their commands, events and rules.
//!
//! Every aggregate is a Decider: `decide(&State, Command, &Ctx) -> Result<Vec<Event>, Rejection>`
//! turns a request into facts, and `evolve(State, &Event) -> State` folds facts into state.
//! Nothing in this crate performs IO, reads a clock or draws a random number: the time,
//! new ids and looked-up facts arrive in the command or in a context value. That is what
//! lets the same code run in the HTTP handler, in replay and in property tests.
//!
//! Architecture invariant: this crate depends on no IO crate (no tokio, sqlx, actix,
//! serde). `tests/no_io_dependencies.rs` fails the build's tests when one appears.

pub mod budget;
pub mod generation;
pub mod ids;
pub mod post;
pub mod pricing;

pub use ids::{
    CampaignId, Channel, GenerationId, Micros, Period, PostId, ReservationId, StreamName, TenantId,
    ValueError,
};
