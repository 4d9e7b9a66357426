//! `tidemark bench <workload>`: reproducible throughput, latency, lag, rebuild and
//! history-cost figures, each next to a baseline measured in the same run.
//!
//! The machines this runs on are shared and noisy, so a number alone means little; what
//! travels is the ratio to a baseline taken minutes earlier on the same machine (the
//! raw one-row-per-transaction insert rate for commands, a plain GET for projection
//! lag, reading the log for a rebuild, a short stream for decide cost). Latencies come
//! from HDR histograms and count from the intended send time (see `load`).
//!
//! Two targets (see [`target`]): the embedded deployment, and with `--target production`
//! separate `tidemark serve` processes on PostgreSQL and Kafka, whose baselines are the
//! raw PostgreSQL insert rate and the raw Kafka produce rate. `docs/benchmarks.md` has
//! the commands, the machine and the latest table.

mod baseline;
mod commands;
mod cpu;
mod fixture;
mod history;
mod lag;
mod load;
mod production;
mod rebuild;
pub mod report;
pub mod target;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::settings::Settings;

use self::load::Progress;
use self::report::{Report, Row, ratio};
use self::target::{Target, TargetKind};

/// The arguments of `tidemark bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub workload: Workload,
    /// What to measure it on. `production` needs PostgreSQL and a Kafka-API broker.
    #[arg(long, value_enum, default_value_t = TargetKind::Embedded)]
    pub target: TargetKind,
    /// Seconds per workload [default: 60, or 6 with --quick]. A workload with several
    /// cases (concurrency levels) splits it between them.
    #[arg(long)]
    pub duration: Option<u64>,
    /// A smoke run of the harness: every workload shrunk, all of them in under two
    /// minutes. Its figures mean nothing.
    #[arg(long)]
    pub quick: bool,
    /// Concurrency levels of the command and baseline workloads.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Run the command workloads open-loop at this many operations per second instead
    /// of as fast as they go (latency then includes any queueing).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Commands per second for projection-lag [default: half the highest create-post
    /// rate measured in this run, measured first if need be].
    #[arg(long)]
    pub lag_rate: Option<f64>,
    /// projection-lag measures the lag of one command in this many; the others are
    /// only sent. A lag read is a second request, so reading after every command (1)
    /// doubles the load the workload is meant to hold at half the maximum.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub lag_sample: u64,
    /// Events to store and rebuild [default: 1,000,000, or 20,000 with --quick].
    #[arg(long)]
    pub events: Option<u64>,
    /// Length of the long stream of decide-vs-history [default: 100,000, or 10,000
    /// with --quick]; the short one has 1,000.
    #[arg(long)]
    pub history: Option<u64>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where the temporary databases go [default: the system's temporary directory].
    /// Must be a real disk: on a RAM disk an fsync costs nothing.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Internal: run the rebuild measurement on this data directory and print its
    /// figures (the rebuild workload starts this binary so).
    #[arg(long, hide = true)]
    pub child_data_dir: Option<PathBuf>,
}

/// A benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Every workload below, in this order.
    All,
    /// The raw one-row-per-transaction insert rate the command figures are divided by
    /// (and, on production, the raw Kafka produce rate).
    Baseline,
    /// create-post over 1,000 tenants and reserve+commit on one hot tenant, over HTTP.
    Commands,
    /// Time from a command's answer to its effect in the read model, at half load.
    ProjectionLag,
    /// Rebuild the read models from a million stored events.
    Rebuild,
    /// One more command on a stream of 1,000 versus 100,000 events.
    DecideVsHistory,
}

impl Workload {
    fn includes(self, other: Workload) -> bool {
        self == Workload::All || self == other
    }
}

/// Sizes of a run, after defaults and `--quick`.
struct Plan {
    duration: Duration,
    events: u64,
    short_history: u64,
    long_history: u64,
    reps: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let quick = args.quick;
        Self {
            duration: Duration::from_secs(args.duration.unwrap_or(if quick { 6 } else { 60 })),
            events: args
                .events
                .unwrap_or(if quick { 20_000 } else { 1_000_000 }),
            short_history: 1_000,
            long_history: args.history.unwrap_or(if quick { 10_000 } else { 100_000 }),
            // Fifteen cold loads: the ratio is of two medians, and five let one slow
            // load on a busy machine move it (2.02× once, 1.26× in the next run).
            reps: if quick { 3 } else { 15 },
        }
    }
}

