//! Smoke test of the benchmark harness: `tidemark bench all --quick` runs to its end
//! and every workload reports rows with something counted.
//!
//! It asserts nothing about speed. A debug build on a shared machine measures nothing
//! worth comparing; the real figures come from a release run (docs/benchmarks.md).
//! This only keeps the harness from rotting while the code it drives changes.
//!
//! The production target's HTTP workloads start `tidemark serve` children of the
//! `tidemark` binary, which a test binary is not, so in-process only the workloads
//! that need PostgreSQL alone run on that target: rebuild and decide-vs-history. The
//! whole production run is `tidemark bench` as a process, against a broker of the
//! test's own. One more test runs `tidemark bench` as a process and stops it with
//! SIGTERM.

use std::time::{Duration, Instant};

use cli::bench::target::TargetKind;
use cli::bench::{BenchArgs, Workload};
use cli::settings::Settings;

#[path = "common/binary.rs"]
mod binary;
use binary::tidemark_binary;

#[path = "common/kafka_script.rs"]
mod kafka_script;

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
    // Where the lag run's CPU went, from /proc (this suite runs on Linux).
    let fixed_rate = report
        .rows
        .iter()
        .find(|r| r.workload == "projection-lag" && r.case == "create-post at fixed rate")
        .expect("the fixed-rate row");
    assert!(
        fixed_rate.note.contains("CPU in cores: machine ")
            && fixed_rate.note.contains("this process ")
            && fixed_rate.note.contains("the rest "),
        "the fixed-rate row says where the CPU went: {:?}",
        fixed_rate.note
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
/// The run is a `tidemark bench` process of its own, as an operator runs it, so the
/// signal reaches it alone.
#[test]
fn a_terminated_run_ends_with_an_error_and_removes_what_it_made() {
    let work = tempfile::tempdir().expect("work dir");
    let json = work.path().join("report.json");
    let mut bench = std::process::Command::new(tidemark_binary())
        .args([
            "bench",
            "commands",
            "--duration",
            "600",
            "--concurrency",
            "1",
        ])
        .arg("--work-dir")
        .arg(work.path())
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tidemark bench");

    // The run's own directory, then a deployment's inside it: by then the run is
    // measuring, and listening for the signal.
    let started = Instant::now();
    let deployment_made = || {
        std::fs::read_dir(work.path())
            .expect("read the work dir")
            .filter_map(Result::ok)
            .filter_map(|run_dir| std::fs::read_dir(run_dir.path()).ok())
            .any(|mut inside| inside.next().is_some())
    };
    while !deployment_made() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run made no deployment within a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &bench.id().to_string()])
        .status()
        .expect("run kill");
    assert!(signalled.success(), "kill -TERM failed: {signalled}");

    // The run is set to last 600 s; it has to end long before that.
    let status = wait_for_exit(&mut bench, Duration::from_secs(60), "of SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut bench.stderr.take().expect("stderr piped"), &mut stderr)
        .expect("read stderr");
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}; stderr: {stderr}"
    );
    assert!(
        stderr.contains("error: interrupted"),
        "stderr does not say it was interrupted: {stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(work.path())
        .expect("read the work dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "the run left {left:?} behind");
}

/// Waits for `run` to exit; kills it and fails the test if it is still running
/// `within` after `since` (what the time counts from, for the message).
fn wait_for_exit(
    run: &mut std::process::Child,
    within: Duration,
    since: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = run.try_wait().expect("wait for the run") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("the run did not end within {within:?} {since}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tansu broker keeping its topics in memory, started with `scripts/kafka` on a free
/// loopback port and stopped when dropped.
struct Broker {
    dir: tempfile::TempDir,
    address: String,
}

impl Broker {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("broker dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let port = port.to_string();
        let address = kafka_script::run_for(
            [
                "start".as_ref(),
                "--memory".as_ref(),
                "--port".as_ref(),
                port.as_ref(),
                "--data-dir".as_ref(),
                dir.path().as_os_str(),
            ],
            "KAFKA_BROKERS",
        );
        Self { dir, address }
    }

    /// The names of the topics the broker holds.
    fn topics(&self) -> Vec<String> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .create()
            .expect("a Kafka client");
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("the broker's metadata")
            .topics()
            .iter()
            .map(|topic| topic.name().to_owned())
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        kafka_script::run([
            "stop".as_ref(),
            "--data-dir".as_ref(),
            self.dir.path().as_os_str(),
        ]);
    }
}

/// `tidemark bench all --target production --quick` as an operator runs it: the
/// deployment's `tidemark serve` processes, PostgreSQL, and a Kafka-API broker. Every
/// workload counts something (the produce baseline included, whose first produce to a
/// new topic once took longer than a quick case), and the run deletes the topics it
/// made when it ends.
#[test]
fn a_quick_production_run_counts_something_in_every_workload_and_deletes_its_topics() {
    let broker = Broker::start();
    let before = broker.topics();
    let work = tempfile::tempdir().expect("work dir");
    let json = work.path().join("report.json");
    let log = work.path().join("bench.log");
    let mut bench = std::process::Command::new(tidemark_binary())
        .args(["bench", "all", "--target", "production", "--quick"])
        .arg("--json")
        .arg(&json)
        .env("TIDEMARK_KAFKA__BROKERS", &broker.address)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start tidemark bench");
    let status = wait_for_exit(&mut bench, Duration::from_secs(900), "of its start");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = output.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    assert!(
        status.success(),
        "exit status {status}; output ends:\n{tail}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report"))
            .expect("the report is JSON");
    assert_eq!(report["target"], "production");
    let rows = report["rows"].as_array().expect("rows");
    for workload in [
        "baseline",
        "produce-baseline",
        "commands",
        "projection-lag",
        "rebuild",
        "decide-vs-history",
    ] {
        let counted: Vec<u64> = rows
            .iter()
            .filter(|row| row["workload"] == workload)
            .map(|row| row["count"].as_u64().expect("count"))
            .collect();
        assert!(!counted.is_empty(), "{workload} produced no row");
        assert!(
            counted.iter().all(|count| *count > 0),
            "a {workload} row counted nothing: {counted:?}"
        );
    }

    let left: Vec<String> = broker
        .topics()
        .into_iter()
        .filter(|topic| topic.starts_with("tidemark.") && !before.contains(topic))
        .collect();
    assert!(
        left.is_empty(),
        "the run left topics on the broker: {left:?}"
    );
}
