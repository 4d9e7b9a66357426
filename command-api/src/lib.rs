//! The command side: the only part of Tidemark that appends events.
//!
//! [`service::CommandService`] runs domain commands against the event store (load,
//! decide, append, retry); [`http`] is the thin actix-web edge that authenticates,
//! validates and plans requests into those commands; [`webhooks`] is the edge where
//! networks call back, trusted by signature instead of token. Workflows use the service
//! directly, never the event store, so every append passes through one loop.

mod aggregate;
pub mod clock;
pub mod commands;
pub mod error;
pub mod generation;
pub mod http;
pub mod openapi;
pub mod service;
pub mod webhooks;

pub use clock::{Clock, SystemClock};
pub use error::ApiError;
pub use generation::{AiPolicy, RateLimit, TenantPolicy};
pub use http::{CommandApi, configure};
pub use service::{
    ColdLoad, CommandError, CommandService, Done, Envelope, GenerateRequest, ReservationState,
    SNAPSHOT_EVERY,
};
pub use webhooks::{InboundWebhooks, configure_webhooks};
