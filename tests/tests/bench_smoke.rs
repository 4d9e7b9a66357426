//! Smoke test of the benchmark harness: `tidemark bench all --quick` runs to its end
//! and every workload reports rows with something counted.
//!
//! It asserts nothing about speed. A debug build on a shared machine measures nothing
//! worth comparing; the real figures come from a release run (docs/benchmarks.md).
//! This only keeps the harness from rotting while the code it drives changes.

use cli::bench::target::TargetKind;
use cli::bench::{BenchArgs, Workload};
use cli::settings::Settings;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_run_of_every_workload_completes_and_counts_something_in_each() {
    let json = tempfile::NamedTempFile::new().expect("temp file");
    let args = BenchArgs {
        workload: Workload::All,
        target: TargetKind::Embedded,
        duration: None,
        quick: true,
        concurrency: vec![1, 16, 64],
        rate: None,
        lag_rate: None,
        events: None,
        history: None,
        json: Some(json.path().to_path_buf()),
        work_dir: None,
        child_data_dir: None,
    };
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
    let written = std::fs::read_to_string(json.path()).expect("json written");
    let parsed: serde_json::Value = serde_json::from_str(&written).expect("json parses");
    assert_eq!(
        parsed["rows"].as_array().map(Vec::len),
        Some(report.rows.len()),
        "the JSON file holds every row"
    );
}
