//! The command workloads, driven over HTTP like any client would: `create-post` spread
//! over 1,000 tenants, and `reserve-budget` + `commit-budget` pairs on one hot tenant.
//!
//! Each runs at every concurrency level in its own slice of the workload's duration,
//! against one fresh deployment. The closed loop finds the maximum rate; with `--rate`
//! the same operations run on a fixed schedule instead (open loop), so latency then
//! includes any queueing behind a system that cannot keep up. After each hot-tenant
//! slice the ledger is read back and checked against what the answers said: every
//! answered reservation and commit, and nothing else, must be in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use auth::Role;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::load::{Operation, Outcome, Progress, Sample, Tally, Window, closed_loop, open_loop};
use super::report::Row;
use super::target::Target;

/// Tenants the create-post workload spreads its posts over.
pub const TENANTS: usize = 1_000;
/// Refusals a command workload expects under load: answers, not errors.
const EXPECTED_REJECTIONS: &[&str] = &["budget_exceeded"];
/// The hot tenant's budget: far more than any run can spend.
const HOT_BUDGET_MICROS: i64 = 1_000_000_000_000_000;
const RESERVE_MICROS: i64 = 1_000;
/// How long the ledger check waits for the read models to include the last answer.
const LEDGER_CHECK_WAIT: Duration = Duration::from_secs(120);
const ACTUAL_MICROS: i64 = 900;

/// An HTTP client for one deployment.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

/// What a request got back.
pub enum Answer {
    /// 200, with the JSON body.
    Ok(Value),
    /// A problem answer: status and `code`.
    Refused(u16, String),
    /// No answer, or one that is not JSON.
    Failed(String),
}

impl Answer {
    /// The outcome a sample records, with `expected` rejection codes counted apart.
    pub fn outcome(&self, expected: &[&str]) -> Outcome {
        match self {
            Answer::Ok(_) => Outcome::Ok,
            Answer::Refused(_, code) if expected.contains(&code.as_str()) => Outcome::Rejected,
            Answer::Refused(status, code) => Outcome::Failed(format!("{status} {code}")),
            Answer::Failed(reason) => Outcome::Failed(reason.clone()),
        }
    }
}

impl Http {
    /// A client for `base` (`http://127.0.0.1:port`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // Below the server's keep-alive (actix's default, 5 s): a pooled connection
            // the server is closing as it is picked fails the request it carries. That
            // happened twice in 42,711 requests when a workload's open-loop schedule
            // picked connections the previous workload had left idle.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// POSTs a command.
    pub async fn command(&self, token: &str, name: &str, body: &Value) -> Answer {
        let request = self
            .client
            .post(format!("{}/v1/commands/{name}", self.base))
            .bearer_auth(token)
            .json(body);
        answer(request.send().await).await
    }

    /// GETs a path with its query string.
    pub async fn get(&self, token: &str, path_and_query: &str) -> Answer {
        let request = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(token);
        answer(request.send().await).await
    }
}

