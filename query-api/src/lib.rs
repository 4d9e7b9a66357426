//! The query side: read models over HTTP, scoped to the caller's tenant.
//!
//! Every route takes the tenant from the verified token and reads through
//! [`projector::ReadModels`]. `?min_position=N` gives read-your-writes: the query
//! waits (bounded) until the read models include position N, the `position` a
//! command answered with, or answers `consistency_timeout`.

mod error;
mod generations;
mod http;
pub mod openapi;

pub use error::QueryError;
pub use generations::UsageReport;
pub use http::{QueryApi, configure};
