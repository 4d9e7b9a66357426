//! Rebuild: recreate every read model from a log of a million events, and report the
//! rate and the peak resident memory of the process that did it.
//!
//! The fixture log is written first (see `fixture`). The rebuild then runs in a child
//! process — this same binary, `tidemark bench rebuild --child-data-dir DIR` — so its
//! peak resident memory (`VmHWM`) is the rebuild's own and not the benchmark's. When
//! the benchmark is not running as the `tidemark` binary (the smoke test runs it inside
//! a test harness) the rebuild runs in-process and the peak is the whole process's,
//! which the row says.
//!
//! The baseline, measured by the same process just before the rebuild, is reading the
//! whole log through the store in the projector's batch size: a rebuild cannot be
//! faster than reading what it applies.
//!
//! On the production target the fixture is in a PostgreSQL database of its own; the
//! child gets that database's URLs as `TIDEMARK_DATABASE__URL` and `__APP_URL`, as
//! `tidemark projections rebuild` would, and rebuilds the PostgreSQL read models in the
//! same database from the PostgreSQL store, as the runtime role.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use eventlog::EventStore;
use projector::Projector;
use serde::{Deserialize, Serialize};

use crate::app::{Embedded, Stores};
use crate::settings::Settings;

use super::fixture::FixturePlan;
use super::load::Progress;
use super::report::{Row, ratio};
use super::target::Target;

/// Events per read, the projector's default batch size.
const READ_BATCH: usize = 1_000;
/// Tenants the fixture spreads over.
const TENANTS: usize = 1_000;

/// What the process that rebuilt reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildFigures {
    /// Events read by the baseline pass, and how long it took.
    pub events_read: u64,
    pub read_secs: f64,
    /// Events the rebuild applied, and how long it took.
    pub applied: u64,
    pub rebuild_secs: f64,
    /// Peak resident memory (`VmHWM`), in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Resident memory when the process started measuring, in KiB.
    pub start_rss_kib: Option<u64>,
}

/// Writes `events` fixture events, rebuilds the read models from them, and reports.
pub async fn run(
    target: &dyn Target,
    settings: &Settings,
    events: u64,
) -> anyhow::Result<Vec<Row>> {
    let progress = Progress::start(format!("rebuild: writing {events} fixture events"), None);
    let started = Instant::now();
    let fixture = target
        .fixture_store(
            &FixturePlan::Mixed {
                events,
                tenants: TENANTS,
            },
            &progress,
        )
        .await?;
    drop(progress);
    let fixture_secs = started.elapsed().as_secs_f64();

    let in_child = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s == "tidemark"))
        .unwrap_or(false);
    let figures = if in_child {
        run_child(&fixture.data_dir, fixture.database.as_ref()).await?
    } else {
        measure(settings, &fixture.data_dir, fixture.database.as_ref()).await?
    };
    drop(fixture);

    let read_rate = figures.events_read as f64 / figures.read_secs.max(1e-9);
    let rebuild_rate = figures.applied as f64 / figures.rebuild_secs.max(1e-9);
    let mut read = empty_row("read the whole log (baseline)", figures.events_read);
    read.rate = Some(read_rate);
    read.note(format!(
        "fixture written at {:.0} events/s",
        events as f64 / fixture_secs.max(1e-9)
    ));
    let mut rebuild = empty_row("rebuild every read model", figures.applied);
    rebuild.rate = Some(rebuild_rate);
    rebuild.rate_ratio = ratio(Some(rebuild_rate), Some(read_rate));
    rebuild.baseline = "log read rate".to_owned();
    let mib = |kib: Option<u64>| {
        kib.map_or_else(
            || "?".to_owned(),
            |k| format!("{:.0} MiB", k as f64 / 1024.0),
        )
    };
    rebuild.note(format!(
        "peak RSS {} ({}; {} at start)",
        mib(figures.peak_rss_kib),
        if in_child {
            "child process"
        } else {
            "in-process: the whole benchmark's peak"
        },
        mib(figures.start_rss_kib),
    ));
    rebuild.note(format!("{:.1} s", figures.rebuild_secs));
    if figures.applied != events {
        rebuild.errors = 1;
        rebuild.note(format!("applied {} of {events} events", figures.applied));
    }
    Ok(vec![read, rebuild])
}

