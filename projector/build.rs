//! Rebuilds the crate when a migration is added or changed.
//!
//! `sqlx::migrate!` embeds the files under `migrations/` at compile time, and Cargo
//! does not know about them on its own; without this a new migration would be
//! silently missing from the binary until some Rust file changed.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
