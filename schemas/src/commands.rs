//! Request bodies of the command API, and their JSON Schemas for the OpenAPI document.
//!
//! A body only fixes the *shape* of a request: field names, JSON types, and which
//! fields may be left out. Whether a request makes sense (a hard limit above zero, a
//! publish time in the future, a post that can still be edited) is decided by the
//! domain, so that there is exactly one place those rules live. The ranges in the
//! schemas repeat the domain's limits for API users' benefit, taken from the domain's
//! constants where it exports them. Every body refuses unknown fields, so a typo in a
//! field name is an error instead of a silently ignored option.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// The kebab-case name of every command body, as used in `command_schema` and in the
/// checked-in `json/commands/<name>.json`.
pub const COMMANDS: &[&str] = &[
    "set-budget-limits",
    "reserve-budget",
    "commit-budget",
    "release-budget",
    "create-post",
    "edit-post",
    "schedule-post",
    "publish-post",
    "cancel-post",
    "retry-delivery",
    "resolve-unconfirmed",
    "generate-content",
];

/// The JSON Schema (draft 2020-12) of the named command body, or `None` for a name not
/// in [`COMMANDS`].
pub fn command_schema(name: &str) -> Option<Value> {
    let schema = match name {
        "set-budget-limits" => schemars::schema_for!(SetBudgetLimits),
        "reserve-budget" => schemars::schema_for!(ReserveBudget),
        "commit-budget" => schemars::schema_for!(CommitBudget),
        "release-budget" => schemars::schema_for!(ReleaseBudget),
        "create-post" => schemars::schema_for!(CreatePost),
        "edit-post" => schemars::schema_for!(EditPost),
        "schedule-post" => schemars::schema_for!(SchedulePost),
        "publish-post" => schemars::schema_for!(PublishPost),
        "cancel-post" => schemars::schema_for!(CancelPost),
        "retry-delivery" => schemars::schema_for!(RetryDelivery),
        "resolve-unconfirmed" => schemars::schema_for!(ResolveUnconfirmed),
        "generate-content" => schemars::schema_for!(GenerateContent),
        _ => return None,
    };
    Some(schema.to_value())
}

/// Sets the spending limits of a month's AI budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "soft_limit_micros": 400_000_000,
    "hard_limit_micros": 500_000_000,
    "alert_thresholds_pct": [50, 80, 100],
    "period": "2026-11"
}))]
pub struct SetBudgetLimits {
    /// Soft limit in micro-USD (1 USD = 1,000,000). Once committed spend passes it,
    /// non-essential AI work falls back to cheaper models or waits in a queue. Must not
    /// exceed `hard_limit_micros`.
    #[schemars(range(min = 0))]
    pub soft_limit_micros: i64,
    /// Hard limit in micro-USD. Committed plus reserved spend never exceeds it: a
    /// reservation that would is refused with `budget_exceeded`. Must be greater than 0.
    #[schemars(range(min = 1))]
    pub hard_limit_micros: i64,
    /// Percentages of the hard limit (each 1 to 100, at most 10 of them) at which
    /// committed spend raises a `budget.threshold_crossed` alert. Defaults to none.
    #[serde(default)]
    #[schemars(length(max = domain::budget::MAX_THRESHOLDS), inner(range(min = 1, max = 100)))]
    pub alert_thresholds_pct: Vec<u8>,
    /// The month the limits apply to, as `YYYY-MM` in UTC. Defaults to the current month.
    /// A month with no limits of its own inherits the previous month's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    pub period: Option<String>,
}

