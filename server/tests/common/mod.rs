//! What the server's test files share: credentials for each role, a configuration, an
//! in-process client, and bundle archives.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use rulebox_server::{AppState, Role, ServerConfig, TokenConfig, router};
use rulebox_tests::{example_bundle, write_bundle};
use serde_json::Value;
use sha2::Digest;
use tower::ServiceExt;

pub fn token(name: &str, role: Role, bundles: Option<&[&str]>) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: hex::encode(sha2::Sha256::digest(format!("tok-{name}"))),
        role,
        bundles: bundles.map(|b| b.iter().map(|s| s.to_string()).collect()),
    }
}

pub fn config() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.auth.tokens = vec![
        token("viewer", Role::Viewer, None),
        token("evaluator", Role::Evaluator, None),
        token("operator", Role::Operator, None),
        token("admin", Role::Admin, None),
        token("scoped", Role::Evaluator, Some(&["payments"])),
        token("scoped-op", Role::Operator, Some(&["up"])),
    ];
    c.bundles.required = vec!["payments".into()];
    c.limits.max_batch = 3;
    c.limits.max_body_bytes = 4096;
    // An upload compiles its components: with a binary's tests running in parallel on a
    // 2-core CI box, one took longer than the default 10 s and was answered 503 (CI on
    // 696cf17). These tests are about the API, not about that limit.
    c.limits.request_timeout_ms = 120_000;
    c
}

pub struct Api {
    pub state: AppState,
    pub rt: tokio::runtime::Runtime,
}

impl Api {
    pub fn new(config: ServerConfig) -> Api {
        let rt = rulebox_tests::rt();
        let state = rt.block_on(async { AppState::new(config).unwrap() });
        Api { state, rt }
    }

    pub fn with_payments() -> Api {
        Api::with_config(config())
    }

    /// `config` with the payments example loaded.
    pub fn with_config(config: ServerConfig) -> Api {
        let api = Api::new(config);
        api.rt
            .block_on(api.state.registry().load(&example_bundle("payments")))
            .unwrap();
        api
    }

    pub fn call(
        &self,
        method: &str,
        uri: &str,
        who: Option<&str>,
        body: Body,
        ct: Option<&str>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(who) = who {
            req = req.header(header::AUTHORIZATION, format!("Bearer tok-{who}"));
        }
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(body).unwrap();
        self.rt.block_on(async {
            let resp = router(self.state.clone()).oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, json, headers)
        })
    }

    /// `GET uri` as the viewer.
    pub fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.call("GET", uri, Some("viewer"), Body::empty(), None);
        (s, v)
    }

    /// `GET uri` without credentials, as text (`/metrics`).
    pub fn text(&self, uri: &str) -> String {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        self.rt.block_on(async {
            let resp = router(self.state.clone()).oneshot(req).await.unwrap();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        })
    }

    /// `PUT uri` with a `.tar.gz` body as `who`.
    pub fn put_archive(&self, uri: &str, who: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let (s, v, _) = self.call(
            "PUT",
            uri,
            Some(who),
            Body::from(bytes),
            Some("application/gzip"),
        );
        (s, v)
    }

    pub fn json(
        &self,
        method: &str,
        uri: &str,
        who: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let (s, v, _) = self.call(
            method,
            uri,
            who,
            Body::from(body.to_string()),
            Some("application/json"),
        );
        (s, v)
    }
}

/// A packed archive of a one-rule bundle named `name` at `revision`, whose golden case
/// expects `verdict`.
pub fn archive(name: &str, revision: &str, verdict: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(
        dir.path(),
        &format!(
            "[bundle]\nformat = 1\nname = \"{name}\"\nrevision = \"{revision}\"\n[[rule]]\nname = \"r\"\ncomponent = \"echo.wasm\"\nsettings = {{ verdict = \"allow\" }}\n[[test]]\ninput = {{}}\nverdict = \"{verdict}\"\n"
        ),
    );
    pack(dir.path())
}

/// A packed archive of the bundle directory `dir`.
pub fn pack(dir: &std::path::Path) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    rulebox::bundle::pack(dir, out.path(), None, &Default::default()).unwrap();
    std::fs::read(out.path()).unwrap()
}
