//! Smoke test of the benchmark harness: `tidemark bench all --quick` runs to its end
//! and every workload reports rows with something counted.
//!
//! It asserts nothing about speed. A debug build on a shared machine measures nothing
//! worth comparing; the real figures come from a release run (docs/benchmarks.md).
//! This only keeps the harness from rotting while the code it drives changes.
//!
//! The production target's HTTP workloads start `tidemark serve` children of the
//! `tidemark` binary, which a test binary is not, so on that target only the workloads
//! that need PostgreSQL alone run here: rebuild and decide-vs-history.

use cli::bench::target::TargetKind;
use cli::bench::{BenchArgs, Workload};
use cli::settings::Settings;

fn quick(workload: Workload, target: TargetKind, json: &tempfile::NamedTempFile) -> BenchArgs {
    BenchArgs {
        workload,
        target,
        duration: None,
        quick: true,
        concurrency: vec![1, 16, 64],
        rate: None,
        lag_rate: None,
        lag_sample: 10,
        events: None,
        history: None,
        json: Some(json.path().to_path_buf()),
        work_dir: None,
        child_data_dir: None,
    }
}

/// Every row of `workload` counted something, and there is at least one.
fn assert_counted(report: &cli::bench::report::Report, workload: &str) {
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.workload == workload)
        .collect();
    assert!(!rows.is_empty(), "{workload} produced no row");
    for row in rows {
        assert!(
            row.count > 0,
            "{workload} / {} counted nothing: {row:?}",
            row.case
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_run_of_every_workload_completes_and_counts_something_in_each() {
    let json = tempfile::NamedTempFile::new().expect("temp file");
    let args = quick(Workload::All, TargetKind::Embedded, &json);
    let settings = Settings::load(None).expect("default settings");
    let report = cli::bench::run(args, settings)
        .await
        .expect("bench all --quick");

    for workload in [
        "baseline",
        "commands",
        "projection-lag",
        "rebuild",
        "decide-vs-history",
    ] {
        assert_counted(&report, workload);
    }
    // One command in `lag_sample` (10) has its lag read: the sequence numbers 0, 10,
    // 20, … Both rows count only what falls in the measured window (after the warm-up),
    // by different clocks (sent, answered), so the ratio is 10 within a margin.
    let count = |case: &str| {
        report
            .rows
            .iter()
            .find(|r| r.workload == "projection-lag" && r.case == case)
            .map(|r| r.count)
            .unwrap_or_else(|| panic!("no projection-lag row {case:?}"))
    };
    let (commands, lags) = (
        count("create-post at fixed rate"),
        count("answer → visible in read model"),
    );
    assert!(
        lags * 10 <= commands + commands / 5 + 20 && lags * 10 + commands / 5 + 20 >= commands,
        "one command in 10 should be read: {lags} lags for {commands} commands"
    );
    let written = std::fs::read_to_string(json.path()).expect("json written");
    let parsed: serde_json::Value = serde_json::from_str(&written).expect("json parses");
    assert_eq!(
        parsed["rows"].as_array().map(Vec::len),
        Some(report.rows.len()),
        "the JSON file holds every row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_rebuild_and_decide_vs_history_runs_complete_on_postgresql() {
    let settings = Settings::load(None).expect("default settings");
    for (workload, name) in [
        (Workload::Rebuild, "rebuild"),
        (Workload::DecideVsHistory, "decide-vs-history"),
    ] {
        let json = tempfile::NamedTempFile::new().expect("temp file");
        let report = cli::bench::run(
            quick(workload, TargetKind::Production, &json),
            settings.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("bench {name} --target production --quick: {e:?}"));
        assert_eq!(report.target, "production");
        assert_counted(&report, name);
    }
}

/// Ctrl-C or SIGTERM ends a run early with an error, after it removed what it made.
/// Without the handler, the signal sent here would kill this test's process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_run_ends_with_an_error_and_removes_what_it_made() {
    let settings = Settings::load(None).expect("default settings");
    let work = tempfile::tempdir().expect("work dir");
    let json = tempfile::NamedTempFile::new().expect("temp file");
    let mut args = quick(Workload::Commands, TargetKind::Embedded, &json);
    args.quick = false;
    args.duration = Some(600);
    args.concurrency = vec![1];
    args.work_dir = Some(work.path().to_path_buf());
    let run = cli::bench::run(args, settings);

    // The run's own directory, then a deployment's inside it: by then the run is
    // measuring, and listening for the signal.
    let deployment_made = || {
        std::fs::read_dir(work.path())
            .expect("read the work dir")
            .filter_map(Result::ok)
            .filter_map(|run_dir| std::fs::read_dir(run_dir.path()).ok())
            .any(|mut inside| inside.next().is_some())
    };
    let terminate = async {
        while !deployment_made() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    };
    // The run is set to last 600 s; it has to end long before that.
    let (ended, ()) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(run, terminate)
    })
    .await
    .expect("the run ends soon after the signal, not after its 600 s");
    let error = ended.expect_err("an interrupted run is an error");
    assert!(
        error.to_string().contains("interrupted"),
        "unexpected error: {error:#}"
    );
    let left: Vec<_> = std::fs::read_dir(work.path())
        .expect("read the work dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "the run left {left:?} behind");
    let written = std::fs::read_to_string(json.path()).expect("json file");
    assert!(written.is_empty(), "an interrupted run writes no report");
}