/// Holds part of this month's budget for work about to be done, before its cost is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "amount_micros": 25_000,
    "purpose": "generate 3 LinkedIn post drafts for campaign Q4 launch",
    "ttl_seconds": 600
}))]
pub struct ReserveBudget {
    /// The worst-case cost to hold, in micro-USD. Must be greater than 0 and fit in what
    /// the month has left under its hard limit, or the request is refused with
    /// `budget_exceeded`.
    #[schemars(range(min = 1))]
    pub amount_micros: i64,
    /// What the money is for, shown in usage reports and audit trails. 1 to 200 characters.
    #[schemars(length(min = 1, max = domain::budget::MAX_PURPOSE_CHARS))]
    pub purpose: String,
    /// How long to hold the amount, in seconds: 1 to 604800 (seven days). A reservation
    /// neither committed nor released by then expires and frees its amount.
    #[schemars(range(min = 1, max = domain::budget::MAX_TTL.num_seconds()))]
    pub ttl_seconds: i64,
    /// Id for the new reservation (a UUID). Omit it and the server picks one (a UUID v7)
    /// and returns it. An id that is already in use is refused with
    /// `reservation_already_exists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<Uuid>,
}

/// Settles a reservation at what the work actually cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "reservation_id": "0193a4b2-7c1e-7d3a-9f20-4c5b6a7d8e91",
    "actual_micros": 18_420
}))]
pub struct CommitBudget {
    /// The reservation to settle, as returned when it was made.
    pub reservation_id: Uuid,
    /// What the work actually cost, in micro-USD, 0 or more. It may exceed the reserved
    /// amount: the cost is recorded anyway, together with a `budget.overrun` event.
    #[schemars(range(min = 0))]
    pub actual_micros: i64,
}

/// Gives a reservation back unused, freeing its whole amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({ "reservation_id": "0193a4b2-7c1e-7d3a-9f20-4c5b6a7d8e91" }))]
pub struct ReleaseBudget {
    /// The reservation to release, as returned when it was made.
    pub reservation_id: Uuid,
}

/// Creates a draft post for one channel (`channel`) or several (`channels`): exactly
/// one of the two must be given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "channel": "linkedin",
    "body": "Our autumn release is out: scheduled posts now respect every time zone.",
    "campaign_id": "0193a4b0-1111-7abc-8def-0123456789ab"
}))]
#[schemars(extend("oneOf" = [{"required": ["channel"]}, {"required": ["channels"]}]))]
pub struct CreatePost {
    /// Where to publish, as a channel slug such as `linkedin` or `newsletter-eu`: 1 to 64
    /// characters of `a-z`, `0-9`, `-` and `_`. Give this or `channels`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// Several channels to publish to, 1 to 10 distinct slugs; each gets its own
    /// delivery. Give this or `channel`, not both: both, an empty list, a repeated
    /// channel or more than 10 are refused with `invalid_post_channels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = domain::post::MAX_TARGETS),
        inner(pattern(r"^[a-z0-9_-]{1,64}$"))
    )]
    pub channels: Option<Vec<String>>,
    /// The post text: 1 to 10000 characters, not only white space.
    #[schemars(length(min = 1, max = domain::post::MAX_BODY_CHARS))]
    pub body: String,
    /// The campaign the post belongs to, for reporting. Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Uuid>,
    /// Id for the new post (a UUID). Omit it and the server picks one (a UUID v7) and
    /// returns it. An id that is already in use is refused with `post_already_exists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<Uuid>,
}

