//! The benchmark's results: one [`Row`] per measured case, printed as a table on
//! stdout and optionally written as JSON.
//!
//! The machine is shared and noisy, so a figure on its own says little; each row
//! carries its ratio to a baseline measured in the same run (named in `baseline`), and
//! the report records the machine's load average before and after.

use std::fmt::Write as _;

use serde::Serialize;

use super::load::Series;

/// One measured case.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `baseline`, `commands`, `projection-lag`, `rebuild` or `decide-vs-history`.
    pub workload: String,
    /// What exactly was measured (`create-post`, `sqlite insert`, …).
    pub case: String,
    /// Concurrent workers or requests in flight, where that applies.
    pub concurrency: Option<usize>,
    /// Operations, events or samples measured.
    pub count: u64,
    /// Throughput, in `unit`.
    pub rate: Option<f64>,
    /// The unit of `rate` (`cmd/s`, `rows/s`, `events/s`).
    pub unit: String,
    /// Latency quantiles, in milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// Failures (never expected).
    pub errors: u64,
    /// Expected business rejections, counted apart from errors.
    pub rejected: u64,
    /// `rate` divided by the baseline's rate.
    pub rate_ratio: Option<f64>,
    /// `p99_ms` (or, for few samples, `p50_ms`) divided by the baseline's.
    pub latency_ratio: Option<f64>,
    /// What the ratios are against.
    pub baseline: String,
    /// Anything else worth knowing (memory, checks, the first error).
    pub note: String,
}

impl Row {
    /// A row with the latency figures of `series` and nothing else filled in.
    pub fn from_series(workload: &str, case: &str, series: &Series) -> Self {
        let mut note = String::new();
        if let Some(error) = &series.first_error {
            note = format!("first error: {}", shorten(error, 120));
        }
        Self {
            workload: workload.to_owned(),
            case: case.to_owned(),
            concurrency: None,
            count: series.answered() + series.errors,
            rate: None,
            unit: String::new(),
            p50_ms: series.quantile_ms(0.50),
            p99_ms: series.quantile_ms(0.99),
            p999_ms: series.quantile_ms(0.999),
            errors: series.errors,
            rejected: series.rejected,
            rate_ratio: None,
            latency_ratio: None,
            baseline: String::new(),
            note,
        }
    }

    /// Appends to the note.
    pub fn note(&mut self, text: impl AsRef<str>) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(text.as_ref());
    }
}

/// Everything one `tidemark bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `embedded` (or, later, `production`).
    pub target: String,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// `release` or `debug`: figures from a debug build are only a smoke test.
    pub build: String,
    /// Seconds per workload.
    pub duration_secs: u64,
    /// Whether this was a `--quick` smoke run.
    pub quick: bool,
    /// Processors, memory and CPU model, as the OS reports them.
    pub machine: String,
    /// 1-minute load average before and after the run.
    pub load_before: String,
    pub load_after: String,
    /// One row per measured case, in the order they ran.
    pub rows: Vec<Row>,
}

impl Report {
    /// The rows as a fixed-width table.
    pub fn table(&self) -> String {
        let header = [
            "workload", "case", "conc", "count", "rate", "unit", "rate×", "p50 ms", "p99 ms",
            "p99.9 ms", "lat×", "err", "rej", "baseline", "note",
        ];
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.workload.clone(),
                    r.case.clone(),
                    opt(r.concurrency.map(|c| c.to_string())),
                    r.count.to_string(),
                    opt(r.rate.map(|v| format!("{v:.0}"))),
                    r.unit.clone(),
                    opt(r.rate_ratio.map(|v| format!("{v:.2}"))),
                    opt(r.p50_ms.map(ms)),
                    opt(r.p99_ms.map(ms)),
                    opt(r.p999_ms.map(ms)),
                    opt(r.latency_ratio.map(|v| format!("{v:.2}"))),
                    r.errors.to_string(),
                    r.rejected.to_string(),
                    r.baseline.clone(),
                    r.note.clone(),
                ]
            })
            .collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            let last = row.len() - 1;
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                // Text columns left, figures right; the note is last and unpadded.
                let numeric = (2..=12).contains(&i) && i != 5;
                let _ = match (i == last, numeric) {
                    (true, _) => write!(out, "{cell}"),
                    (false, true) => write!(out, "{cell:>w$} | "),
                    (false, false) => write!(out, "{cell:<w$} | "),
                };
            }
            out.push('\n');
        };
        let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
        line(&mut out, &head);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut out, &rule);
        for row in &cells {
            line(&mut out, row);
        }
        out
    }

    /// The table with a header naming the run.
    pub fn render(&self) -> String {
        format!(
            "tidemark bench — target {}, {} build, {} s per workload{}, started {}\n\
             machine: {}\nload average (1 min): {} before, {} after\n\n{}",
            self.target,
            self.build,
            self.duration_secs,
            if self.quick { " (--quick)" } else { "" },
            self.started_at,
            self.machine,
            self.load_before,
            self.load_after,
            self.table()
        )
    }
}

fn opt(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// Milliseconds with about three significant digits, however small.
fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else if value > 0.0 {
        let decimals = (2.0 - value.log10().floor()).clamp(3.0, 7.0) as usize;
        format!("{value:.decimals$}")
    } else {
        "0".to_owned()
    }
}

/// Cuts `text` to at most `max` characters, on a character boundary.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// Divides, or `None` when either side is missing or the divisor is zero.
pub fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

/// The machine as `/proc` describes it: processors, memory, CPU model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown memory".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    format!("{cpus} processors, {memory}, {model}")
}

/// The 1-minute load average, or `?` where `/proc/loadavg` is missing.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_needs_both_sides_and_a_non_zero_divisor() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
    }

    #[test]
    fn small_latencies_keep_three_significant_digits() {
        assert_eq!(ms(0.000_123_4), "0.000123");
        assert_eq!(ms(0.5), "0.500");
        assert_eq!(ms(12.345), "12.35");
        assert_eq!(ms(1234.4), "1234");
    }

    #[test]
    fn shortening_keeps_whole_characters() {
        assert_eq!(shorten("ééé", 2), "éé…");
        assert_eq!(shorten("abc", 5), "abc");
    }
}
