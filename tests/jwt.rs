//! Token verification against crafted tokens: the algorithm is pinned by each key's type
//! (`alg: none` and HS/RS confusion refused), claims are checked (`iss`, `aud`, `exp`,
//! `nbf`), several keys are live at once and chosen by `kid`, and a JWK Set from a file or
//! a URL is refreshed, keeping the last good set when a refresh fails.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use roomcast::auth::jwt::now_secs;
use roomcast::auth::{AuthError, JwtVerifier};
use roomcast::config::Config;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn verifier(auth: &str) -> JwtVerifier {
    let config = Config::from_toml(&format!("[auth]\nleeway_secs = 0\n{auth}")).unwrap();
    JwtVerifier::from_config(&config.auth).unwrap()
}

fn body(sub: &str) -> Value {
    json!({"sub": sub, "exp": now_secs() + 600})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs(secret: &str, kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        kid,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_fixture("rsa_private.pem")).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&read_fixture("ed25519_private.pem")).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read_fixture("ec_private.pem")).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token whose header and claims are written by hand, with the given signature part.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

const S1: &str = "first-secret-0123456789abcdef";
const S2: &str = "second-secret-0123456789abcdef";

#[test]
fn alg_none_is_refused_by_every_key_type() {
    let rsa = format!("jwt_public_key_file = \"{}\"", fixture("rsa_public.pem"));
    let secret = format!("jwt_secret = \"{S1}\"");
    for auth in [secret.as_str(), rsa.as_str()] {
        let v = verifier(auth);
        for alg in ["none", "None", "NONE"] {
            let t = raw_token(&json!({"alg": alg, "typ": "JWT"}), &body("alice"), "");
            assert_eq!(
                v.verify(&t),
                Err(AuthError::TokenInvalid),
                "{alg} with {auth}"
            );
        }
    }
}

#[test]
fn hs_rs_confusion_is_refused() {
    // The classic attack: HS256 keyed with the server's RSA *public* key, which is public.
    let public_pem = read_fixture("rsa_public.pem");
    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(&public_pem),
        &body("mallory"),
    );
    let rsa = verifier(&format!(
        "jwt_public_key_file = \"{}\"",
        fixture("rsa_public.pem")
    ));
    assert_eq!(rsa.verify(&forged), Err(AuthError::TokenInvalid));
    // The genuine RS256 token verifies...
    let genuine = sign(Algorithm::RS256, None, &rsa_key(), &body("alice"));
    assert_eq!(rsa.verify(&genuine).unwrap().user_id.as_str(), "alice");
    // ...but not against an HMAC key, nor an EdDSA token against an RSA key.
    let hmac = verifier(&format!("jwt_secret = \"{S1}\""));
    assert_eq!(hmac.verify(&genuine), Err(AuthError::TokenInvalid));
    let ed = sign(Algorithm::EdDSA, None, &ed_key(), &body("alice"));
    assert_eq!(rsa.verify(&ed), Err(AuthError::TokenInvalid));
    // The same with a kid naming the RSA key among several.
    let keyed = verifier(&format!(
        "[[auth.keys]]\nkid = \"rsa\"\npublic_key_file = \"{}\"\n[[auth.keys]]\nkid = \"hs\"\nsecret = \"{S1}\"",
        fixture("rsa_public.pem")
    ));
    let forged_kid = sign(
        Algorithm::HS256,
        Some("rsa"),
        &EncodingKey::from_secret(&public_pem),
        &body("mallory"),
    );
    assert_eq!(keyed.verify(&forged_kid), Err(AuthError::TokenInvalid));
}

#[test]
fn claims_are_checked() {
    let v = verifier(&format!(
        "jwt_secret = \"{S1}\"\nissuer = \"https://idp.example\"\naudience = \"roomcast\""
    ));
    let now = now_secs();
    let good =
        json!({"sub": "alice", "exp": now + 600, "iss": "https://idp.example", "aud": "roomcast"});
    assert!(v.verify(&hs(S1, None, &good)).is_ok());
    let with = |k: &str, val: Value| {
        let mut c = good.clone();
        c[k] = val;
        hs(S1, None, &c)
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        hs(S1, None, &c)
    };
    for (what, token, want) in [
        (
            "wrong iss",
            with("iss", json!("https://evil.example")),
            AuthError::TokenInvalid,
        ),
        ("missing iss", without("iss"), AuthError::TokenInvalid),
        (
            "wrong aud",
            with("aud", json!("other")),
            AuthError::TokenInvalid,
        ),
        (
            "aud list without ours",
            with("aud", json!(["a", "b"])),
            AuthError::TokenInvalid,
        ),
        ("missing aud", without("aud"), AuthError::TokenInvalid),
        ("missing exp", without("exp"), AuthError::TokenInvalid),
        (
            "exp not a number",
            with("exp", json!("soon")),
            AuthError::TokenInvalid,
        ),
        (
            "nbf in the future",
            with("nbf", json!(now + 300)),
            AuthError::TokenInvalid,
        ),
        (
            "expired",
            with("exp", json!(now - 10)),
            AuthError::TokenExpired,
        ),
        ("missing sub", without("sub"), AuthError::TokenInvalid),
    ] {
        assert_eq!(v.verify(&token), Err(want), "{what}");
    }
    assert!(v.verify(&with("nbf", json!(now - 5))).is_ok());
    assert!(v.verify(&with("aud", json!(["a", "roomcast"]))).is_ok());
}

