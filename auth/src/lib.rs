//! Who is calling, for which tenant, with which role — and how to say no.
//!
//! Both HTTP edges (`command-api`, `query-api`) and the `tidemark token` command need
//! the same bearer-token rules, and both answer failures with the same RFC 9457
//! problem body, so the two live here rather than twice. The tenant always comes from
//! the verified token, never from a request body or path. [`webhooks`] signs and
//! verifies Standard Webhooks, the other way a caller proves who it is.

pub mod problem;
mod token;
pub mod webhooks;

pub use problem::Problem;
pub use token::{AuthError, Authenticator, Claims, Principal, Role, TokenSettings};
