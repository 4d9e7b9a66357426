//! The wire format of everything Tidemark stores or accepts: events and HTTP command bodies.
//!
//! The `domain` crate has no serde on purpose, so that a renamed Rust field can never
//! silently change what is on disk. This crate owns the mapping instead: every event
//! type has versioned DTOs (`BudgetReservedV1`, …) that spell out the stored JSON, and
//! conversions to and from the domain types that validate every value object through
//! the domain's checked constructors. Command bodies are DTOs too, and their JSON
//! Schemas feed the public API documentation.
//!
//! # Events
//!
//! An event is stored as `(type, schema_version, data)`. [`encode`] always writes the
//! latest version; [`decode`] reads any version ever written and upcasts older ones to
//! the latest before converting to the domain event. A stored `(type, schema_version)`
//! never changes: a checked-in JSON Schema (`json/events/<type>.v<N>.json`) and a
//! hand-written golden example (`golden/<type>.v<N>.json`) per version make sure of
//! it, and tests fail on drift. [`EVENT_TYPES`] lists each type's latest version,
//! [`event_versions`] every version a reader accepts, and [`event_schema`] the JSON
//! Schema of each.
//!
//! ## Adding version 2 of an event
//!
//! Say `budget.reserved` gains a field. Never edit `BudgetReservedV1`; instead:
//!
//! 1. Add `BudgetReservedV2` next to V1 in `src/events/budget.rs`, with
//!    `#[serde(deny_unknown_fields)]`, `Serialize`, `Deserialize`, `JsonSchema`, and
//!    implement `Version` for it (`EVENT_TYPE = RESERVED`, `VERSION = 2`).
//! 2. Move V1's `Latest` impl (the conversion to the domain event) to V2, and give V1 an
//!    `Upcast` impl instead: `type Next = BudgetReservedV2` and `fn upcast(self) -> V2`,
//!    which fills the new field with the value old events mean. The compiler then points
//!    at `encode` and [`EVENT_TYPES`], which only accept latest DTOs: switch both to V2.
//! 3. In the registry table in `src/events.rs`, change `Entry::latest::<BudgetReservedV1>()`
//!    to `Entry::upcast::<BudgetReservedV1>()` and add `Entry::latest::<BudgetReservedV2>()`.
//!    The table is checked while compiling: an upcaster must lead to version + 1 of
//!    the same type. (For the very first upcaster, also drop the `expect(dead_code)`
//!    on `Entry::upcast`; the compiler says so.)
//! 4. Write `golden/budget.reserved.v2.json` by hand, run
//!    `TIDEMARK_BLESS=1 cargo test -p schemas` to generate `json/events/budget.reserved.v2.json`,
//!    and check that the V1 files did not change.
//!
//! [`decode`] then routes `(budget.reserved, 1)` through V1's upcaster to V2 and on to the
//! domain; a chain of several upcasters works the same way, one version at a time.
//!
//! # Commands
//!
//! [`commands`] holds the request bodies of the command API, their kebab-case names in
//! [`commands::COMMANDS`] and [`commands::command_schema`] for the OpenAPI document.
//! They only describe shape; the business rules stay in `domain::decide`.
//!
//! # States
//!
//! [`states`] holds the stored form of an aggregate's folded state, which snapshots
//! keep (`budget.state`, `post.state`): versioned, with JSON Schemas under `json/states/` and golden files under
//! `golden/states/`, but without upcasters, because a snapshot is a cache that a
//! reader of another version simply ignores.

pub mod commands;
mod error;
mod events;
mod registry;
pub mod states;

pub use error::DecodeError;
pub use events::{DomainEvent, EVENT_TYPES, Encoded, decode, encode, event_schema, event_versions};
