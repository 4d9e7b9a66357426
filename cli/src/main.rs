//! `tidemark`: parse the command line, start telemetry, run. Nothing else lives here.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc for the whole process. The projector, the command
/// path and the relay allocate many small, short-lived values (rows, keys, JSON); in
/// a profile of a PostgreSQL rebuild, glibc's malloc and free were two thirds of the
/// process's CPU samples (docs/benchmarks.md, "The allocator"). Version 2 returns
/// freed memory to the system after 10 ms; version 3, which holds it for a second,
/// raised a rebuild's peak resident memory from 109 to 194 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("TIDEMARK_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    match cli::run(cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
