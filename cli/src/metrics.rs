//! `GET /metrics`: how far each stage of the pipeline is behind the event log, in the
//! Prometheus text exposition format, for a scraper or an SRE with `curl`.
//!
//! Every figure is read from the databases when the request comes in, the same way
//! `tidemark projections status` reads it: the log's head, the relay's checkpoint and
//! the projectors' applied positions all live in PostgreSQL (or the embedded SQLite
//! files), so any API process can answer for the whole deployment, whichever
//! processes the relay and projectors run in. Nothing tenant-scoped is exposed.

use std::fmt::Write as _;

use crate::ProjectionStatus;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `status` as Prometheus gauges.
pub fn render(status: &ProjectionStatus) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "tidemark_event_log_head_position",
        "Global position of the newest event in the store.",
        status.head,
    );
    match (status.relay_checkpoint, status.topic_applied) {
        (Some(relay), Some(applied)) => {
            gauge(
                &mut out,
                "tidemark_relay_checkpoint_position",
                "Every event at or below this position is in the Kafka topic.",
                relay,
            );
            gauge(
                &mut out,
                "tidemark_relay_lag_events",
                "Events in the store that the relay has not produced to Kafka yet.",
                status.head.saturating_sub(relay),
            );
            gauge(
                &mut out,
                "tidemark_projector_applied_position",
                "Highest position the topic projectors applied, over all partitions.",
                applied,
            );
            gauge(
                &mut out,
                "tidemark_projector_lag_events",
                "Events in the store not yet applied to the read models (log head minus applied position).",
                status.head.saturating_sub(applied),
            );
        }
        _ => {
            gauge(
                &mut out,
                "tidemark_projector_applied_position",
                "Position up to which the store-tail projector applied the log.",
                status.position,
            );
            gauge(
                &mut out,
                "tidemark_projector_lag_events",
                "Events in the store not yet applied to the read models.",
                status.lag(),
            );
        }
    }
    out
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(relay: Option<u64>, applied: Option<u64>) -> ProjectionStatus {
        ProjectionStatus {
            head: 120,
            position: 100,
            rows: Vec::new(),
            relay_checkpoint: relay,
            topic_applied: applied,
        }
    }

    fn value(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .map(|v| v.parse().expect("a number"))
    }

    #[test]
    fn the_embedded_deployment_reports_the_store_tail_projector() {
        let text = render(&status(None, None));
        assert_eq!(value(&text, "tidemark_event_log_head_position"), Some(120));
        assert_eq!(
            value(&text, "tidemark_projector_applied_position"),
            Some(100)
        );
        assert_eq!(value(&text, "tidemark_projector_lag_events"), Some(20));
        assert_eq!(value(&text, "tidemark_relay_lag_events"), None);
    }

    #[test]
    fn with_kafka_the_relay_and_topic_projectors_are_reported() {
        let text = render(&status(Some(115), Some(90)));
        assert_eq!(
            value(&text, "tidemark_relay_checkpoint_position"),
            Some(115)
        );
        assert_eq!(value(&text, "tidemark_relay_lag_events"), Some(5));
        assert_eq!(
            value(&text, "tidemark_projector_applied_position"),
            Some(90)
        );
        assert_eq!(value(&text, "tidemark_projector_lag_events"), Some(30));
    }

    #[test]
    fn every_sample_has_help_and_type_lines() {
        let text = render(&status(Some(1), Some(1)));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(' ').next().expect("name");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
        }
    }
}
