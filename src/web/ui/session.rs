//! Admin UI sessions: a random session id in an `HttpOnly; SameSite=Strict` cookie (`Secure`
//! behind https), and a CSRF token tied to that session. Sessions live in memory: a restarted
//! daemon (which makes a new admin token anyway) asks everyone to log in again.
//!
//! Session ids are kept by their SHA-256, so a lookup's timing says nothing about a valid id;
//! the admin token and CSRF tokens are compared in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};

/// The cookie's name.
pub const COOKIE: &str = "baton_session";
/// How long a session lasts without being used.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest go first): a bound on memory, not a security control.
const MAX_SESSIONS: usize = 1000;

/// A logged-in session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The CSRF token every POST of this session carries in its `csrf` field.
    pub csrf: String,
    last_used: Instant,
}

/// The sessions of one daemon.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<[u8; 32], Session>>>,
}

pub use crate::web::token::same;

/// 32 random bytes, hex. The OS's random source does not fail on Linux once booted.
pub fn random_hex() -> String {
    crate::web::token::random_hex().expect("the OS's random source is readable")
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// A new session; returns its id (for the cookie).
    pub fn create(&self) -> String {
        let id = random_hex();
        let mut map = self.inner.lock().unwrap();
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.last_used) < IDLE);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&id),
            Session {
                csrf: random_hex(),
                last_used: now,
            },
        );
        id
    }

    /// The session the request's cookie names, if it is live.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers)?;
        let mut map = self.inner.lock().unwrap();
        let k = key(&id);
        let now = Instant::now();
        let live = map
            .get(&k)
            .is_some_and(|s| now.duration_since(s.last_used) < IDLE);
        if !live {
            map.remove(&k);
            return None;
        }
        let s = map.get_mut(&k)?;
        s.last_used = now;
        Some(s.clone())
    }

    /// Whether the request's session is still live, without counting this as a use (an open
    /// event stream checks before each message, so a logout ends it).
    pub fn is_live(&self, headers: &HeaderMap) -> bool {
        let Some(id) = cookie(headers) else {
            return false;
        };
        let map = self.inner.lock().unwrap();
        map.get(&key(&id))
            .is_some_and(|s| s.last_used.elapsed() < IDLE)
    }

    /// Ends the request's session.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.inner.lock().unwrap().remove(&key(&id));
        }
    }
}

/// The session id from the `Cookie` header.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        IDLE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_logout() {
        let sessions = Sessions::default();
        let id = sessions.create();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("other=1; {COOKIE}={id}").parse().unwrap(),
        );
        let s = sessions.get(&headers).expect("live session");
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(s.csrf, id);
        sessions.remove(&headers);
        assert!(sessions.get(&headers).is_none());
        let mut wrong = HeaderMap::new();
        wrong.insert(header::COOKIE, format!("{COOKIE}=x{id}").parse().unwrap());
        assert!(sessions.get(&wrong).is_none());
    }

    #[test]
    fn cookies_say_httponly_strict_and_secure_only_behind_https() {
        assert!(set_cookie("a", false).contains("HttpOnly; SameSite=Strict"));
        assert!(!set_cookie("a", false).contains("Secure"));
        assert!(set_cookie("a", true).ends_with("; Secure"));
    }
}
