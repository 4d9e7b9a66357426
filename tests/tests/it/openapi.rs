//! The OpenAPI document: checked in, served, complete, and describing only routes
//! that exist.

use auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::spawn_app;

/// Where the checked-in document lives.
fn checked_in_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

/// The document as it is checked in: pretty JSON and a trailing newline.
fn rendered() -> String {
    let mut text =
        serde_json::to_string_pretty(&cli::openapi::document()).expect("document serializes");
    text.push('\n');
    text
}

#[test]
fn the_checked_in_document_is_the_generated_one() {
    let path = checked_in_path();
    let generated = rendered();
    if std::env::var("TIDEMARK_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let regenerate = "regenerate it with `TIDEMARK_BLESS=1 cargo test -p tests -- openapi` and commit the result";
    let checked_in = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {regenerate}", path.display()));
    if checked_in != generated {
        let differs_at = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its length".to_owned(), |n| format!("line {}", n + 1));
        panic!(
            "docs/openapi.json differs from cli::openapi::document() at {differs_at}; {regenerate}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_generated_one() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let served: Value = response.json().await.expect("json");
    assert_eq!(served, cli::openapi::document());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let app = spawn_app().await;
    let token = app.token(Uuid::now_v7(), Role::Admin);
    let document = cli::openapi::document();
    let paths = document["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{post_id}", &Uuid::new_v4().to_string())
            .replace("{generation_id}", &Uuid::new_v4().to_string())
            .replace("{network}", "mastodon");
        assert!(
            !concrete.contains('{'),
            "a path parameter the test does not know: {path}"
        );
        for method in item.as_object().expect("path item").keys() {
            let method: Method = method.to_uppercase().parse().expect("an HTTP method");
            let mut request = app
                .client
                .request(method.clone(), format!("{}{concrete}", app.address))
                .bearer_auth(&token);
            if method == Method::POST {
                request = request.json(&json!({}));
            }
            let response = request.send().await.expect("request sent");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND && body["code"] == "not_found"),
                "{method} {path} is documented but not routed: {body}"
            );
            // A documented operation documents the status it answered with.
            assert!(
                item[method.as_str().to_lowercase()]["responses"]
                    .get(status.as_str())
                    .is_some(),
                "{method} {path} answered {status}, which its responses do not list: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} operations documented");
    app.stop().await;
}

#[test]
fn every_command_is_documented_and_both_command_lists_agree() {
    let routed: Vec<&str> = command_api::commands::COMMANDS
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        routed,
        schemas::commands::COMMANDS,
        "the command table and the command bodies differ"
    );
    let document = cli::openapi::document();
    for route in command_api::commands::COMMANDS {
        let operation = &document["paths"][format!("/v1/commands/{}", route.name)]["post"];
        assert_eq!(
            operation["operationId"], route.name,
            "{} is not documented",
            route.name
        );
        assert!(
            operation["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .is_some_and(|schema| !schema.is_empty()),
            "{} has no request body schema",
            route.name
        );
        for (status, code) in route.errors {
            let description = operation["responses"][status.to_string()]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                description.contains(code),
                "{}: {status} {code} is not documented",
                route.name
            );
        }
    }
    let documented = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter(|p| p.starts_with("/v1/commands/"))
        .count();
    assert_eq!(
        documented,
        routed.len(),
        "the document lists a command that is not routed"
    );
}

#[test]
fn every_reference_in_the_document_resolves() {
    fn walk<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    refs.push(reference);
                }
                map.values().for_each(|v| walk(v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let document = cli::openapi::document();
    let mut refs = Vec::new();
    walk(&document, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| document.pointer(pointer));
        assert!(
            target.is_some(),
            "{reference} points at nothing in the document"
        );
    }
    let text = document.to_string();
    assert!(
        !text.contains("\"$defs\""),
        "a JSON Schema $defs was left in place"
    );
    assert!(
        !text.contains("\"$schema\""),
        "a JSON Schema $schema key was left in place"
    );
}