fn empty_row(case: &str, count: u64) -> Row {
    Row {
        workload: "rebuild".to_owned(),
        case: case.to_owned(),
        concurrency: None,
        count,
        rate: None,
        unit: "events/s".to_owned(),
        p50_ms: None,
        p99_ms: None,
        p999_ms: None,
        errors: 0,
        rejected: 0,
        rate_ratio: None,
        latency_ratio: None,
        baseline: String::new(),
        note: String::new(),
    }
}

/// Runs the measurement in a child process of this binary and reads its figures.
async fn run_child(
    data_dir: &Path,
    database: Option<&(String, String)>,
) -> anyhow::Result<ChildFigures> {
    let exe = std::env::current_exe().context("failed to find the tidemark binary")?;
    let data_dir = data_dir.to_path_buf();
    let database = database.cloned();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(exe);
        // The fixture's database, or none: never one from the benchmark's environment.
        command
            .env_remove("TIDEMARK_DATABASE__URL")
            .env_remove("TIDEMARK_DATABASE__APP_URL");
        if let Some((owner, app)) = &database {
            command
                .env("TIDEMARK_DATABASE__URL", owner)
                .env("TIDEMARK_DATABASE__APP_URL", app);
        }
        command
            .arg("bench")
            .arg("rebuild")
            .arg("--child-data-dir")
            .arg(&data_dir)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
    })
    .await
    .context("the rebuild child's waiter ended abnormally")?
    .context("failed to run the rebuild child process")?;
    anyhow::ensure!(
        output.status.success(),
        "the rebuild child process failed ({})",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the rebuild child printed no figures")?;
    serde_json::from_str(last).context("the rebuild child's figures are not readable")
}

/// The child's side: read the log, rebuild, report figures as one JSON line. With
/// `database.url` set (the production target) the stores are PostgreSQL.
pub async fn child_main(settings: &Settings, data_dir: &Path) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let database = match (&settings.database.url, &settings.database.app_url) {
        (Some(owner), Some(app)) => Some((
            owner.expose_secret().to_owned(),
            app.expose_secret().to_owned(),
        )),
        _ => None,
    };
    let figures = measure(settings, data_dir, database.as_ref()).await?;
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// Reads the whole log, then rebuilds the read models of the deployment in `data_dir`,
/// or in the PostgreSQL database `database` (owner URL, runtime URL).
async fn measure(
    settings: &Settings,
    data_dir: &Path,
    database: Option<&(String, String)>,
) -> anyhow::Result<ChildFigures> {
    let start_rss_kib = status_kib("VmRSS");
    let mut settings = settings.clone();
    settings.data_dir = data_dir.to_path_buf();
    settings.database = Default::default();
    settings.kafka = Default::default();
    let (store, models) = match database {
        Some((owner, app)) => {
            settings.database.url = Some(owner.clone().into());
            settings.database.app_url = Some(app.clone().into());
            let stores = Stores::open(&settings).await?;
            (stores.store, stores.models)
        }
        None => {
            let embedded = Embedded::open(&settings).await?;
            let store: Arc<dyn EventStore> = Arc::new(embedded.store.clone());
            (store, embedded.models.clone())
        }
    };

    let progress = Progress::start("rebuild: reading the log (baseline)".to_owned(), None);
    let counters = progress.counters();
    let started = Instant::now();
    let mut from = 0;
    let mut events_read = 0u64;
    loop {
        let batch = store
            .read_all(from, READ_BATCH)
            .await
            .context("failed to read the log")?;
        let Some(last) = batch.last() else {
            break;
        };
        from = last.global_position;
        events_read += batch.len() as u64;
        counters.add(batch.len() as u64);
    }
    let read_secs = started.elapsed().as_secs_f64();
    drop(progress);

    let progress = Progress::start("rebuild: rebuilding the read models".to_owned(), None);
    let counters = progress.counters();
    let projector = Projector::new(store, models);
    let started = Instant::now();
    let applied = projector
        .rebuild(|done, _head| counters.set(done))
        .await
        .context("failed to rebuild the read models")?;
    let rebuild_secs = started.elapsed().as_secs_f64();
    drop(progress);
    Ok(ChildFigures {
        events_read,
        read_secs,
        applied: applied as u64,
        rebuild_secs,
        peak_rss_kib: status_kib("VmHWM"),
        start_rss_kib,
    })
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`), where Linux provides it.
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}
