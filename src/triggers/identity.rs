//! An event's own identity, the same in every delivery of it.
//!
//! `X-GitHub-Delivery` is not signed: whoever holds one signed body can send it again under a
//! new delivery id. Dedup therefore also keys on what the signed body itself says the event is:
//!
//! - a comment (a `/baton` command): the comment's id and the action;
//! - a review: its id and when it was submitted;
//! - an issue or pull request event: the object's id, the action and the object's `updated_at`,
//!   with the label, assignee or head commit the action is about;
//! - a push: the repository, the ref and the commit it moved to; a release: its id and the
//!   action; an edited comment: its id and when it was edited.
//!
//! Where a payload lacks those fields (they are always there in GitHub's own), the identity is
//! the SHA-256 of the whole body, which is what a replay repeats byte for byte.

use std::fmt;

use sha2::{Digest, Sha256};

use super::Payload;

/// What makes one event the event it is; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EventIdentity(String);

impl EventIdentity {
    /// The identity of `event` as `payload` (parsed from `body`) describes it.
    pub fn of(event: &str, payload: &Payload, body: &[u8]) -> EventIdentity {
        let action = payload.action.as_deref().unwrap_or("");
        let repo = payload
            .repository
            .as_ref()
            .and_then(|r| r.full_name.as_deref())
            .unwrap_or("");
        let named = format!("{event}.{action}");
        let parts = match event {
            "issue_comment" | "pull_request_review_comment" | "commit_comment" => {
                payload.comment.as_ref().and_then(|c| {
                    let mut parts = vec![format!("comment/{}", c.id?)];
                    // Each edit of a comment is an event of its own.
                    if action == "edited" {
                        parts.push(c.updated_at.clone()?);
                    }
                    Some(parts)
                })
            }
            "pull_request_review" => payload.review.as_ref().and_then(|r| {
                Some(vec![
                    format!("review/{}", r.id?),
                    r.submitted_at.clone().unwrap_or_default(),
                ])
            }),
            "issues" => payload.issue.as_ref().and_then(|i| {
                let mut parts = vec![format!("issue/{}", i.id?), i.updated_at.clone()?];
                parts.extend(about(payload));
                Some(parts)
            }),
            "pull_request" => payload.pull_request.as_ref().and_then(|p| {
                let mut parts = vec![format!("pull/{}", p.id?), p.updated_at.clone()?];
                let head = p.head.as_ref().and_then(|h| h.sha.clone());
                parts.push(format!("head/{}", head.unwrap_or_default()));
                parts.extend(about(payload));
                Some(parts)
            }),
            // The same commit pushed to two repositories is two events.
            "push" => payload
                .git_ref
                .clone()
                .zip(payload.after.clone())
                .map(|(git_ref, after)| vec![format!("repo/{repo}"), git_ref, after]),
            "release" => payload
                .release
                .as_ref()
                .and_then(|r| Some(vec![format!("release/{}", r.id?)])),
            _ => None,
        };
        EventIdentity(match parts {
            Some(parts) => format!("{named}/{}", parts.join("/")),
            None => format!("{named}/body/{}", hex::encode(Sha256::digest(body))),
        })
    }

    /// A bounded key for the store: the kind of event in clear, the rest hashed.
    pub fn key(&self) -> String {
        let kind = self.0.split('/').next().unwrap_or_default();
        let digest = hex::encode(&Sha256::digest(self.0.as_bytes())[..16]);
        format!("{kind}/{digest}")
    }
}

