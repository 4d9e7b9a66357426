//! The load generator every workload shares: closed-loop and open-loop drivers, HDR
//! latency histograms, and the once-a-second progress line.
//!
//! Latency is always measured from the time a request was *meant* to be sent, not from
//! when it finally went out. In the closed loop those are the same instant (a worker
//! sends its next request the moment the previous one is answered), so the closed loop
//! measures the maximum rate. In the open loop requests are due on a fixed schedule
//! whatever happens to earlier ones; if the system falls behind, the requests that wait
//! for a free slot carry that wait in their latency. That is what keeps a stall from
//! being hidden (no "coordinated omission").
//!
//! A sample counts when its intended time falls inside the measured window (after a
//! short warm-up); samples still in flight at the end are waited for, not dropped.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Highest latency a histogram holds, in microseconds (larger values are clamped).
const MAX_LATENCY_MICROS: u64 = 600_000_000;

/// How long the open loop waits for requests still in flight after its window ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// When a run starts, when its measurements start (after the warm-up) and when it ends.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When the run starts.
    pub start: Instant,
    /// When the warm-up ends and samples start to count.
    pub measure_from: Instant,
    /// When no more requests are started (or scheduled).
    pub end: Instant,
}

impl Window {
    /// A window of `duration` starting now, the first tenth of it (at most 2 s) warm-up.
    pub fn starting_now(duration: Duration) -> Self {
        let start = Instant::now();
        let warmup = (duration / 10).min(Duration::from_secs(2));
        Self {
            start,
            measure_from: start + warmup,
            end: start + duration,
        }
    }

    /// The length of the measured part.
    pub fn measured(&self) -> Duration {
        self.end.saturating_duration_since(self.measure_from)
    }

    fn counts(&self, intended: Instant) -> bool {
        intended >= self.measure_from && intended < self.end
    }
}

/// How one request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Answered as asked.
    Ok,
    /// Refused for a business reason the workload expects under load (such as
    /// `budget_exceeded`): an answer, not a failure.
    Rejected,
    /// Anything else: a transport error, a 5xx, or a refusal the workload did not expect.
    Failed(String),
}

/// One timed request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which histogram it goes to (a workload may time more than one thing per operation).
    pub series: &'static str,
    /// When the request was meant to be sent.
    pub intended: Instant,
    /// When its answer (or failure) arrived.
    pub done: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

impl Sample {
    /// A sample that ends now.
    pub fn now(series: &'static str, intended: Instant, outcome: Outcome) -> Self {
        Self {
            series,
            intended,
            done: Instant::now(),
            outcome,
        }
    }
}

/// One unit of work a driver repeats: usually one request, sometimes a short chain
/// (reserve then commit), each link reported as its own sample.
#[async_trait]
pub trait Operation: Send + Sync + 'static {
    /// Runs the `seq`-th operation, meant to start at `intended`.
    async fn call(&self, seq: u64, intended: Instant) -> Vec<Sample>;
}

/// The figures of one series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Latency of answered requests (ok and rejected), in microseconds.
    pub latency: Histogram<u64>,
    /// Requests answered as asked.
    pub ok: u64,
    /// Expected business refusals.
    pub rejected: u64,
    /// Failures.
    pub errors: u64,
    /// The first failure, to show what went wrong.
    pub first_error: Option<String>,
}

