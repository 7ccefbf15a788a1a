//! A git server over HTTP on loopback that checks a credential: git's own `git http-backend`
//! (CGI) behind a small axum server, serving the bare repositories under a directory. Every
//! request must carry `Authorization: Basic base64(x-access-token:TOKEN)` with the one token
//! given; one without it gets 401, one with another 403. Pushes are allowed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;

/// What the server saw: the path, whether the credential was the right one, the status.
pub type Seen = Arc<Mutex<Vec<(String, bool, u16)>>>;

#[derive(Clone)]
struct Server {
    root: PathBuf,
    authorization: String,
    seen: Seen,
}

/// Serves the bare repositories under `root` at the returned base URL (`http://127.0.0.1:P`),
/// to requests authorized by `token` alone.
pub fn start(root: PathBuf, token: &str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let server = Server {
        root,
        authorization: format!(
            "Basic {}",
            base64(format!("x-access-token:{token}").as_bytes())
        ),
        seen: seen.clone(),
    };
    let base = super::serve_on_loopback(axum::Router::new().fallback(serve).with_state(server));
    (base, seen)
}

/// Standard base64 with padding (HTTP basic auth's).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn serve(
    State(s): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let right = given.as_deref() == Some(s.authorization.as_str());
    let refuse = |status: StatusCode| {
        s.seen
            .lock()
            .unwrap()
            .push((uri.path().to_string(), right, status.as_u16()));
        (
            status,
            [("www-authenticate", "Basic realm=\"git\"")],
            "credential refused\n",
        )
            .into_response()
    };
    match given {
        None => return refuse(StatusCode::UNAUTHORIZED),
        Some(_) if !right => return refuse(StatusCode::FORBIDDEN),
        Some(_) => {}
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &s.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("REMOTE_USER", "x-access-token")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("git http-backend starts");
    let mut stdin = child.stdin.take().unwrap();
    let write = async move {
        let _ = stdin.write_all(&body).await;
        drop(stdin);
    };
    let (_, out) = tokio::join!(write, child.wait_with_output());
    let out = out.unwrap().stdout;
    // CGI: headers, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .expect("git http-backend answers with CGI headers");
    let head = String::from_utf8_lossy(&out[..split.0]).into_owned();
    let mut status = StatusCode::OK;
    let mut response = Response::builder();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
        } else {
            response = response.header(name.trim(), value);
        }
    }
    s.seen
        .lock()
        .unwrap()
        .push((uri.path().to_string(), true, status.as_u16()));
    response
        .status(status)
        .body(axum::body::Body::from(out[split.0 + split.1..].to_vec()))
        .unwrap()
}
