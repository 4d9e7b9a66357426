//! `scripts/kafka`, for tests that start or prepare a broker with it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `scripts/kafka` with `args` (through bash, as the README does).
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka");
    Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run scripts/kafka")
}

/// Runs `scripts/kafka` with `args`, fails the test unless it succeeds, and returns
/// the value of the `key=value` line it prints for `key`.
pub fn run_for<I, S>(args: I, key: &str) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scripts/kafka failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("scripts/kafka printed no {key}: {stdout}"))
        .to_owned()
}
