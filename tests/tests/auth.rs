//! Tokens and ownership: once a token exists every request needs one, each principal
//! sees only what it created (admins see all), a read-only token only reads, and the
//! browser's session cookie acts only from Weft's own pages.

use std::time::Duration;

use serde_json::{json, Value};
use weft_tests::{counter_chain, spawn_app, TestApp, TIMEOUT};

/// The ids a listing holds, under `key` (`runs` or `graphs`), by `id_key`.
fn ids<'a>(page: &'a Value, key: &str, id_key: &str) -> Vec<&'a str> {
    page[key]
        .as_array()
        .expect("a listing")
        .iter()
        .map(|entry| entry[id_key].as_str().expect("an id"))
        .collect()
}

#[tokio::test]
async fn two_principals_see_only_their_own_and_an_admin_sees_both() {
    let app = spawn_app().await;
    let root = app.as_principal(&app.create_token("root", true, false).await);
    let alice = app.as_principal(&app.create_token("alice", false, false).await);
    let bob = app.as_principal(&app.create_token("bob", false, false).await);

    let alices_graph = alice.create_graph(counter_chain(2)).await;
    let alices_run = alice.run_and_wait(&alices_graph, json!({"count": 0})).await;
    let alices_run = alices_run["run_id"].as_str().expect("run_id").to_owned();
    let bobs_graph = bob.create_graph(counter_chain(1)).await;
    let bobs_run = bob.run_and_wait(&bobs_graph, json!({"count": 10})).await;
    assert_eq!(bobs_run["state"]["count"], 11);
    let bobs_run = bobs_run["run_id"].as_str().expect("run_id").to_owned();

    // By id: another principal's graph and run do not exist for alice.
    for path in [
        format!("/graphs/{bobs_graph}"),
        format!("/runs/{bobs_run}"),
        format!("/graph/state/{bobs_run}"),
    ] {
        let (status, body) = alice.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            matches!(body["code"].as_str(), Some("run_not_found" | "graph_not_found")),
            "{body}"
        );
    }
    let (status, body) = alice.post(&format!("/runs/{bobs_run}/cancel"), &json!({})).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("run_not_found")));
    let (status, _) = alice.delete(&format!("/runs/{bobs_run}")).await;
    assert_eq!(status, 404);
    let (status, _) = alice.delete(&format!("/graphs/{bobs_graph}")).await;
    assert_eq!(status, 404);
    let (status, body) = alice
        .post("/graph/run", &json!({"graph_id": bobs_graph, "initial_state": {}}))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("graph_not_found")));

    // Over the WebSocket: bob's run is no run at all; alice's own streams whole.
    let theirs = alice.stream(&bobs_run, "").await.expect("a stream");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["type"], "error");
    assert_eq!(theirs[0]["detail"], format!("no run with id `{bobs_run}`"));
    let own = alice.stream(&alices_run, "").await.expect("a stream");
    assert_eq!(own.last().expect("events")["type"], "end");
    assert_eq!(own.last().expect("events")["state"]["count"], 2);

    // In listings: each sees only its own.
    let (_, page) = alice.get("/runs").await;
    assert_eq!(ids(&page, "runs", "run_id"), [alices_run.as_str()]);
    let (_, page) = bob.get("/runs").await;
    assert_eq!(ids(&page, "runs", "run_id"), [bobs_run.as_str()]);
    let (_, page) = alice.get("/graphs").await;
    assert_eq!(ids(&page, "graphs", "graph_id"), [alices_graph.as_str()]);
    let (_, page) = alice.get(&format!("/runs?graph_id={bobs_graph}")).await;
    assert!(ids(&page, "runs", "run_id").is_empty());

    // The admin sees both, and may read either.
    let (_, page) = root.get("/runs").await;
    assert_eq!(ids(&page, "runs", "run_id"), [bobs_run.as_str(), alices_run.as_str()]);
    let (_, page) = root.get("/graphs").await;
    assert_eq!(
        ids(&page, "graphs", "graph_id"),
        [bobs_graph.as_str(), alices_graph.as_str()]
    );
    let (status, body) = root.get(&format!("/runs/{alices_run}")).await;
    assert_eq!((status, body["run"]["state"]["count"].as_i64()), (200, Some(2)));

    // Metrics name every graph: admins only.
    let (status, body) = alice.get("/metrics").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("admin_only")));
    let response = root
        .client
        .get(format!("{}/metrics", root.address))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);

    // Presets are everyone's.
    let (status, presets) = bob.get("/presets").await;
    assert_eq!(status, 200);
    assert!(presets.as_array().is_some_and(|list| !list.is_empty()));
    let review = bob.create_graph(json!({"preset": "code_review"})).await;
    let (status, _) = alice.get(&format!("/graphs/{review}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_read_only_token_reads_but_cannot_create_run_or_cancel() {
    let app = spawn_app().await;
    let root = app.as_principal(&app.create_token("root", true, false).await);
    let auditor = app.as_principal(&app.create_token("audit", true, true).await);
    let reader = app.as_principal(&app.create_token("reader", false, true).await);
    let graph = root
        .create_graph(weft_tests::chain([(
            "nap".to_owned(),
            json!({"tool": "sleep", "config": {"ms": 2_000}}),
        )]))
        .await;
    let run = root.start_run(&graph, json!({})).await;

    for client in [&auditor, &reader] {
        let (status, body) = client.post("/graph/create", &counter_chain(1)).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("read_only")), "{body}");
        let (status, body) = client
            .post("/graph/run", &json!({"graph_id": graph, "initial_state": {}}))
            .await;
        assert_eq!((status, body["code"].as_str()), (403, Some("read_only")));
        let (status, body) = client.post(&format!("/runs/{run}/cancel"), &json!({})).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("read_only")));
        let (status, _) = client.delete(&format!("/graphs/{graph}")).await;
        assert_eq!(status, 403);
    }
    // Reading is allowed: the auditor sees everything, a plain reader its own (nothing).
    let (status, body) = auditor.get(&format!("/runs/{run}")).await;
    assert_eq!((status, body["run"]["run_id"].as_str()), (200, Some(run.as_str())));
    let (status, page) = reader.get("/runs").await;
    assert_eq!(status, 200);
    assert!(ids(&page, "runs", "run_id").is_empty());
    // The run went on untouched.
    assert_eq!(root.wait_for_end(&run).await["status"], "completed");
}