/// Runs `tidemark bench`: measures, prints the table on stdout, writes `--json`.
pub async fn run(args: BenchArgs, settings: Settings) -> anyhow::Result<Report> {
    if let Some(dir) = &args.child_data_dir {
        anyhow::ensure!(
            args.workload == Workload::Rebuild,
            "--child-data-dir is only for the rebuild workload"
        );
        rebuild::child_main(&settings, dir).await?;
        return Ok(empty_report(&args, &Plan::new(&args)));
    }
    anyhow::ensure!(
        !args.concurrency.is_empty(),
        "--concurrency needs at least one level"
    );
    anyhow::ensure!(
        args.concurrency.iter().all(|&c| (1..=4_096).contains(&c)),
        "--concurrency levels must be between 1 and 4096"
    );
    if let Some(rate) = args.rate.or(args.lag_rate) {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "rates must be positive");
    }
    let plan = Plan::new(&args);
    anyhow::ensure!(
        plan.duration >= Duration::from_secs(1),
        "--duration must be at least 1 s"
    );
    if cfg!(debug_assertions) {
        eprintln!("note: this is a debug build; its figures only show that the harness works");
    }
    if tracing::enabled!(tracing::Level::INFO) {
        eprintln!(
            "note: info-level logs are on and every request logs lines, which costs \
             throughput; RUST_LOG=warn gives figures without that cost"
        );
    }

    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("tidemark-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("failed to create a work directory in {}", parent.display()))?;
    let target = target::target(args.target, &settings, work.path())?;

    // Ctrl-C or SIGTERM ends the run early: the workload in flight is dropped, and
    // with it and the target every `serve` child (killed on drop), temporary database
    // (dropped by its guard) and file the run made, as on any other error.
    let measured = tokio::select! {
        measured = measure(&args, &plan, &settings, target.as_ref()) => measured,
        signal = crate::app::shutdown_signal() => {
            signal?;
            anyhow::bail!(
                "interrupted: stopped the benchmark's processes and removed its temporary \
                 databases and files"
            );
        }
    };
    target.finish().await;
    let mut report = measured?;
    link_baselines(&mut report.rows);
    report.load_after = report::load_average();
    println!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(report)
}

