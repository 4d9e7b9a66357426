//! The OpenAPI 3.1 document of every route, assembled from the path items the two
//! HTTP crates write from their own route tables. It is served at `/openapi.json` and
//! checked in as `docs/openapi.json`; a test fails when the two drift.

use serde_json::{Map, Value, json};

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    paths.extend(command_api::openapi::paths());
    paths.extend(query_api::openapi::paths());
    paths.insert(
        "/health".into(),
        json!({"get": {"operationId": "health", "summary": "Liveness", "tags": ["operations"],
            "responses": {"200": {"description": "The process is up",
                "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}}}}),
    );
    paths.insert(
        "/metrics".into(),
        json!({"get": {"operationId": "metrics", "summary": "Pipeline lag, in the Prometheus text format", "tags": ["operations"],
            "description": "Gauges read from the stores on each request: the event log's head position, the relay's checkpoint and lag (with Kafka), and the projectors' applied position and lag, in events. Not tenant-scoped; no token needed.",
            "responses": {
                "200": {"description": "Prometheus text exposition format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "503": {"description": "The stores could not be read", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"operationId": "openapi", "summary": "This document", "tags": ["operations"],
            "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {}}}}}}),
    );
    let mut components = Map::new();
    components.insert("Problem".into(), problem_schema());
    let mut paths = Value::Object(paths);
    hoist_definitions(&mut paths, &mut components);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tidemark",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Event-sourced core of an AI-powered marketing automation platform: commands append tenant-scoped events; queries read projected read models. The tenant always comes from the bearer token."
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details, served as application/problem+json.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "description": "urn:tidemark:problem:<code>"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "Stable machine-readable code"},
            "retry_after": {"type": "integer", "description": "Seconds after which a retry may succeed"}
        }
    })
}

/// Moves every nested JSON Schema `$defs` into `components/schemas`, drops `$schema`
/// keys, and points `#/$defs/…` references at the components, since a reference in an
/// OpenAPI document resolves against the document root.
fn hoist_definitions(value: &mut Value, components: &mut Map<String, Value>) {
    match value {
        Value::Object(map) => {
            map.remove("$schema");
            if let Some(Value::Object(defs)) = map.remove("$defs") {
                for (name, mut def) in defs {
                    hoist_definitions(&mut def, components);
                    components.insert(name, def);
                }
            }
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(name) = reference.strip_prefix("#/$defs/")
            {
                *reference = format!("#/components/schemas/{name}");
            }
            for child in map.values_mut() {
                hoist_definitions(child, components);
            }
        }
        Value::Array(items) => {
            for item in items {
                hoist_definitions(item, components);
            }
        }
        _ => {}
    }
}