#[test]
fn keys_are_chosen_by_kid() {
    let v = verifier(&format!(
        "jwt_secret = \"{S1}\"\n\
         [[auth.keys]]\nkid = \"2026-11\"\nsecret = \"{S2}\"\n\
         [[auth.keys]]\nkid = \"rsa-1\"\npublic_key_file = \"{}\"\n\
         [[auth.keys]]\nkid = \"ec-1\"\npublic_key_file = \"{}\"",
        fixture("rsa_public.pem"),
        fixture("ec_public.pem"),
    ));
    let ok = |t: &str| v.verify(t).map(|i| i.user_id.to_string());
    assert_eq!(ok(&hs(S2, Some("2026-11"), &body("a"))), Ok("a".into()));
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa_key(), &body("b"));
    assert_eq!(ok(&rs), Ok("b".into()));
    let es = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &body("c"));
    assert_eq!(ok(&es), Ok("c".into()));
    // An unknown kid is refused, even when another key would verify the signature.
    assert_eq!(
        ok(&hs(S2, Some("2026-10"), &body("a"))),
        Err(AuthError::TokenInvalid)
    );
    // A kid naming another key than the one that signed.
    assert_eq!(
        ok(&hs(S1, Some("2026-11"), &body("a"))),
        Err(AuthError::TokenInvalid)
    );
    let rs_as_ec = sign(Algorithm::RS256, Some("ec-1"), &rsa_key(), &body("b"));
    assert_eq!(ok(&rs_as_ec), Err(AuthError::TokenInvalid));
    // Without a kid every key of the token's algorithm family is tried.
    assert_eq!(ok(&hs(S1, None, &body("d"))), Ok("d".into()));
    assert_eq!(ok(&hs(S2, None, &body("e"))), Ok("e".into()));
    let rs_no_kid = sign(Algorithm::RS256, None, &rsa_key(), &body("f"));
    assert_eq!(ok(&rs_no_kid), Ok("f".into()));
    assert_eq!(
        ok(&hs("unknown-secret-0123456789", None, &body("g"))),
        Err(AuthError::TokenInvalid)
    );
    // Expiry is reported as such whichever key verified.
    let mut old = body("h");
    old["exp"] = json!(now_secs() - 10);
    assert_eq!(
        ok(&hs(S2, Some("2026-11"), &old)),
        Err(AuthError::TokenExpired)
    );
    assert_eq!(ok(&hs(S2, None, &old)), Err(AuthError::TokenExpired));
}