impl fmt::Display for EventIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The label or assignee an issue or pull request action is about: two labels added in the
/// same second are two events.
fn about(payload: &Payload) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(label) = payload.label.as_ref().and_then(|l| l.name.as_deref()) {
        parts.push(format!("label/{label}"));
    }
    if let Some(login) = payload.assignee.as_ref().and_then(|a| a.login.as_deref()) {
        parts.push(format!("assignee/{login}"));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(event: &str, body: serde_json::Value) -> EventIdentity {
        let bytes = serde_json::to_vec(&body).unwrap();
        EventIdentity::of(event, &serde_json::from_slice(&bytes).unwrap(), &bytes)
    }

    #[test]
    fn a_comment_is_its_id_whatever_else_changes() {
        let a = identity(
            "issue_comment",
            json!({"action": "created", "comment": {"id": 7, "body": "/baton run"}}),
        );
        let b = identity(
            "issue_comment",
            json!({"action": "created", "comment": {"id": 7, "body": "/baton run"}, "x": 1}),
        );
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "issue_comment.created/comment/7");
        let other = identity(
            "issue_comment",
            json!({"action": "created", "comment": {"id": 8, "body": "/baton run"}}),
        );
        assert_ne!(a, other);
        let edited = identity(
            "issue_comment",
            json!({"action": "edited", "comment": {"id": 7, "body": "/baton run"}}),
        );
        assert_ne!(a, edited);
    }

    #[test]
    fn issue_events_are_object_action_timestamp_and_what_they_are_about() {
        let labeled = |label: &str, at: &str| {
            identity(
                "issues",
                json!({"action": "labeled", "issue": {"id": 1, "number": 3, "updated_at": at},
                       "label": {"name": label}}),
            )
        };
        let t = "2026-12-05T07:00:00Z";
        assert_eq!(labeled("baton", t), labeled("baton", t));
        assert_ne!(labeled("baton", t), labeled("bug", t));
        assert_ne!(
            labeled("baton", t),
            labeled("baton", "2026-12-05T07:00:01Z")
        );
        assert_eq!(
            labeled("baton", t).to_string(),
            "issues.labeled/issue/1/2026-12-05T07:00:00Z/label/baton"
        );
    }

    #[test]
    fn pull_requests_pushes_and_reviews() {
        let pr = |sha: &str| {
            identity(
                "pull_request",
                json!({"action": "synchronize", "pull_request": {"id": 9, "number": 2,
                       "updated_at": "t", "head": {"ref": "f", "sha": sha}}}),
            )
        };
        assert_eq!(pr("a"), pr("a"));
        assert_ne!(pr("a"), pr("b"));
        let push =
            |after: &str| identity("push", json!({"ref": "refs/heads/main", "after": after}));
        assert_ne!(push("a"), push("b"));
        assert_eq!(push("a").to_string(), "push./repo//refs/heads/main/a");
        let elsewhere = identity(
            "push",
            json!({"ref": "refs/heads/main", "after": "a", "repository": {"full_name": "o/mirror"}}),
        );
        assert_ne!(push("a"), elsewhere);
        let edit = |at: &str| {
            identity(
                "issue_comment",
                json!({"action": "edited", "comment": {"id": 7, "updated_at": at}}),
            )
        };
        assert_ne!(edit("t1"), edit("t2"), "each edit is an event");
        let review = identity(
            "pull_request_review",
            json!({"action": "submitted", "review": {"id": 4, "submitted_at": "t"}}),
        );
        assert_eq!(
            review.to_string(),
            "pull_request_review.submitted/review/4/t"
        );
    }

    #[test]
    fn without_the_fields_the_body_is_the_identity() {
        let a = identity(
            "issues",
            json!({"action": "labeled", "issue": {"number": 3}}),
        );
        let b = identity(
            "issues",
            json!({"action": "labeled", "issue": {"number": 4}}),
        );
        assert_ne!(a, b);
        assert!(a.to_string().starts_with("issues.labeled/body/"), "{a}");
        assert_eq!(
            a,
            identity(
                "issues",
                json!({"action": "labeled", "issue": {"number": 3}})
            )
        );
        assert!(
            a.key().starts_with("issues.labeled/") && a.key().len() < 64,
            "{}",
            a.key()
        );
    }
}
