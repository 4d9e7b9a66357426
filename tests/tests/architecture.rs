//! Architecture invariants, checked as ordinary tests ("tidy" rules).
//!
//! ARCHITECTURE.md states what must be absent where; these tests fail the build when
//! the code stops matching it.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dependencies(krate: &str) -> Vec<String> {
    let manifest = fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("manifest");
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once('=') {
            deps.push(name.trim().to_owned());
        }
    }
    deps
}

fn sources(krate: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).expect("source");
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(krate).join("src"), &mut out);
    out
}

#[test]
fn the_http_crates_reach_the_database_only_through_eventlog_and_read_models() {
    for krate in ["command-api", "query-api", "auth"] {
        let deps = dependencies(krate);
        for forbidden in ["sqlx", "rusqlite", "tokio-postgres", "rdkafka"] {
            assert!(
                !deps.iter().any(|d| d == forbidden),
                "{krate} depends on {forbidden}; go through eventlog or projector::ReadModels"
            );
        }
    }
}

#[test]
fn only_the_command_side_appends_events() {
    let crates = [
        "auth",
        "projector",
        "query-api",
        "workflows",
        "cli",
        "schemas",
        "domain",
    ];
    for krate in crates {
        for (path, text) in sources(krate) {
            assert!(
                !text.contains("AppendRequest"),
                "{} builds an AppendRequest; only command-api appends events",
                path.display()
            );
        }
    }
}

#[test]
fn only_the_command_side_reads_snapshots() {
    // A snapshot is a cache of the command side's fold: nothing that builds read
    // models, answers queries or reacts to events may start from one.
    for krate in ["projector", "query-api", "workflows", "auth", "domain"] {
        for (path, text) in sources(krate) {
            for read in [
                "load_snapshot",
                "read_stream_from_snapshot",
                "states::decode",
            ] {
                assert!(
                    !text.contains(read),
                    "{} calls {read}; only command-api's cold load reads snapshots",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_domain_has_no_async_and_reads_no_clock() {
    for (path, text) in sources("domain") {
        for forbidden in [
            "async fn",
            ".await",
            "Utc::now",
            "SystemTime",
            "Instant::now",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} contains {forbidden:?}; the domain is pure",
                path.display()
            );
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let crates = [
        "domain",
        "schemas",
        "eventlog",
        "auth",
        "command-api",
        "projector",
        "workflows",
        "query-api",
        "cli",
    ];
    for krate in crates {
        for (path, text) in sources(krate) {
            assert!(
                text.trim_start().starts_with("//!"),
                "{} does not open with a //! paragraph saying why it exists",
                path.display()
            );
        }
    }
}

#[test]
fn every_crate_directory_is_named_like_its_package_and_unpublished() {
    let workspace = fs::read_to_string(root().join("Cargo.toml")).expect("workspace manifest");
    assert!(
        workspace.contains("publish = false"),
        "internal crates must not be publishable"
    );
    for krate in [
        "domain",
        "schemas",
        "eventlog",
        "auth",
        "command-api",
        "projector",
        "workflows",
        "query-api",
        "cli",
        "tests",
    ] {
        let manifest = fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("manifest");
        assert!(
            manifest.contains(&format!("name = \"{krate}\"")),
            "{krate}/Cargo.toml must name its package {krate}"
        );
        assert!(
            manifest.contains("publish.workspace = true"),
            "{krate} must inherit publish = false"
        );
    }
}