async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Answer {
    let response = match sent {
        Ok(response) => response,
        // `{:#}` adds each cause: reqwest's own text names neither the connection's
        // fate nor the I/O error under it.
        Err(error) => {
            return Answer::Failed(format!("request failed: {:#}", anyhow::Error::new(error)));
        }
    };
    let status = response.status().as_u16();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => {
            return Answer::Failed(format!("body unreadable: {:#}", anyhow::Error::new(error)));
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(body) => body,
        Err(_) => {
            return Answer::Failed(format!(
                "{status} with a body that is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    };
    if status == 200 {
        Answer::Ok(body)
    } else {
        let code = body["code"].as_str().unwrap_or("no code").to_owned();
        Answer::Refused(status, code)
    }
}

/// The result of the command workloads.
pub struct CommandFigures {
    /// One row per command and concurrency.
    pub rows: Vec<Row>,
    /// The highest create-post rate measured (commands per second).
    pub max_create_post_rate: f64,
}

/// Runs both command workloads at each concurrency in `concurrency`, `duration` in all.
pub async fn run(
    target: &dyn Target,
    concurrency: &[usize],
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<CommandFigures> {
    let deployment = target.start().await?;
    let http = Http::new(deployment.base_url())?;
    let tokens = (0..TENANTS)
        .map(|_| deployment.token(Uuid::now_v7(), Role::Editor))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let slices = u32::try_from(concurrency.len() * 2)
        .unwrap_or(u32::MAX)
        .max(1);
    let slice = duration / slices;
    let mut rows = Vec::new();
    let mut max_create_post_rate: f64 = 0.0;

    for &c in concurrency {
        let op = Arc::new(CreatePost {
            http: http.clone(),
            tokens: tokens.clone(),
        });
        let tally = drive(op, c, rate, slice, format!("commands create-post c={c}")).await;
        let mut row = Row::from_series(
            "commands",
            "create-post, 1,000 tenants",
            &tally.get("create-post"),
        );
        row.concurrency = Some(c);
        row.rate = Some(tally.rate("create-post"));
        row.unit = "cmd/s".to_owned();
        if rate.is_none() {
            max_create_post_rate = max_create_post_rate.max(tally.rate("create-post"));
        }
        rows.push(row);
    }

    for &c in concurrency {
        let tenant = Uuid::now_v7();
        let admin = deployment.token(tenant, Role::Admin)?;
        let set = http
            .command(
                &admin,
                "set-budget-limits",
                &json!({"soft_limit_micros": HOT_BUDGET_MICROS, "hard_limit_micros": HOT_BUDGET_MICROS}),
            )
            .await;
        match set {
            Answer::Ok(_) => {}
            Answer::Refused(status, code) => {
                anyhow::bail!("could not set the hot tenant's budget: {status} {code}")
            }
            Answer::Failed(reason) => {
                anyhow::bail!("could not set the hot tenant's budget: {reason}")
            }
        }
        let op = Arc::new(HotTenant {
            http: http.clone(),
            token: deployment.token(tenant, Role::Editor)?,
            reserved: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            last_position: AtomicU64::new(0),
        });
        let tally = drive(
            op.clone(),
            c,
            rate,
            slice,
            format!("commands hot-tenant c={c}"),
        )
        .await;
        let series = tally.get("reserve+commit");
        let mut row = Row::from_series("commands", "reserve+commit, 1 hot tenant", &series);
        row.concurrency = Some(c);
        row.rate = Some(tally.rate("reserve+commit"));
        row.unit = "cmd/s".to_owned();
        row.note(format!(
            "{:.0} reservations/s",
            tally.rate("reserve+commit") / 2.0
        ));
        row.note(op.check_ledger(&admin).await);
        rows.push(row);
    }

    deployment.stop().await?;
    Ok(CommandFigures {
        rows,
        max_create_post_rate,
    })
}

/// Measures the create-post rate alone (closed loop at `concurrency` for `duration`), for
/// projection-lag when the commands workload did not run.
pub async fn max_create_post_rate(
    target: &dyn Target,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let deployment = target.start().await?;
    let http = Http::new(deployment.base_url())?;
    let tokens = (0..TENANTS)
        .map(|_| deployment.token(Uuid::now_v7(), Role::Editor))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let op = Arc::new(CreatePost { http, tokens });
    let label = format!("projection-lag: max create-post rate c={concurrency}");
    let tally = drive(op, concurrency, None, duration, label).await;
    deployment.stop().await?;
    Ok(tally.rate("create-post"))
}

/// Closed loop at `concurrency`, or open loop at `rate` with `concurrency` in flight.
async fn drive(
    op: Arc<dyn Operation>,
    concurrency: usize,
    rate: Option<f64>,
    duration: Duration,
    label: String,
) -> Tally {
    let progress = Progress::start(label, Some(duration));
    let window = Window::starting_now(duration);
    match rate {
        None => closed_loop(op, concurrency, window, &progress).await,
        Some(rate) => open_loop(op, rate, concurrency, window, &progress).await,
    }
}

/// `create-post` for a tenant chosen round-robin.
struct CreatePost {
    http: Http,
    tokens: Vec<String>,
}

#[async_trait]
impl Operation for CreatePost {
    async fn call(&self, seq: u64, intended: Instant) -> Vec<Sample> {
        let token = &self.tokens[(seq as usize) % self.tokens.len()];
        let body = json!({"channel": "linkedin", "body": format!("Benchmark post {seq}.")});
        let answer = self.http.command(token, "create-post", &body).await;
        vec![Sample::now(
            "create-post",
            intended,
            answer.outcome(EXPECTED_REJECTIONS),
        )]
    }
}

/// `reserve-budget` then, once admitted, `commit-budget` for the same reservation.
struct HotTenant {
    http: Http,
    token: String,
    /// Reservations and commits the server answered 200 to, over the whole slice.
    reserved: AtomicU64,
    committed: AtomicU64,
    last_position: AtomicU64,
}

impl HotTenant {
    fn note_position(&self, body: &Value) {
        if let Some(position) = body["position"].as_u64() {
            self.last_position.fetch_max(position, Ordering::Relaxed);
        }
    }

    /// Reads the ledger back (after the read models caught up) and compares it with
    /// the answers: committed = commits × actual, reserved = open reservations × amount.
    async fn check_ledger(&self, admin: &str) -> String {
        let position = self.last_position.load(Ordering::Relaxed);
        let reserved = self.reserved.load(Ordering::Relaxed);
        let committed = self.committed.load(Ordering::Relaxed);
        let path = format!("/v1/budget?min_position={position}");
        // The read models may still be catching up (through Kafka on production): the
        // check is about what the ledger holds, not how fast, so it waits for them.
        let asked = Instant::now();
        let deadline = asked + LEDGER_CHECK_WAIT;
        let mut view = self.http.get(admin, &path).await;
        while matches!(&view, Answer::Refused(503, code) if code == "consistency_timeout")
            && Instant::now() < deadline
        {
            view = self.http.get(admin, &path).await;
        }
        match view {
            Answer::Ok(view) => {
                let want_committed = committed.saturating_mul(ACTUAL_MICROS as u64);
                let want_reserved = reserved
                    .saturating_sub(committed)
                    .saturating_mul(RESERVE_MICROS as u64);
                let got_committed = view["committed_micros"].as_u64().unwrap_or(u64::MAX);
                let got_reserved = view["reserved_micros"].as_u64().unwrap_or(u64::MAX);
                let hard = view["hard_limit_micros"].as_u64().unwrap_or(0);
                if got_committed == want_committed
                    && got_reserved == want_reserved
                    && got_committed.saturating_add(got_reserved) <= hard
                {
                    let waited = asked.elapsed();
                    let waited = if waited > Duration::from_secs(1) {
                        format!(
                            ", read models caught up after {:.1} s",
                            waited.as_secs_f64()
                        )
                    } else {
                        String::new()
                    };
                    format!("ledger check ok ({committed} commits, no overspend{waited})")
                } else {
                    format!(
                        "LEDGER MISMATCH: committed {got_committed} (answers say \
                         {want_committed}), reserved {got_reserved} (answers say {want_reserved})"
                    )
                }
            }
            Answer::Refused(status, code) => format!("ledger check failed: {status} {code}"),
            Answer::Failed(reason) => format!("ledger check failed: {reason}"),
        }
    }
}

#[async_trait]
impl Operation for HotTenant {
    async fn call(&self, _seq: u64, intended: Instant) -> Vec<Sample> {
        let reservation_id = Uuid::now_v7();
        let reserve = self
            .http
            .command(
                &self.token,
                "reserve-budget",
                &json!({
                    "reservation_id": reservation_id,
                    "amount_micros": RESERVE_MICROS,
                    "purpose": "benchmark",
                    "ttl_seconds": 3_600,
                }),
            )
            .await;
        let first = Sample::now(
            "reserve+commit",
            intended,
            reserve.outcome(EXPECTED_REJECTIONS),
        );
        let Answer::Ok(body) = &reserve else {
            return vec![first];
        };
        self.reserved.fetch_add(1, Ordering::Relaxed);
        self.note_position(body);
        // The commit is meant to go out the moment the reservation is answered.
        let commit_intended = first.done;
        let commit = self
            .http
            .command(
                &self.token,
                "commit-budget",
                &json!({"reservation_id": reservation_id, "actual_micros": ACTUAL_MICROS}),
            )
            .await;
        if let Answer::Ok(body) = &commit {
            self.committed.fetch_add(1, Ordering::Relaxed);
            self.note_position(body);
        }
        let second = Sample::now(
            "reserve+commit",
            commit_intended,
            commit.outcome(EXPECTED_REJECTIONS),
        );
        vec![first, second]
    }
}
