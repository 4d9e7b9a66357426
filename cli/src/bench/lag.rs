//! Projection lag: how long after a command is answered its effect shows in the read
//! model, at a steady fraction of the maximum command rate.
//!
//! `create-post` runs open-loop on a fixed schedule (by default half the highest
//! create-post rate the commands workload measured in the same run). As soon as a
//! sampled command is answered (one in `--lag-sample`, default 10), the client asks
//! `GET /v1/posts/{id}?min_position=<its position>`, which the query API holds until
//! the read models include that position, then reads the post. The lag is answer →
//! that GET's answer, so it includes one GET round trip: it is an upper bound,
//! measured from outside like a client would see it. Only a sample is read because
//! each read is a request as costly as the command: reading after every command
//! would hold the deployment at about the full rate, not the half the workload asks
//! for.
//!
//! The baseline is that round trip alone: during the same window a side loop GETs a
//! post that is already visible, 50 times a second, and its latency is the floor of
//! what the lag measurement can show.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use auth::Role;
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use super::commands::{Answer, Http, TENANTS};
use super::cpu;
use super::load::{Operation, Outcome, Progress, Sample, Window, open_loop};
use super::report::{Row, ratio};
use super::target::Target;

/// Requests of the lag workload that may be in flight at once. High enough never to be
/// the limit at half the maximum rate; latency counts from the schedule anyway.
const MAX_IN_FLIGHT: usize = 1_024;
/// Rate of the floor-measuring side loop.
const FLOOR_RATE: f64 = 50.0;

/// Runs create-post at `rate` per second for `duration` and measures the lag.
pub async fn run(
    target: &dyn Target,
    rate: f64,
    sample: u64,
    duration: Duration,
) -> anyhow::Result<Vec<Row>> {
    let sample = sample.max(1);
    let deployment = target.start().await?;
    let http = Http::new(deployment.base_url())?;
    let tokens = (0..TENANTS)
        .map(|_| deployment.token(Uuid::now_v7(), Role::Editor))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // A post that is visible before the run starts, for the floor measurement.
    let floor_post = Uuid::now_v7();
    let created = http
        .command(
            &tokens[0],
            "create-post",
            &json!({"channel": "linkedin", "body": "The floor post.", "post_id": floor_post}),
        )
        .await;
    let position = match created {
        Answer::Ok(body) => body["position"].as_u64().unwrap_or(0),
        Answer::Refused(status, code) => {
            anyhow::bail!("could not create the floor post: {status} {code}")
        }
        Answer::Failed(reason) => anyhow::bail!("could not create the floor post: {reason}"),
    };
    let floor_path = format!("/v1/posts/{floor_post}");
    if let Answer::Failed(reason) | Answer::Refused(_, reason) = http
        .get(&tokens[0], &format!("{floor_path}?min_position={position}"))
        .await
    {
        anyhow::bail!("the floor post did not become visible: {reason}");
    }

    let progress = Progress::start(format!("projection-lag at {rate:.0} cmd/s"), Some(duration));
    let window = Window::starting_now(duration);
    let op = Arc::new(CreateThenRead {
        http: http.clone(),
        tokens: tokens.clone(),
        sample,
    });
    let floor = Arc::new(ReadVisible {
        http: http.clone(),
        token: tokens[0].clone(),
        path: floor_path,
    });
    let floor_progress = Progress::quiet();
    let processes = deployment.processes();
    let cpu_before = cpu::sample(&processes);
    let (tally, floor_tally) = tokio::join!(
        open_loop(op, rate, MAX_IN_FLIGHT, window, &progress),
        open_loop(floor, FLOOR_RATE, 1, window, &floor_progress),
    );
    let cpu_note = cpu::note(&cpu_before, &cpu::sample(&processes));
    drop(progress);
    drop(floor_progress);
    deployment.stop().await?;

    let floor = floor_tally.get("floor");
    let mut floor_row = Row::from_series("projection-lag", "GET of a visible post (floor)", &floor);
    floor_row.concurrency = Some(1);
    floor_row.rate = Some(floor_tally.rate("floor"));
    floor_row.unit = "req/s".to_owned();

    let commands = tally.get("command");
    let mut command_row =
        Row::from_series("projection-lag", "create-post at fixed rate", &commands);
    command_row.rate = Some(tally.rate("command"));
    command_row.unit = "cmd/s".to_owned();
    command_row.note(format!(
        "offered {rate:.0} cmd/s (open loop); latency from the scheduled send time"
    ));

    let lag = tally.get("lag");
    let mut lag_row = Row::from_series("projection-lag", "answer → visible in read model", &lag);
    lag_row.latency_ratio = ratio(lag_row.p99_ms, floor_row.p99_ms);
    lag_row.baseline = "floor p99".to_owned();
    lag_row.note(if sample == 1 {
        "includes one GET round trip; every command read".to_owned()
    } else {
        format!("includes one GET round trip; one command in {sample} read")
    });
    if let Some(cpu_note) = cpu_note {
        command_row.note(cpu_note);
    }
    Ok(vec![command_row, lag_row, floor_row])
}

/// `create-post`, then, for one in `sample`, a GET that waits for its position.
struct CreateThenRead {
    http: Http,
    tokens: Vec<String>,
    sample: u64,
}

#[async_trait]
impl Operation for CreateThenRead {
    async fn call(&self, seq: u64, intended: Instant) -> Vec<Sample> {
        let token = &self.tokens[(seq as usize) % self.tokens.len()];
        let post_id = Uuid::now_v7();
        let body =
            json!({"channel": "linkedin", "body": format!("Lag post {seq}."), "post_id": post_id});
        let answer = self.http.command(token, "create-post", &body).await;
        let command = Sample::now("command", intended, answer.outcome(&[]));
        let Answer::Ok(body) = &answer else {
            return vec![command];
        };
        if !seq.is_multiple_of(self.sample) {
            return vec![command];
        }
        let answered = command.done;
        let Some(position) = body["position"].as_u64() else {
            let failed = Outcome::Failed("the answer carries no position".to_owned());
            return vec![command, Sample::now("lag", answered, failed)];
        };
        let read = self
            .http
            .get(
                token,
                &format!("/v1/posts/{post_id}?min_position={position}"),
            )
            .await;
        vec![command, Sample::now("lag", answered, read.outcome(&[]))]
    }
}

/// A GET of a post that is already in the read model.
struct ReadVisible {
    http: Http,
    token: String,
    path: String,
}

#[async_trait]
impl Operation for ReadVisible {
    async fn call(&self, _seq: u64, intended: Instant) -> Vec<Sample> {
        let read = self.http.get(&self.token, &self.path).await;
        vec![Sample::now("floor", intended, read.outcome(&[]))]
    }
}