#[tokio::test]
async fn without_a_valid_token_every_request_gets_401() {
    let app = spawn_app().await;
    let token = app.create_token("alice", false, false).await;
    let (status, body) = app.get("/runs").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("token_required")), "{body}");
    let response = app
        .client
        .get(format!("{}/runs", app.address))
        .send()
        .await
        .expect("an answer");
    assert_eq!(
        response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"weft\"")
    );
    // Health and metrics are not exempt unless configured so.
    assert_eq!(app.get("/health").await.0, 401);
    // The way in, and the API's description, are public.
    assert_eq!(app.get("/openapi.json").await.0, 200);

    // A wrong secret for a real token's id, a token of the wrong shape, garbage.
    let (id_part, secret) = token.rsplit_once('_').expect("a token");
    let flipped = if secret.starts_with('0') { "1" } else { "0" };
    let wrong = format!("{id_part}_{flipped}{}", &secret[1..]);
    for presented in [wrong.as_str(), "weft_0000000000000000_", "hunter2"] {
        let (status, body) = app.as_principal(presented).get("/runs").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token")),
            "{presented}"
        );
    }
    let (status, _) = app.as_principal(&token).get("/runs").await;
    assert_eq!(status, 200);
    // A stream without a token is refused at the upgrade.
    let refused = app.stream("whatever", "").await.expect_err("no stream without a token");
    assert!(refused.to_string().contains("401"), "{refused}");
}

