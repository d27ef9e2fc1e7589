//! Every HTTP endpoint enforces its scope; CORS lets only the configured origins read
//! answers (API and Socket.IO long-polling alike).

mod common;

use common::*;
use reqwest::Method;
use roomcast::http::Guard;

/// A concrete path for an endpoint's route pattern.
fn concrete(path: &str) -> String {
    path.replace("{room}", "project:1")
        .replace("{user_id}", "alice")
        .replace("{name}", "deploy")
}

async fn call(
    server: &TestServer,
    method: &Method,
    path: &str,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method.clone(), server.url(&concrete(path)))
        .header("content-type", "application/json");
    if *method == Method::POST {
        req = req.body("{}");
    }
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn every_endpoint_enforces_its_scope() {
    let server = TestServer::start().await;
    let endpoints = roomcast::http::endpoint_table();
    assert!(endpoints.len() >= 9, "the table lists every endpoint");
    for e in &endpoints {
        let method = Method::from_bytes(e.method.as_str().as_bytes()).unwrap();
        let what = format!("{} {}", e.method, e.path);
        let scope = match e.guard {
            Guard::Open => {
                let (status, _) = call(&server, &method, e.path, None).await;
                assert_eq!(status, 200, "{what} needs no key");
                continue;
            }
            Guard::GithubSignature => {
                // No API key opens it: without `[github] webhook_secret` it is off, and with one
                // only a signed body gets in (tests/webhooks.rs).
                let (status, body) = call(&server, &method, e.path, Some(KEY)).await;
                assert_eq!(status, 404, "{what}: {body}");
                assert_eq!(body["error"]["code"], "github_not_configured", "{what}");
                continue;
            }
            Guard::ClientToken => {
                // An API key is no client token; a client token passes the guard (the
                // request then lacks its rooms: the answer is a 422, not a stream).
                let bearer = |key: Option<&str>| {
                    let req = reqwest::Client::new().request(method.clone(), server.url(e.path));
                    match key {
                        Some(key) => req.bearer_auth(key),
                        None => req,
                    }
                };
                let jwt = token(&claims("alice"));
                for (key, code) in [
                    (None, "token_missing"),
                    (Some(KEY), "token_invalid"),
                    (Some("not-a-jwt"), "token_invalid"),
                ] {
                    let resp = bearer(key).send().await.expect("request");
                    assert_eq!(resp.status(), 401, "{what} with {key:?}");
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    assert_eq!(body["error"]["code"], code, "{what}");
                }
                let resp = bearer(Some(&jwt)).send().await.expect("request");
                let status = resp.status().as_u16();
                assert!(status != 401 && status != 403, "{what}: {status}");
                continue;
            }
            Guard::Key(scope) => scope,
        };
        {
            {
                for key in [None, Some("not-a-key-at-all"), Some("")] {
                    let (status, body) = call(&server, &method, e.path, key).await;
                    assert_eq!(status, 401, "{what} with {key:?}");
                    assert_eq!(body["error"]["code"], "unauthorized", "{what}");
                }
                // READ_KEY has only `read`, ACME_KEY only `publish`, KEY `publish` and `read`.
                let (lacking, holding) = match scope {
                    roomcast::config::Scope::Publish => (READ_KEY, KEY),
                    roomcast::config::Scope::Read => (ACME_KEY, KEY),
                    roomcast::config::Scope::Admin => (KEY, ADMIN_KEY),
                };
                let (status, body) = call(&server, &method, e.path, Some(lacking)).await;
                assert_eq!(status, 403, "{what} without scope {}", scope.as_str());
                assert_eq!(body["error"]["code"], "forbidden", "{what}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(scope.as_str()),
                    "{what}: {body}"
                );
                let (status, _) = call(&server, &method, e.path, Some(holding)).await;
                assert!(
                    status != 401 && status != 403,
                    "{what} with the scope gave {status}"
                );
            }
        }
    }
}

const ALLOWED: &str = "https://app.example.com";
const REFUSED: &str = "https://evil.example.com";

async fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = reqwest::Client::new().request(method, server.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("request")
}

async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    request(
        server,
        Method::OPTIONS,
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ],
    )
    .await
}

async fn stats(server: &TestServer, origin: &str) -> reqwest::Response {
    request(
        server,
        Method::GET,
        "/api/v1/websocket/stats",
        &[("origin", origin), ("x-api-key", KEY)],
    )
    .await
}

