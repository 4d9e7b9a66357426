//! OpenAPI path items for the command routes, written from the same table that
//! registers them.

use serde_json::{Map, Value, json};

use crate::commands::COMMANDS;

/// `paths` entries for every command, keyed by path.
pub fn paths() -> Map<String, Value> {
    let mut paths = Map::new();
    for route in COMMANDS {
        let body_schema =
            schemas::commands::command_schema(route.name).unwrap_or_else(|| json!({}));
        let mut answer = Map::new();
        for id in route.answer_ids {
            answer.insert((*id).to_owned(), json!({"type": "string"}));
        }
        answer.insert(
            "position".to_owned(),
            json!({"type": "integer", "minimum": 0, "description": "Global log position of the command's last event; pass it as min_position to a query to read your own write."}),
        );
        let mut required: Vec<&str> = route.answer_ids.to_vec();
        required.push("position");
        let mut responses = Map::new();
        let done = if route.status == 202 {
            "The command was accepted; the work goes on after this answer."
        } else {
            "The command was carried out."
        };
        responses.insert(
            route.status.to_string(),
            json!({
                "description": done,
                "content": {"application/json": {"schema": {
                    "type": "object", "properties": answer, "required": required
                }}}
            }),
        );
        let mut codes: Vec<(u16, String)> = vec![
            (
                400,
                "malformed_json, invalid_body or invalid_idempotency_key".to_owned(),
            ),
            (
                401,
                "missing_token, invalid_token or token_expired".to_owned(),
            ),
            (403, format!("forbidden: needs the {} role", route.role)),
            (413, "payload_too_large".to_owned()),
            (415, "unsupported_media_type".to_owned()),
        ];
        for (status, code) in route.errors {
            codes.push((*status, (*code).to_owned()));
        }
        codes.push((422, "idempotency_key_reused".to_owned()));
        codes.sort();
        let mut merged: Vec<(u16, Vec<String>)> = Vec::new();
        for (status, code) in codes {
            match merged.last_mut() {
                Some((s, list)) if *s == status => list.push(code),
                _ => merged.push((status, vec![code])),
            }
        }
        for (status, list) in merged {
            responses.insert(
                status.to_string(),
                json!({
                    "description": list.join("; "),
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }),
            );
        }
        paths.insert(
            format!("/v1/commands/{}", route.name),
            json!({
                "post": {
                    "operationId": route.name,
                    "summary": route.summary,
                    "tags": ["commands"],
                    "security": [{"bearer": []}],
                    "parameters": [{
                        "name": "Idempotency-Key", "in": "header", "required": false,
                        "description": "Retrying with the same key returns the first answer; the same key with a different body is refused.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255}
                    }],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": body_schema}}},
                    "responses": responses,
                }
            }),
        );
    }
    paths.insert("/v1/webhooks/{network}".to_owned(), webhook_path());
    paths
}

/// The inbound webhook route (see `webhooks.rs`): no bearer token, a signature.
fn webhook_path() -> Value {
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    let header = |name: &str, description: &str| json!({"name": name, "in": "header", "required": true, "description": description, "schema": {"type": "string"}});
    json!({
        "post": {
            "operationId": "receive-webhook",
            "summary": "Receive a signed callback from a network about a delivered post",
            "tags": ["webhooks"],
            "security": [],
            "parameters": [
                {"name": "network", "in": "path", "required": true, "schema": {"type": "string"},
                 "description": "The network whose secrets sign the callback, e.g. mastodon."},
                header("webhook-id", "Unique per message; a repeated id is ignored."),
                header("webhook-timestamp", "Unix seconds of this attempt; at most 5 minutes off."),
                header("webhook-signature", "Space-separated v1,<base64 HMAC-SHA256> signatures over `{id}.{timestamp}.{raw body}`."),
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["type", "tenant_id", "post_id", "network_post_id"],
                "properties": {
                    "type": {"type": "string", "enum": ["post.delivery_confirmed", "post.removed"]},
                    "tenant_id": {"type": "string", "format": "uuid"},
                    "post_id": {"type": "string", "format": "uuid"},
                    "channel": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$",
                                "description": "The post's target the callback is about. May be left out when the post has one target, when the target already holds network_post_id, or (a confirmation) when one delivery waits for an answer."},
                    "network_post_id": {"type": "string"},
                    "url": {"type": "string"}
                }
            }}}},
            "responses": {
                "200": {"description": "Recorded, or a repeated id answered as the first time (header idempotent-replayed).",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": problem("missing_webhook_header or invalid_webhook_timestamp"),
                "401": problem("invalid_webhook_signature or stale_webhook_timestamp"),
                "404": problem("unknown_webhook_network; post_not_found"),
                "409": problem("invalid_post_transition"),
                "413": problem("payload_too_large"),
                "422": problem("invalid_webhook_body; invalid_network_post_id; channel_required; unknown_post_channel"),
            }
        }
    })
}