#[tokio::test]
async fn a_revoked_token_gets_401_within_a_second() {
    let app = spawn_app().await;
    let alice = app.as_principal(&app.create_token("alice", false, false).await);
    assert_eq!(alice.get("/runs").await.0, 200);
    let printed = weft_server::cli::run(
        weft_server::cli::Command::Revoke("alice".into()),
        &app.database.to_string_lossy(),
    )
    .await
    .expect("revoked");
    assert!(printed.starts_with("revoked `alice`"), "{printed}");
    // The server trusts what it read for a second at most.
    tokio::time::sleep(weft_server::auth::TOKEN_CACHE_TTL + Duration::from_millis(100)).await;
    let (status, body) = alice.get("/runs").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")));
    // The name can be given a new token, which owns what the old one did.
    let again = app.as_principal(&app.create_token("alice", false, false).await);
    assert_eq!(again.get("/runs").await.0, 200);
}

/// Signs in through the form as a browser would; answers the session cookie.
async fn sign_in(app: &TestApp, token: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .expect("a client");
    let response = client
        .post(format!("{}/auth/signin", app.address))
        .header("origin", &app.address)
        .form(&[("token", token), ("next", "/history")])
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/history");
    let cookie = response.headers()["set-cookie"].to_str().expect("text").to_owned();
    for attribute in ["weft_session=weft_", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    cookie.split(';').next().expect("name=value").to_owned()
}

#[tokio::test]
async fn the_session_cookie_acts_only_from_weft_own_origin() {
    let app = spawn_app().await;
    let token = app.create_token("alice", false, false).await;
    let cookie = sign_in(&app, &token).await;
    let post = |origin: Option<String>| {
        let mut request = app
            .client
            .post(format!("{}/graph/create", app.address))
            .header("cookie", &cookie)
            .json(&counter_chain(1));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move {
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    // From Weft's own page: allowed.
    let (status, body) = post(Some(app.address.clone())).await;
    assert_eq!(status, 200, "{body}");
    // Another port on this machine is another origin.
    let (status, body) = post(Some("http://127.0.0.1:1".to_owned())).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("cross_origin")), "{body}");
    // A foreign site is stopped at the edge already.
    let (status, body) = post(Some("https://evil.example".to_owned())).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("origin_not_allowed")));
    // A cookie without any word of where the request comes from.
    let (status, body) = post(None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("cross_origin")));
    // Reading with the cookie is fine, and sees alice's graph.
    let response = app
        .client
        .get(format!("{}/graphs", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("an answer");
    let page: Value = response.json().await.expect("JSON");
    assert_eq!(ids(&page, "graphs", "graph_id").len(), 1);
    // A bad token at the form goes back to it.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let response = client
        .post(format!("{}/auth/signin", app.address))
        .header("origin", &app.address)
        .form(&[("token", "weft_nope"), ("next", "//evil.example")])
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.headers()["location"], "/signin?error=invalid&next=/");
    assert!(response.headers().get("set-cookie").is_none());
    // A page asked for without a session is sent to sign in.
    let response = client
        .get(format!("{}/history?status=failed", app.address))
        .header("accept", "text/html")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(
        response.headers()["location"],
        "/signin?next=/history%3Fstatus%3Dfailed"
    );
}

#[tokio::test]
async fn with_no_token_weft_runs_open_and_says_so() {
    let app = spawn_app().await;
    let (status, session) = app.get("/auth/session").await;
    assert_eq!(status, 200);
    assert_eq!(
        session,
        json!({"required": false, "name": null, "admin": false, "read_only": false})
    );
    let graph = app.create_graph(counter_chain(1)).await;
    assert_eq!(app.run_and_wait(&graph, json!({})).await["state"]["count"], 1);
    // Once a token exists, the same requests need one (after the second the server
    // trusts its last look).
    app.create_token("alice", false, false).await;
    tokio::time::sleep(weft_server::auth::TOKEN_CACHE_TTL + Duration::from_millis(100)).await;
    assert_eq!(app.get("/runs").await.0, 401);
    let (_, session) = app.get("/auth/session").await;
    assert_eq!(session["required"], true);
}