fn allow_origin(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cors_answers_only_allowed_origins() {
    let server = TestServer::start_toml(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\ncors_origins = [\"{ALLOWED}\", \"http://localhost:3000\"]\n\
         [auth]\njwt_secret = \"{SECRET}\"\n\
         [[api_keys]]\nname = \"full\"\nkey = \"{KEY}\"\nscopes = [\"publish\", \"read\"]"
    ))
    .await;
    let polling = "/socket.io/?EIO=4&transport=polling";
    for path in ["/api/v1/events", "/api/v1/websocket/stats", polling] {
        // Preflight.
        let ok = preflight(&server, path, ALLOWED).await;
        assert!(ok.status().is_success(), "{path}: {}", ok.status());
        assert_eq!(allow_origin(&ok).as_deref(), Some(ALLOWED), "{path}");
        let methods = ok.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(methods.contains("POST"), "{methods}");
        let headers = ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{headers}"
        );
        let refused = preflight(&server, path, REFUSED).await;
        assert_eq!(
            allow_origin(&refused),
            None,
            "{path} preflight from {REFUSED}"
        );
    }
    // Actual requests.
    let ok = stats(&server, ALLOWED).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(allow_origin(&ok).as_deref(), Some(ALLOWED));
    let refused = stats(&server, REFUSED).await;
    assert_eq!(allow_origin(&refused), None);
    // Socket.IO long-polling goes through the same layer.
    let open = request(&server, Method::GET, polling, &[("origin", ALLOWED)]).await;
    assert_eq!(open.status(), 200);
    assert_eq!(allow_origin(&open).as_deref(), Some(ALLOWED));
    assert!(
        open.text().await.unwrap().starts_with('0'),
        "an engine.io open packet"
    );
    let open = request(&server, Method::GET, polling, &[("origin", REFUSED)]).await;
    assert_eq!(allow_origin(&open), None);
    // Origins match exactly: no prefix or suffix tricks.
    for origin in [
        "https://app.example.com.evil.com",
        "http://app.example.com",
        "https://APP.example.com:443x",
    ] {
        let resp = request(&server, Method::GET, "/health", &[("origin", origin)]).await;
        assert_eq!(allow_origin(&resp), None, "{origin}");
    }
}

#[tokio::test]
async fn without_cors_origins_no_origin_is_allowed() {
    let server = TestServer::start().await;
    for origin in [ALLOWED, "null", "http://127.0.0.1"] {
        let resp = request(
            &server,
            Method::OPTIONS,
            "/api/v1/events",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
        assert_eq!(allow_origin(&resp), None, "{origin}");
        let resp = request(
            &server,
            Method::GET,
            "/socket.io/?EIO=4&transport=polling",
            &[("origin", origin)],
        )
        .await;
        assert_eq!(allow_origin(&resp), None, "{origin}");
    }
}

fn cors_headers(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_refused_origin_gets_no_access_control_header_at_all() {
    let server = TestServer::start_toml(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\ncors_origins = [\"{ALLOWED}\"]\n\
         [auth]\njwt_secret = \"{SECRET}\"\n\
         [[api_keys]]\nname = \"full\"\nkey = \"{KEY}\"\nscopes = [\"publish\", \"read\"]"
    ))
    .await;
    let polling = "/socket.io/?EIO=4&transport=polling";
    for path in ["/api/v1/events", "/api/v1/websocket/stats", polling] {
        let ok = preflight(&server, path, ALLOWED).await;
        assert!(
            cors_headers(&ok).contains(&"access-control-allow-methods".to_owned()),
            "{path}: {:?}",
            cors_headers(&ok)
        );
        let refused = preflight(&server, path, REFUSED).await;
        assert_eq!(
            cors_headers(&refused),
            Vec::<String>::new(),
            "{path} preflight"
        );
    }
    let ok = stats(&server, ALLOWED).await;
    assert!(cors_headers(&ok).contains(&"access-control-expose-headers".to_owned()));
    let refused = stats(&server, REFUSED).await;
    assert_eq!(refused.status(), 200);
    assert_eq!(
        cors_headers(&refused),
        Vec::<String>::new(),
        "actual request"
    );
    for headers in [vec![("origin", REFUSED)], vec![]] {
        let open = request(&server, Method::GET, polling, &headers).await;
        assert_eq!(open.status(), 200);
        assert_eq!(
            cors_headers(&open),
            Vec::<String>::new(),
            "polling {headers:?}"
        );
    }
}