/// Replaces the text of a draft or scheduled post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "post_id": "0193a4b3-0000-7000-8000-000000000001",
    "body": "Our autumn release is out: scheduled posts now respect every time zone!",
    "expected_version": 1
}))]
pub struct EditPost {
    /// The post to edit.
    pub post_id: Uuid,
    /// The new post text: 1 to 10000 characters, not only white space.
    #[schemars(length(min = 1, max = domain::post::MAX_BODY_CHARS))]
    pub body: String,
    /// The post version this edit is based on, as returned by the last command or query.
    /// When given and the post has changed since, the request is refused with a conflict
    /// instead of overwriting someone else's change. Omit it to apply the edit to
    /// whatever version is current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// Schedules a draft post to be published at a given time, or moves its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "post_id": "0193a4b3-0000-7000-8000-000000000001",
    "publish_at": "2026-11-03T09:00:00Z"
}))]
pub struct SchedulePost {
    /// The post to schedule.
    pub post_id: Uuid,
    /// When to publish, as an RFC 3339 timestamp (for example `2026-11-03T09:00:00Z`;
    /// other offsets are converted to UTC). Must be in the future.
    pub publish_at: DateTime<Utc>,
    /// The post version this request is based on; see `edit-post`. Omit it to apply to
    /// whatever version is current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// Publishes a draft, scheduled or failed post now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({ "post_id": "0193a4b3-0000-7000-8000-000000000001" }))]
pub struct PublishPost {
    /// The post to publish.
    pub post_id: Uuid,
    /// The post version this request is based on; see `edit-post`. Omit it to apply to
    /// whatever version is current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// Cancels a draft or scheduled post so that it is never published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "post_id": "0193a4b3-0000-7000-8000-000000000001",
    "expected_version": 2
}))]
pub struct CancelPost {
    /// The post to cancel.
    pub post_id: Uuid,
    /// The post version this request is based on; see `edit-post`. Omit it to apply to
    /// whatever version is current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// Delivers a failed target of a post again now, or brings forward the next attempt of
/// a target waiting after a transient failure. An operator command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({ "post_id": "0193a4b3-0000-7000-8000-000000000001" }))]
pub struct RetryDelivery {
    /// The post to deliver again.
    pub post_id: Uuid,
    /// The target to deliver again. Required when the post has several channels
    /// (`channel_required` otherwise); the other targets are left as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// The post version this request is based on; see `edit-post`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// How an operator settles an unconfirmed delivery, after looking at the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The post is on the network; give its `network_post_id` (and `url`).
    Published,
    /// The post is not on the network; it becomes failed and may be retried.
    Failed,
}

/// Settles a delivery whose outcome was unknown (the request may have reached the
/// network). An operator command: check the network first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "post_id": "0193a4b3-0000-7000-8000-000000000001",
    "outcome": "published",
    "network_post_id": "113505623198765432",
    "url": "https://mastodon.social/@tidemark/113505623198765432"
}))]
pub struct ResolveUnconfirmed {
    /// The unconfirmed post.
    pub post_id: Uuid,
    /// The unconfirmed target. Required when the post has several channels
    /// (`channel_required` otherwise); the other targets are left as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: Option<String>,
    /// What the operator found on the network.
    pub outcome: DeliveryOutcome,
    /// The network's id of the post; required when the outcome is `published`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_post_id: Option<String>,
    /// The post's public address, when published and known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why it failed, when the outcome is `failed`; defaults to a generic reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The post version this request is based on; see `edit-post`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// Asks an AI provider for content. The worst-case cost is reserved on this month's
/// budget before any provider is called; the answer (202) comes before the text, which
/// `GET /v1/generations/{id}` shows once generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = json!({
    "brief": "Announce the spring sale: 20% off all plans until 31 March.",
    "channel": "linkedin",
    "max_output_tokens": 400,
    "priority": "non_core"
}))]
pub struct GenerateContent {
    /// What to write about, 1 to 4,000 characters.
    #[schemars(length(min = 1, max = domain::generation::MAX_BRIEF_CHARS))]
    pub brief: String,
    /// Channel slug the content is for: 1 to 64 characters of `a-z`, `0-9`, `-` or `_`.
    #[schemars(pattern(r"^[a-z0-9_-]{1,64}$"))]
    pub channel: String,
    /// The campaign the spend is counted under, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Uuid>,
    /// Output ceiling in tokens, at least 1; clamped to the model's maximum. The
    /// reservation assumes all of it is used.
    #[schemars(range(min = 1))]
    pub max_output_tokens: u32,
    /// `core` keeps the requested model above the soft limit; `non_core` falls back to
    /// the tenant's cheaper model there.
    pub priority: GenerationPriority,
    /// A model from the price book, as `provider/model` or a bare model name one
    /// provider offers. Defaults to the configured default model. An unknown model is
    /// refused with `unknown_model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Client-chosen id (UUID); one is generated when absent. It also names the budget
    /// reservation, so a retried request can never reserve twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<Uuid>,
}

/// How much a generation matters when the budget runs low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GenerationPriority {
    /// Keeps the requested model until the hard limit.
    Core,
    /// Falls back to the tenant's cheaper model above the soft limit.
    NonCore,
}