/// Runs every workload `args` asks for against `target`, in order.
async fn measure(
    args: &BenchArgs,
    plan: &Plan,
    settings: &Settings,
    target: &dyn Target,
) -> anyhow::Result<Report> {
    let mut report = empty_report(args, plan);
    let workload = args.workload;
    let share = plan.duration;

    if workload.includes(Workload::Baseline) {
        let rows = baselines(target, &args.concurrency, share).await?;
        report.rows.extend(rows);
    }
    let mut max_create_post_rate = None;
    if workload.includes(Workload::Commands) {
        let figures = commands::run(target, &args.concurrency, share, args.rate).await?;
        if figures.max_create_post_rate > 0.0 {
            max_create_post_rate = Some(figures.max_create_post_rate);
        }
        report.rows.extend(figures.rows);
    }
    if workload.includes(Workload::ProjectionLag) {
        let rate = match (args.lag_rate, max_create_post_rate) {
            (Some(rate), _) => rate,
            (None, Some(max)) => max / 2.0,
            (None, None) => {
                let top = args.concurrency.iter().copied().max().unwrap_or(16);
                let probe = (share / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
                commands::max_create_post_rate(target, top, probe).await? / 2.0
            }
        };
        report
            .rows
            .extend(lag::run(target, rate.max(1.0), args.lag_sample, share).await?);
    }
    if workload.includes(Workload::Rebuild) {
        report
            .rows
            .extend(rebuild::run(target, settings, plan.events).await?);
    }
    if workload.includes(Workload::DecideVsHistory) {
        let rows = history::run(target, plan.short_history, plan.long_history, plan.reps).await?;
        report.rows.extend(rows);
    }

    Ok(report)
}

fn empty_report(args: &BenchArgs, plan: &Plan) -> Report {
    Report {
        target: match args.target {
            TargetKind::Embedded => "embedded",
            TargetKind::Production => "production",
        }
        .to_owned(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_owned(),
        duration_secs: plan.duration.as_secs(),
        quick: args.quick,
        machine: report::machine(),
        load_before: report::load_average(),
        load_after: String::new(),
        rows: Vec::new(),
    }
}

/// The raw-insert baseline at every concurrency level, then (where the target has a
/// broker) the raw produce baseline at every level, `duration` in all.
async fn baselines(
    target: &dyn Target,
    concurrency: &[usize],
    duration: Duration,
) -> anyhow::Result<Vec<Row>> {
    let kinds: u32 = if target.has_broker() { 2 } else { 1 };
    let slices = u32::try_from(concurrency.len())
        .unwrap_or(u32::MAX)
        .saturating_mul(kinds)
        .max(1);
    let slice = duration / slices;
    let mut rows = Vec::new();
    for &c in concurrency {
        let progress = Progress::start(
            format!("baseline {} insert c={c}", target.name()),
            Some(slice),
        );
        let tally = target.insert_baseline(c, slice, &progress).await?;
        drop(progress);
        let mut row = Row::from_series(
            "baseline",
            target.insert_baseline_case(),
            &tally.get("insert"),
        );
        row.concurrency = Some(c);
        row.rate = Some(tally.rate("insert"));
        row.unit = "rows/s".to_owned();
        rows.push(row);
    }
    for &c in concurrency.iter().filter(|_| target.has_broker()) {
        let progress = Progress::start(format!("baseline kafka produce c={c}"), Some(slice));
        let tally = target.produce_baseline(c, slice, &progress).await?;
        drop(progress);
        let mut row = Row::from_series(
            PRODUCE_BASELINE,
            "kafka produce, 1 msg awaited",
            &tally.get("produce"),
        );
        row.concurrency = Some(c);
        row.rate = Some(tally.rate("produce"));
        row.unit = "msgs/s".to_owned();
        rows.push(row);
    }
    Ok(rows)
}

/// The workload name of the raw produce rows: apart from `baseline`, whose rows the
/// command rows are divided by.
const PRODUCE_BASELINE: &str = "produce-baseline";

/// Divides every command row by the baseline row of the same concurrency, and notes
/// the ratio to the best baseline rate at any concurrency.
fn link_baselines(rows: &mut [Row]) {
    let baselines: Vec<Row> = rows
        .iter()
        .filter(|r| r.workload == "baseline")
        .cloned()
        .collect();
    let best = baselines
        .iter()
        .filter_map(|b| b.rate.map(|rate| (rate, b.concurrency)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    for row in rows.iter_mut().filter(|r| r.workload == "commands") {
        let Some(base) = baselines.iter().find(|b| b.concurrency == row.concurrency) else {
            row.baseline = "no baseline in this run".to_owned();
            continue;
        };
        row.rate_ratio = ratio(row.rate, base.rate);
        row.latency_ratio = ratio(row.p99_ms, base.p99_ms);
        row.baseline = format!("baseline c={}", base.concurrency.unwrap_or(0));
        if let Some((rate, c)) = best
            && let Some(r) = ratio(row.rate, Some(rate))
        {
            row.note(format!("{r:.2}× best baseline (c={})", c.unwrap_or(0)));
        }
    }
    // On production an event reaches the read models through one produce to the
    // broker: the raw produce latency at concurrency 1 is that hop's floor.
    let produce = rows
        .iter()
        .find(|r| r.workload == PRODUCE_BASELINE && r.concurrency == Some(1))
        .and_then(|r| Some((r.p50_ms?, r.p99_ms?)));
    if let Some((p50, p99)) = produce {
        for row in rows
            .iter_mut()
            .filter(|r| r.workload == "projection-lag" && r.case.starts_with("answer"))
        {
            row.note(format!(
                "raw kafka produce (c=1) p50 {p50:.2} ms, p99 {p99:.2} ms"
            ));
        }
    }
}
