//! Integration tests of the `schemas` crate, in one binary so they link once.
//!
//! They check the crate from the outside, the way the event log and the command API use
//! it: checked-in files against what the code generates, golden examples of every
//! stored version, round trips of every event, and refusal of bad input.

mod checked_in_schemas;
mod commands;
mod golden;
mod rejections;
mod round_trip;
mod states;

use std::path::PathBuf;

/// A path inside the `schemas` crate directory.
fn crate_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The names of the files directly inside a crate directory (not its subdirectories),
/// sorted.
fn file_names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(crate_path(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {dir}: {e}"));
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            (!is_dir).then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}