#[test]
fn a_single_key_ignores_kid_as_before() {
    // Only the single-key settings: a kid from the issuer does not matter.
    let v = verifier(&format!("jwt_secret = \"{S1}\""));
    assert!(v.verify(&hs(S1, Some("whatever"), &body("a"))).is_ok());
    let rsa = verifier(&format!(
        "jwt_public_key_file = \"{}\"",
        fixture("rsa_public.pem")
    ));
    assert!(
        rsa.verify(&sign(
            Algorithm::RS256,
            Some("idp-7"),
            &rsa_key(),
            &body("a")
        ))
        .is_ok()
    );
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// Waits until a connect with `token` gives `want` (`Ok` or the refusal code).
async fn until_connect(server: &TestServer, token: &str, want: Result<(), &str>) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = Client::connect(server.addr, Auth::Payload(json!({ "token": token })))
            .await
            .map(|_| ());
        if got.as_ref().map(|_| ()).map_err(String::as_str) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn jwk_sets_skip_keys_unfit_for_signatures() {
    // An `oct` key in a key set would let anyone holding the set sign tokens.
    let oct =
        Jwk::from_encoding_key(&EncodingKey::from_secret(S1.as_bytes()), Algorithm::HS256).unwrap();
    assert!(roomcast::auth::jwks::parse(jwks(vec![oct.clone()]).as_bytes()).is_err());
    let set = jwks(vec![oct, jwk(&ed_key(), Algorithm::EdDSA, "ed")]);
    assert_eq!(
        roomcast::auth::jwks::parse(set.as_bytes()).unwrap().len(),
        1
    );
    for bad in [
        "",
        "{}",
        "[]",
        "{\"keys\": 5}",
        "{\"keys\": [{\"kty\": \"RSA\"}]}",
    ] {
        assert!(
            roomcast::auth::jwks::parse(bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn jwks_file_is_used_and_refreshed() {
    let dir = std::env::temp_dir().join(format!(
        "roomcast-jwks-{}-{}",
        std::process::id(),
        now_secs()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(vec![jwk(&ed_key(), Algorithm::EdDSA, "ed-1")])).unwrap();
    let server = TestServer::start_with_auth(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\nleeway_secs = 0\njwks_file = \"{}\"\njwks_refresh_secs = 1",
        path.display()
    ))
    .await;
    let ed = sign(Algorithm::EdDSA, Some("ed-1"), &ed_key(), &body("alice"));
    let rs = sign(Algorithm::RS256, Some("rsa-2"), &rsa_key(), &body("bob"));
    until_connect(&server, &ed, Ok(())).await;
    until_connect(&server, &rs, Err("token_invalid")).await;
    // The HS secret still works beside the set.
    until_connect(&server, &token(&claims("carol")), Ok(())).await;
    // Rotation: the set now has only the RSA key.
    std::fs::write(
        &path,
        jwks(vec![jwk(&rsa_key(), Algorithm::RS256, "rsa-2")]),
    )
    .unwrap();
    until_connect(&server, &rs, Ok(())).await;
    until_connect(&server, &ed, Err("token_invalid")).await;
    // A broken file keeps the last good set.
    std::fs::write(&path, "{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    until_connect(&server, &rs, Ok(())).await;
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    until_connect(&server, &rs, Ok(())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_jwks_file_is_a_startup_error() {
    let config = Config::from_toml(&format!(
        "[auth]\njwks_file = \"{}\"",
        fixture("no-such-jwks.json")
    ))
    .unwrap();
    let err = roomcast::Roomcast::new(&config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("jwks_file"), "{err}");
}

/// What the little identity provider of the URL test serves: status and body.
type Served = Arc<Mutex<(u16, String)>>;

/// Serves `served` at `/.well-known/jwks.json`, counting the fetches in `fetches`.
async fn serve_jwks_counted(served: Served, fetches: Arc<AtomicUsize>) -> std::net::SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (served, fetches) = (served.clone(), fetches.clone());
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let (status, body) = served.lock().unwrap().clone();
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn serve_jwks(served: Served) -> std::net::SocketAddr {
    serve_jwks_counted(served, Arc::default()).await
}

#[tokio::test]
async fn jwks_url_is_fetched_refreshed_and_survives_outages() {
    let served: Served = Arc::new(Mutex::new((
        200,
        jwks(vec![jwk(&ec_key(), Algorithm::ES256, "ec-1")]),
    )));
    let idp = serve_jwks(served.clone()).await;
    let server = TestServer::start_with_auth(&format!(
        "[auth]\nleeway_secs = 0\njwks_url = \"http://{idp}/.well-known/jwks.json\"\njwks_refresh_secs = 1"
    ))
    .await;
    let ec = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &body("alice"));
    let ed = sign(Algorithm::EdDSA, Some("ed-2"), &ed_key(), &body("bob"));
    until_connect(&server, &ec, Ok(())).await;
    until_connect(&server, &ed, Err("token_invalid")).await;
    // Without a kid, the set's keys are tried too.
    let ec_no_kid = sign(Algorithm::ES256, None, &ec_key(), &body("dave"));
    until_connect(&server, &ec_no_kid, Ok(())).await;
    // Rotation: both keys during the overlap, then only the new one.
    *served.lock().unwrap() = (
        200,
        jwks(vec![
            jwk(&ec_key(), Algorithm::ES256, "ec-1"),
            jwk(&ed_key(), Algorithm::EdDSA, "ed-2"),
        ]),
    );
    until_connect(&server, &ed, Ok(())).await;
    until_connect(&server, &ec, Ok(())).await;
    *served.lock().unwrap() = (200, jwks(vec![jwk(&ed_key(), Algorithm::EdDSA, "ed-2")]));
    until_connect(&server, &ec, Err("token_invalid")).await;
    // The provider fails: the last good set stays.
    *served.lock().unwrap() = (500, "down".into());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    until_connect(&server, &ed, Ok(())).await;
    *served.lock().unwrap() = (200, "{\"keys\": []}".into());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    until_connect(&server, &ed, Ok(())).await;
}

#[tokio::test]
async fn an_unreachable_jwks_url_does_not_stop_the_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start_with_auth(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\njwks_url = \"http://127.0.0.1:{port}/jwks\""
    ))
    .await;
    until_connect(&server, &token(&claims("alice")), Ok(())).await;
    let ed = sign(Algorithm::EdDSA, Some("ed"), &ed_key(), &body("bob"));
    until_connect(&server, &ed, Err("token_invalid")).await;
}

#[tokio::test]
async fn a_new_kid_rereads_the_jwks_at_once_but_not_for_every_unknown_kid() {
    let served: Served = Arc::new(Mutex::new((
        200,
        jwks(vec![jwk(&ec_key(), Algorithm::ES256, "ec-1")]),
    )));
    let fetches = Arc::new(AtomicUsize::new(0));
    let idp = serve_jwks_counted(served.clone(), fetches.clone()).await;
    // The timed refresh is an hour away: only a re-read for the new kid can find it.
    let server = TestServer::start_with_auth(&format!(
        "[auth]\nleeway_secs = 0\njwks_url = \"http://{idp}/.well-known/jwks.json\"\njwks_refresh_secs = 3600"
    ))
    .await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "loaded once at startup");
    let connect = |token: String| async move {
        Client::connect(server.addr, Auth::Payload(json!({ "token": token })))
            .await
            .map(|_| ())
    };
    // The provider rotates: a token with the new kid connects at its first attempt.
    *served.lock().unwrap() = (
        200,
        jwks(vec![
            jwk(&ec_key(), Algorithm::ES256, "ec-1"),
            jwk(&ed_key(), Algorithm::EdDSA, "ed-2"),
        ]),
    );
    let ed = sign(Algorithm::EdDSA, Some("ed-2"), &ed_key(), &body("alice"));
    assert_eq!(connect(ed.clone()).await, Ok(()));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Made-up kids are refused without a fetch each (one re-read per 10 s at most).
    for n in 0..5 {
        let forged = sign(
            Algorithm::EdDSA,
            Some(&format!("nope-{n}")),
            &ed_key(),
            &body("eve"),
        );
        assert_eq!(connect(forged).await, Err("token_invalid".to_string()));
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "no fetch per unknown kid"
    );
    // Known kids never cause a fetch.
    let ec = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), &body("bob"));
    assert_eq!(connect(ec).await, Ok(()));
    assert_eq!(connect(ed).await, Ok(()));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_token_with_a_crit_header_is_refused() {
    // RFC 7515: extensions named in `crit` must be understood; Roomcast understands none.
    let server = TestServer::start().await;
    let claims = body("alice");
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let mut header = Header::new(Algorithm::HS256);
    let plain = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    header.crit = Some(vec!["https://example.com/must-understand".into()]);
    let critical = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    header.crit = Some(Vec::new());
    let empty = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let connect = |t: String| async move {
        Client::connect(server.addr, Auth::Payload(json!({ "token": t })))
            .await
            .err()
    };
    assert_eq!(connect(plain).await, None);
    assert_eq!(connect(critical).await.as_deref(), Some("token_invalid"));
    assert_eq!(connect(empty).await.as_deref(), Some("token_invalid"));
}

#[tokio::test]
async fn a_token_living_longer_than_max_token_lifetime_is_refused() {
    let server = TestServer::start_with_auth(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\nleeway_secs = 0\nmax_token_lifetime_secs = 3600"
    ))
    .await;
    let now = now_secs();
    for (what, claims, want) in [
        (
            "an hour",
            json!({"sub": "a", "iat": now, "exp": now + 3600}),
            None,
        ),
        (
            "no iat, 10 min",
            json!({"sub": "a", "exp": now + 600}),
            None,
        ),
        (
            "issued earlier, 30 min left",
            json!({"sub": "a", "iat": now - 1800, "exp": now + 1800}),
            None,
        ),
        (
            "two hours",
            json!({"sub": "a", "iat": now, "exp": now + 7200}),
            Some("token_invalid"),
        ),
        (
            "no iat, two hours",
            json!({"sub": "a", "exp": now + 7200}),
            Some("token_invalid"),
        ),
        // A future `iat` does not shorten the lifetime: it counts from now.
        (
            "future iat",
            json!({"sub": "a", "iat": now + 7000, "exp": now + 7200}),
            Some("token_invalid"),
        ),
        (
            "exp near 2^64",
            json!({"sub": "a", "iat": now, "exp": u64::MAX}),
            Some("token_invalid"),
        ),
    ] {
        let t = hs(SECRET, None, &claims);
        let err = Client::connect(server.addr, Auth::Payload(json!({ "token": t })))
            .await
            .err();
        assert_eq!(err.as_deref(), want, "{what}");
    }
}