impl Series {
    /// An empty series.
    pub fn new() -> Self {
        Self {
            latency: new_histogram(),
            ok: 0,
            rejected: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// Requests that were answered (ok or rejected).
    pub fn answered(&self) -> u64 {
        self.ok + self.rejected
    }

    /// A latency quantile in milliseconds, or `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1_000.0)
    }

    /// Records one latency in microseconds (clamped into the histogram's range).
    fn record_micros(&mut self, micros: u64) {
        self.latency
            .saturating_record(micros.clamp(1, MAX_LATENCY_MICROS));
    }

    /// Records one successful operation timed directly (not through a driver).
    pub fn record_ok(&mut self, elapsed: Duration) {
        self.ok += 1;
        self.record_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one expected refusal timed directly.
    pub fn record_rejected(&mut self, elapsed: Duration) {
        self.rejected += 1;
        self.record_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.answered() == 0 && self.errors == 0
    }

    /// Records one failed operation timed directly.
    pub fn record_failure(&mut self, reason: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(reason);
        }
    }

    fn add(&mut self, sample: &Sample) {
        match &sample.outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Failed(reason) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(reason.clone());
                }
                return;
            }
        }
        let micros = sample
            .done
            .saturating_duration_since(sample.intended)
            .as_micros();
        self.record_micros(u64::try_from(micros).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: &Series) {
        // Both histograms have the same bounds and clamp their values, so adding
        // one to the other cannot fail; if it ever did, the figures would only lose
        // samples, which the counts below still show.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

impl Default for Series {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty latency histogram: 1 µs to 10 min, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy `new_with_bounds`' rules (low ≥ 1,
    // high ≥ 2 × low, sigfig ≤ 5), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// What a driver measured: one [`Series`] per series name, over the measured window.
#[derive(Debug, Clone)]
pub struct Tally {
    /// The figures of each series, by name.
    pub series: BTreeMap<&'static str, Series>,
    /// The length of the measured window.
    pub measured: Duration,
}

impl Tally {
    fn new(window: &Window) -> Self {
        Self {
            series: BTreeMap::new(),
            measured: window.measured(),
        }
    }

    fn add(&mut self, window: &Window, sample: &Sample) {
        if window.counts(sample.intended) {
            self.series.entry(sample.series).or_default().add(sample);
        }
    }

    fn merge(&mut self, other: Tally) {
        for (name, series) in other.series {
            self.series.entry(name).or_default().merge(&series);
        }
    }

    /// The named series, or an empty one.
    pub fn get(&self, name: &str) -> Series {
        self.series.get(name).cloned().unwrap_or_else(Series::new)
    }

    /// Answered requests of a series per second of the measured window.
    pub fn rate(&self, name: &str) -> f64 {
        self.get(name).answered() as f64 / self.measured.as_secs_f64().max(1e-9)
    }
}

/// Runs `op` from `concurrency` workers, each sending its next request when the
/// previous one is answered, until the window ends.
pub async fn closed_loop(
    op: Arc<dyn Operation>,
    concurrency: usize,
    window: Window,
    progress: &Progress,
) -> Tally {
    let seq = Arc::new(AtomicU64::new(0));
    let workers: Vec<JoinHandle<Tally>> = (0..concurrency.max(1))
        .map(|_| {
            let op = op.clone();
            let seq = seq.clone();
            let counters = progress.counters();
            tokio::spawn(async move {
                let mut tally = Tally::new(&window);
                while Instant::now() < window.end {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    for sample in op.call(n, Instant::now()).await {
                        counters.count(&sample);
                        tally.add(&window, &sample);
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::new(&window);
    for worker in workers {
        match worker.await {
            Ok(tally) => total.merge(tally),
            Err(error) => tracing::error!(%error, "a benchmark worker ended abnormally"),
        }
    }
    total
}

/// Runs `op` on a fixed schedule of `rate` operations per second until the window
/// ends, with at most `max_in_flight` at once. An operation whose slot is not free on
/// time waits, and its latency still counts from its scheduled time.
pub async fn open_loop(
    op: Arc<dyn Operation>,
    rate: f64,
    max_in_flight: usize,
    window: Window,
    progress: &Progress,
) -> Tally {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<Sample>();
    let counters = progress.counters();
    let mut seq: u64 = 0;
    loop {
        let intended = window.start + interval.mul_f64(seq as f64);
        if intended >= window.end {
            break;
        }
        tokio::time::sleep_until(intended).await;
        let op = op.clone();
        let slots = slots.clone();
        let samples = samples_tx.clone();
        let counters = counters.clone();
        let n = seq;
        tokio::spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            for sample in op.call(n, intended).await {
                counters.count(&sample);
                // The receiver lives until every sender is gone.
                let _ = samples.send(sample);
            }
        });
        seq += 1;
    }
    drop(samples_tx);
    let mut tally = Tally::new(&window);
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match tokio::time::timeout_at(drain_until, samples_rx.recv()).await {
            Ok(Some(sample)) => tally.add(&window, &sample),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!("requests still in flight after the drain timeout");
                break;
            }
        }
    }
    tally
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
pub struct Counters {
    done: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// Counts one finished sample.
    pub fn count(&self, sample: &Sample) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if matches!(sample.outcome, Outcome::Failed(_)) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts `n` finished units of work without samples (events applied, rows written).
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the count outright (for work that reports its own running total).
    pub fn set(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }
}

/// The progress line on stderr: every second, what runs, for how long, how much is
/// done and at what rate. Stops when dropped.
pub struct Progress {
    counters: Arc<Counters>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing progress for `label`; `planned` is the expected duration if known.
    pub fn start(label: String, planned: Option<Duration>) -> Self {
        let counters = Arc::new(Counters::default());
        let ticker = tokio::spawn(tick(label, planned, counters.clone()));
        Self {
            counters,
            ticker: Some(ticker),
        }
    }

    /// Counters without a progress line, for a side load that runs next to a reported one.
    pub fn quiet() -> Self {
        Self {
            counters: Arc::default(),
            ticker: None,
        }
    }

    /// The counters to update.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let Some(ticker) = &self.ticker else {
            return;
        };
        ticker.abort();
        if std::io::stderr().is_terminal() {
            // Leave the last progress line on screen.
            eprintln!();
        }
    }
}

async fn tick(label: String, planned: Option<Duration>, counters: Arc<Counters>) {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut last = 0;
    let mut every =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        every.tick().await;
        let done = counters.done.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let of = planned.map_or_else(String::new, |p| format!("/{:.0}s", p.as_secs_f64()));
        let line = format!(
            "{label:<38} {elapsed:>6.1}s{of:<6} {done:>10} done {rate:>9}/s {errors} errors",
            rate = done.saturating_sub(last),
        );
        last = done;
        let mut err = std::io::stderr().lock();
        // The progress line is a courtesy; a closed stderr must not stop the benchmark.
        let _ = if terminal {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}
