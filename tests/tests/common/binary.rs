//! The `tidemark` binary, for tests that run it as a process of its own. `scripts/test`
//! builds it (`cargo build --bin tidemark`) before the tests run.

use std::path::{Path, PathBuf};

/// The `tidemark` binary next to the test binary (`target/<profile>/tidemark`).
pub fn tidemark_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let binary = profile_dir.join("tidemark");
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build --bin tidemark`",
        binary.display()
    );
    binary
}
