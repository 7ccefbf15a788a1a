//! A loopback proxy in front of Prism for the workflow tests on the `github` forge: it forwards
//! every call untouched and records its method, path and status, with one change to one answer:
//! GitHub's example issue carries a `pull_request` field (it is an example of a PR seen as an
//! issue), which the proxy drops so that the issue is an issue; and, when asked, a repository's
//! `clone_url` is answered as the test's own git server.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::Value;

/// Method, path and status of one call.
pub type Call = (String, String, u16);
pub type Calls = Arc<Mutex<Vec<Call>>>;

#[derive(Clone)]
struct Proxy {
    prism: String,
    calls: Calls,
    http: reqwest::Client,
    /// Given: the `clone_url` of every repository answer becomes this (a git server of the
    /// test's own, where Prism's examples name github.com).
    clone_url: Option<String>,
}

async fn forward(
    State(p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut request = p
        .http
        .request(method.clone(), format!("{}{path}", p.prism))
        .body(body.to_vec());
    for name in ["content-type", "accept", "authorization"] {
        if let Some(v) = headers.get(name) {
            request = request.header(name, v.clone());
        }
    }
    let answer = request.send().await.expect("prism answers");
    let status = answer.status().as_u16();
    let mut text = answer.bytes().await.unwrap().to_vec();
    let is_issue = method == Method::GET
        && uri.path().contains("/issues/")
        && uri
            .path()
            .rsplit('/')
            .next()
            .is_some_and(|n| n.parse::<u64>().is_ok());
    if is_issue && status == 200 {
        let mut issue: Value = serde_json::from_slice(&text).unwrap();
        issue.as_object_mut().unwrap().remove("pull_request");
        text = serde_json::to_vec(&issue).unwrap();
    }
    let is_repository = method == Method::GET && uri.path().matches('/').count() == 3;
    if let (Some(url), true, 200) = (&p.clone_url, is_repository, status) {
        if uri.path().starts_with("/repos/") {
            let mut repo: Value = serde_json::from_slice(&text).unwrap();
            repo["clone_url"] = Value::String(url.clone());
            text = serde_json::to_vec(&repo).unwrap();
        }
    }
    p.calls
        .lock()
        .unwrap()
        .push((method.to_string(), uri.path().to_string(), status));
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        text,
    )
}

pub fn start_proxy(prism: String) -> (String, Calls) {
    start_proxy_with(prism, None)
}

/// [`start_proxy`], with every repository's `clone_url` answered as `clone_url`.
pub fn start_proxy_with(prism: String, clone_url: Option<String>) -> (String, Calls) {
    let calls: Calls = Arc::default();
    let proxy = Proxy {
        prism,
        calls: calls.clone(),
        http: reqwest::Client::new(),
        clone_url,
    };
    let base = super::serve_on_loopback(axum::Router::new().fallback(forward).with_state(proxy));
    (base, calls)
}
