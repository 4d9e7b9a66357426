//! Architecture invariant: the domain crate does no IO, reads no clock and draws no
//! random number.
//!
//! That purity is what lets the same `decide` run in a request handler, in a replay and
//! in a property test with the same answer. It is easy to lose by adding one
//! dependency or one `Utc::now()`, so these tidy checks run with the ordinary tests and
//! name what they found.

use std::fs;
use std::path::{Path, PathBuf};

/// Crates that perform IO, run an async runtime or define a wire format. A wire format
/// belongs to `schemas`, not to the domain.
const FORBIDDEN_DEPENDENCIES: &[&str] = &[
    "tokio",
    "sqlx",
    "actix-web",
    "actix-rt",
    "rdkafka",
    "reqwest",
    "hyper",
    "serde",
    "serde_json",
    "async-std",
    "mio",
    "rusqlite",
    "aws-sdk-s3",
];

/// Ways to read the time or a random source behind the caller's back.
const FORBIDDEN_CALLS: &[&str] = &["Utc::now", "SystemTime::now", "rand::"];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every dependency table of the manifest that ends up in the library: plain
/// `[dependencies]` and any `[target.'cfg(..)'.dependencies]`.
fn dependency_names(manifest: &toml::Table) -> Vec<String> {
    let mut tables: Vec<&toml::Table> = manifest
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .into_iter()
        .collect();
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        tables.extend(
            targets
                .values()
                .filter_map(|t| t.get("dependencies"))
                .filter_map(toml::Value::as_table),
        );
    }
    tables
        .into_iter()
        .flat_map(|table| {
            table.iter().map(|(key, spec)| {
                // `alias = { package = "real-name" }` renames a crate; judge the real one.
                spec.get("package")
                    .and_then(toml::Value::as_str)
                    .unwrap_or(key)
                    .to_owned()
            })
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_domain_crate_depends_on_no_io_runtime_or_wire_format_crate() {
    let path = crate_dir().join("Cargo.toml");
    let text = fs::read_to_string(&path).expect("the domain manifest is readable");
    let manifest: toml::Table = text.parse().expect("the domain manifest is valid TOML");
    let names = dependency_names(&manifest);
    assert!(
        names.iter().any(|n| n == "chrono"),
        "the manifest was not read as expected: dependencies {names:?}"
    );
    let found: Vec<&String> = names
        .iter()
        .filter(|n| FORBIDDEN_DEPENDENCIES.contains(&n.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "{} must not depend on {found:?}: the domain stays free of IO (see lib.rs)",
        path.display()
    );
}

#[test]
fn the_domain_source_never_reads_the_clock_or_a_random_source() {
    let mut files = Vec::new();
    rust_files(&crate_dir().join("src"), &mut files);
    assert!(!files.is_empty(), "no source files found under src/");
    let mut found = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            for call in FORBIDDEN_CALLS {
                if line.contains(call) {
                    found.push(format!("{}:{}: {call}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the time and random values must arrive in the command or Ctx:\n{}",
        found.join("\n")
    );
}
