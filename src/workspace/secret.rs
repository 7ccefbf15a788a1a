//! Credentials for git and the redaction of anything that could show them.
//!
//! A token lives only in [`Credentials`]; it reaches git as an `http.<origin>.extraHeader`
//! value in the child's environment (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`),
//! which git reads without writing it to `.git/config`, and which `ps` does not show.

use std::fmt;

/// The user name GitHub expects beside an installation or personal access token.
const DEFAULT_USER: &str = "x-access-token";

/// A token for one remote. `Debug` prints `***`; there is deliberately no `Serialize`.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    token: String,
}

impl Credentials {
    /// A token used as the password of HTTP basic auth, with GitHub's `x-access-token` user.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            user: DEFAULT_USER.to_string(),
            token: token.into(),
        }
    }

    /// A token with another user name (for forges that want one).
    pub fn basic(user: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            token: token.into(),
        }
    }

    /// The `Authorization` header value git sends.
    pub(crate) fn header(&self) -> String {
        format!("Authorization: Basic {}", self.encoded())
    }

    fn encoded(&self) -> String {
        base64_encode(format!("{}:{}", self.user, self.token).as_bytes())
    }

    /// Every form of the secret that could appear in text: the token and the encoded header.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.token.is_empty() {
            out.push(self.token.clone());
        }
        out.push(self.encoded());
        out
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("token", &"***")
            .finish()
    }
}

/// Replaces every secret of `creds` and any `user:password@` part of a URL in `text` with `***`.
pub(crate) fn redact(text: &str, creds: Option<&Credentials>) -> String {
    let mut out = redact_userinfo(text);
    if let Some(c) = creds {
        for s in c.secrets() {
            if !s.is_empty() {
                out = out.replace(&s, "***");
            }
        }
    }
    out
}

/// `https://user:pass@host/x` → `https://***@host/x`, wherever a URL appears in `text`.
pub(crate) fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (for the auth header and for binary file contents in changes).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Decodes standard base64; `None` on any character outside the alphabet.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes());
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn redacts_tokens_headers_and_userinfo() {
        let c = Credentials::token("s3cret-tok");
        let text = format!(
            "fatal: https://bob:pw@example.com/x.git failed with s3cret-tok and {}",
            c.header()
        );
        let r = redact(&text, Some(&c));
        assert!(!r.contains("s3cret-tok"), "{r}");
        assert!(!r.contains("pw@"), "{r}");
        assert!(!r.contains(&c.encoded()), "{r}");
        assert!(r.contains("https://***@example.com/x.git"), "{r}");
        assert_eq!(
            format!("{c:?}"),
            "Credentials { user: \"x-access-token\", token: \"***\" }"
        );
    }
}
