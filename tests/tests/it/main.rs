//! End-to-end tests of the embedded deployment: one test binary, each test with its
//! own application on port 0 and its own data directory.

mod api;
mod budget_concurrency;
mod errors;
mod generation;
mod isolation;
mod openapi;
mod probe;
mod production;
mod production_support;
mod publishing;
mod snapshots;
mod support;
mod workflows;
