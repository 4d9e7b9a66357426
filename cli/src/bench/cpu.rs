//! Where a workload's CPU went: the whole machine's busy time and each process's own,
//! read from `/proc` before and after the measured window and given in cores (1.0 =
//! one core busy the whole window).
//!
//! A lag figure means little without it: on two cores, the production pipeline's
//! processes, PostgreSQL and the broker share what the commands leave, and a lag that
//! is mostly queueing shows as a machine busy on both cores. Where `/proc` cannot be
//! read (not Linux) the note is left out rather than guessed.

use tokio::time::Instant;

/// Clock ticks per second of `/proc`'s CPU times: `USER_HZ`, which Linux fixes at 100
/// for user space on every architecture it runs these binaries on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU times at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    /// The machine's (busy, all) ticks, all cores summed.
    machine: Option<(u64, u64)>,
    cores: usize,
    /// Each named process's user + system ticks.
    processes: Vec<(String, Option<u64>)>,
}

/// Samples the machine and the named processes (and this process: the client, and on the embedded target the server too).
pub fn sample(processes: &[(String, u32)]) -> Sample {
    let mut named: Vec<(String, Option<u64>)> = processes
        .iter()
        .map(|(name, pid)| {
            (
                name.clone(),
                process_ticks(&read(&format!("/proc/{pid}/stat"))),
            )
        })
        .collect();
    named.push((
        "this process".to_owned(),
        process_ticks(&read("/proc/self/stat")),
    ));
    Sample {
        at: Instant::now(),
        machine: machine_ticks(&read("/proc/stat")),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        processes: named,
    }
}

/// The note for the window between two samples, or `None` when the machine's times
/// could not be read. Processes whose times could not be read at both ends are left
/// out; what the named ones do not account for is given as the rest.
pub fn note(before: &Sample, after: &Sample) -> Option<String> {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let ((busy_0, all_0), (busy_1, all_1)) = (before.machine?, after.machine?);
    let all = all_1.checked_sub(all_0).filter(|&all| all > 0)?;
    let busy = busy_1.saturating_sub(busy_0);
    // The machine's share of busy ticks, in cores; its own ticks give the wall time
    // more exactly than two instants read around it.
    let machine = busy as f64 / all as f64 * after.cores as f64;
    let mut parts = Vec::new();
    let mut named = 0.0;
    for ((name, start), (_, end)) in before.processes.iter().zip(&after.processes) {
        if let (Some(start), Some(end)) = (start, end) {
            let cores = cores(end.saturating_sub(*start), seconds);
            named += cores;
            parts.push(format!("{name} {cores:.2}"));
        }
    }
    parts.push(format!("the rest {:.2}", (machine - named).max(0.0)));
    Some(format!(
        "CPU in cores: machine {machine:.2} of {} ({})",
        after.cores,
        parts.join(", ")
    ))
}

fn cores(ticks: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    ticks as f64 / TICKS_PER_SECOND / seconds
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// User + system ticks from a `/proc/<pid>/stat` line. The command name (field 2) is
/// in parentheses and may hold spaces or parentheses itself, so the fields are counted
/// after its last `)`: state is the first there, utime the 12th, stime the 13th.
fn process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// (busy, all) ticks from the first line of `/proc/stat`: `cpu  user nice system idle
/// iowait irq softirq steal …`. Idle and iowait are not busy; guest time is already
/// counted in user and is not added again.
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some((busy, busy + idle + iowait))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_process_line_gives_user_plus_system_even_with_parentheses_in_its_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime …
        let stat = "4242 (tidemark (serve) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    1234 567 0 0 20 0 8 0 100 0 0";
        assert_eq!(process_ticks(stat), Some(1234 + 567));
        assert_eq!(process_ticks("4242 (cut short) S 1 2"), None);
        assert_eq!(process_ticks(""), None);
    }

    #[test]
    fn the_machine_line_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\n";
        assert_eq!(machine_ticks(stat), Some((170, 990)));
        assert_eq!(machine_ticks("intr 1 2 3"), None);
        assert_eq!(machine_ticks("cpu 1 2"), None);
    }

    #[test]
    fn the_note_gives_each_process_and_the_rest_in_cores() {
        let start = Instant::now();
        let before = Sample {
            at: start,
            machine: Some((1_000, 10_000)),
            cores: 2,
            processes: vec![
                ("relay".to_owned(), Some(100)),
                ("gone".to_owned(), Some(5)),
                ("this process".to_owned(), Some(0)),
            ],
        };
        // Ten seconds on two cores: 2,000 ticks in all, 1,500 of them busy.
        let after = Sample {
            at: start + Duration::from_secs(10),
            machine: Some((2_500, 12_000)),
            cores: 2,
            processes: vec![
                ("relay".to_owned(), Some(350)),
                ("gone".to_owned(), None),
                ("this process".to_owned(), Some(100)),
            ],
        };
        assert_eq!(
            note(&before, &after).as_deref(),
            Some("CPU in cores: machine 1.50 of 2 (relay 0.25, this process 0.10, the rest 1.15)")
        );
        let unreadable = Sample {
            machine: None,
            ..after
        };
        assert_eq!(note(&before, &unreadable), None);
    }
}
