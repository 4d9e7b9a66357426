//! OpenAPI path items for the query routes.

use projector::{BudgetView, GenerationView, PostPage, PostView};
use serde_json::{Map, Value, json};

use crate::UsageReport;
use crate::http::ReservationList;

fn schema<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

fn param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn min_position() -> Value {
    param(
        "min_position",
        "Wait (bounded) until the read models include this global position, the `position` a command answered with; answers 503 consistency_timeout otherwise.",
        json!({"type": "integer", "minimum": 0}),
    )
}

fn period() -> Value {
    param(
        "period",
        "The month, YYYY-MM (UTC). Default: the current month.",
        json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}),
    )
}

fn get(
    operation_id: &str,
    summary: &str,
    parameters: Vec<Value>,
    ok: Value,
    errors: &[(u16, &str)],
) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "OK", "content": {"application/json": {"schema": ok}}}),
    );
    let mut all: Vec<(u16, &str)> = vec![
        (400, "invalid_query"),
        (401, "missing_token, invalid_token or token_expired"),
        (503, "consistency_timeout"),
    ];
    all.extend_from_slice(errors);
    all.sort();
    for (status, codes) in all {
        responses.insert(
            status.to_string(),
            json!({"description": codes, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
        );
    }
    json!({"get": {
        "operationId": operation_id, "summary": summary, "tags": ["queries"],
        "security": [{"bearer": []}], "parameters": parameters, "responses": responses
    }})
}

/// `paths` entries for every query route, keyed by path.
pub fn paths() -> Map<String, Value> {
    let mut paths = Map::new();
    paths.insert(
        "/v1/budget".into(),
        get(
            "get-budget",
            "The live budget balance of a month",
            vec![period(), min_position()],
            schema::<BudgetView>(),
            &[(404, "budget_not_configured")],
        ),
    );
    paths.insert(
        "/v1/budget/reservations".into(),
        get(
            "list-reservations",
            "A month's budget reservations, newest first",
            vec![
                period(),
                param(
                    "status",
                    "open (default), committed, released, expired or all",
                    json!({"type": "string", "enum": ["open", "committed", "released", "expired", "all"]}),
                ),
                param("limit", "Most items to return (1-1000, default 100)", json!({"type": "integer", "minimum": 1, "maximum": 1000})),
                min_position(),
            ],
            schema::<ReservationList>(),
            &[],
        ),
    );
    paths.insert(
        "/v1/posts".into(),
        get(
            "list-posts",
            "Posts in creation order, keyset-paginated",
            vec![
                param(
                    "status",
                    "Only posts in this state",
                    json!({"type": "string", "enum": ["draft", "scheduled", "publishing", "failed_retryable", "unconfirmed", "published", "partially_published", "failed", "cancelled", "removed"]}),
                ),
                param("channel", "Only posts with a target on this channel", json!({"type": "string"})),
                param("campaign_id", "Only posts of this campaign", json!({"type": "string", "format": "uuid"})),
                param("limit", "Page size (1-200, default 50)", json!({"type": "integer", "minimum": 1, "maximum": 200})),
                param("cursor", "The next_cursor of the previous page", json!({"type": "string"})),
                min_position(),
            ],
            schema::<PostPage>(),
            &[],
        ),
    );
    let mut by_id = get(
        "get-post",
        "One post",
        vec![min_position()],
        schema::<PostView>(),
        &[(404, "post_not_found")],
    );
    if let Some(params) = by_id
        .pointer_mut("/get/parameters")
        .and_then(Value::as_array_mut)
    {
        params.insert(
            0,
            json!({"name": "post_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}),
        );
    }
    paths.insert("/v1/posts/{post_id}".into(), by_id);
    let mut generation = get(
        "get-generation",
        "One content generation: status, text, model, tokens and cost",
        vec![min_position()],
        schema::<GenerationView>(),
        &[(404, "generation_not_found")],
    );
    if let Some(params) = generation
        .pointer_mut("/get/parameters")
        .and_then(Value::as_array_mut)
    {
        params.insert(
            0,
            json!({"name": "generation_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}),
        );
    }
    paths.insert("/v1/generations/{generation_id}".into(), generation);
    paths.insert(
        "/v1/usage".into(),
        get(
            "get-usage",
            "AI usage and cost totals per day, model, provider or campaign",
            vec![
                param("from", "First day included, YYYY-MM-DD (UTC). Default: the first of this month.", json!({"type": "string", "format": "date"})),
                param("to", "Last day included, YYYY-MM-DD (UTC). Default: today. At most 366 days after from.", json!({"type": "string", "format": "date"})),
                param(
                    "group_by",
                    "day (default), model (provider/model), provider or campaign (empty key: no campaign)",
                    json!({"type": "string", "enum": ["day", "model", "provider", "campaign"]}),
                ),
                min_position(),
            ],
            schema::<UsageReport>(),
            &[],
        ),
    );
    paths
}
