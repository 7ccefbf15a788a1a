//! The webhook listener on loopback, fed GitHub's real example payloads
//! (`@octokit/webhooks-examples`), signed here; the local forge answers permission checks.

use crate::common_forge;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use baton::ci::wake::CiWakes;
use baton::forge::local::LocalForge;
use baton::forge::{BoxFuture, Forge, Permission, Repo};
use baton::triggers::{
    Command, EventIdentity, Job, JobAction, SenderPolicy, Subject, Trigger, TriggerOn,
};
use baton::web::webhook::{
    DispatchOutcome, JobError, JobSink, Webhook, WebhookOptions, WebhookSecret, MAX_BODY, PATH,
};
use serde_json::{json, Value};

/// A sink that records jobs and keeps delivery ids like the daemon's store would.
#[derive(Default)]
struct Sink {
    jobs: Mutex<Vec<Job>>,
    stored: Mutex<HashSet<String>>,
    /// The next dispatch fails (the store is down), storing nothing.
    fail_next: std::sync::atomic::AtomicBool,
}

impl Sink {
    fn jobs(&self) -> Vec<Job> {
        self.jobs.lock().unwrap().clone()
    }
}

impl JobSink for Sink {
    fn seen_delivery<'a>(&'a self, delivery_id: &'a str) -> BoxFuture<'a, Result<bool, JobError>> {
        Box::pin(async move { Ok(self.stored.lock().unwrap().contains(delivery_id)) })
    }

    fn seen_event<'a>(
        &'a self,
        identity: &'a EventIdentity,
    ) -> BoxFuture<'a, Result<bool, JobError>> {
        Box::pin(async move {
            Ok(self
                .stored
                .lock()
                .unwrap()
                .contains(&format!("event:{identity}")))
        })
    }

    fn dispatch(&self, job: Job) -> BoxFuture<'_, Result<DispatchOutcome, JobError>> {
        Box::pin(async move {
            if self
                .fail_next
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(JobError::Engine(baton_actors::Error::Io {
                    path: "jobs".into(),
                    source: std::io::Error::other("the store is down"),
                }));
            }
            if !self.stored.lock().unwrap().insert(job.delivery_id.clone()) {
                return Ok(DispatchOutcome::Duplicate);
            }
            if let Some(identity) = &job.identity {
                if !self
                    .stored
                    .lock()
                    .unwrap()
                    .insert(format!("event:{identity}"))
                {
                    return Ok(DispatchOutcome::Duplicate);
                }
            }
            let mut jobs = self.jobs.lock().unwrap();
            jobs.push(job);
            Ok(DispatchOutcome::Started {
                run_id: format!("run-{}", jobs.len()),
            })
        })
    }
}

/// `payload` made the event of `delivery` alone (see `Harness::deliver`).
fn as_event_of(payload: &Value, delivery: &str) -> Value {
    let mut payload = payload.clone();
    let id = delivery.bytes().fold(1_469_598_103_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
    }) >> 12;
    for object in ["comment", "review", "release"] {
        if let Some(o) = payload.get_mut(object).and_then(Value::as_object_mut) {
            o.insert("id".into(), id.into());
        }
    }
    for object in ["issue", "pull_request"] {
        if let Some(o) = payload.get_mut(object).and_then(Value::as_object_mut) {
            o.insert(
                "updated_at".into(),
                format!("2026-12-05T00:00:00Z/{delivery}").into(),
            );
        }
    }
    if let Some(o) = payload.as_object_mut() {
        if o.contains_key("after") {
            o.insert("after".into(), format!("{id:040x}").into());
        }
        // Payloads without those fields are known by their bytes.
        o.insert("test_delivery".into(), delivery.into());
    }
    payload
}

struct Harness {
    url: String,
    webhook: Webhook<Sink>,
    sink: Arc<Sink>,
    forge: Arc<LocalForge>,
    secret: WebhookSecret,
    client: reqwest::Client,
    repo: Repo,
    examples: Value,
    /// The registry the listener wakes CI waits through.
    ci_wakes: CiWakes,
    _tmp: tempfile::TempDir,
}

const SECRET: &str = "webhook-secret-for-tests";

/// The listener on 127.0.0.1:0, with `Codertocat/Hello-World` in a local forge: Codertocat is
/// admin, mallory has read; issue #1 exists for replies.
async fn harness(triggers: Vec<Trigger>, senders: SenderPolicy) -> Option<Harness> {
    let examples = common_forge::webhook_examples()?;
    let tmp = tempfile::tempdir().unwrap();
    let forge = Arc::new(LocalForge::open(tmp.path(), "baton-bot").unwrap());
    let repo = Repo::parse("Codertocat/Hello-World").unwrap();
    forge
        .create_repo(&repo, "main", &["Codertocat"])
        .await
        .unwrap();
    forge
        .set_permission(&repo, "mallory", Permission::Read)
        .await
        .unwrap();
    forge
        .create_issue_as(
            &repo,
            "Codertocat",
            "Spelling error in the README file",
            "",
            &[],
        )
        .await
        .unwrap();
    let secret = WebhookSecret::new(SECRET).unwrap();
    let sink = Arc::new(Sink::default());
    let ci_wakes = CiWakes::new();
    let webhook = Webhook::new(
        WebhookOptions {
            secret: secret.clone(),
            triggers,
            senders,
            ci_wakes: ci_wakes.clone(),
        },
        forge.clone() as Arc<dyn Forge>,
        Arc::clone(&sink),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{PATH}", listener.local_addr().unwrap());
    let app = webhook.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Some(Harness {
        url,
        webhook,
        sink,
        forge,
        secret,
        client: reqwest::Client::new(),
        repo,
        examples,
        ci_wakes,
        _tmp: tmp,
    })
}

fn policy() -> SenderPolicy {
    SenderPolicy {
        bot_login: Some("baton-bot".into()),
        ..SenderPolicy::default()
    }
}

/// Every trigger, with the label the examples carry (`bug`).
fn all_triggers() -> Vec<Trigger> {
    let mut triggers = Trigger::defaults();
    triggers.retain(|t| t.on != TriggerOn::IssueLabeled);
    triggers.push(Trigger {
        label: Some("bug".into()),
        ..Trigger::new(TriggerOn::IssueLabeled)
    });
    triggers.push(Trigger::new(TriggerOn::TagPush));
    triggers
}

impl Harness {
    fn example(&self, event: &str, action: Option<&str>) -> Value {
        common_forge::example(&self.examples, event, |e| {
            e.get("action").and_then(Value::as_str) == action
                && (event != "push" || e["deleted"] == json!(false))
        })
    }

    async fn post(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Delivers `payload` as the event of its own that `delivery` names. GitHub never sends one
    /// event under two delivery ids, so the payload's identifying fields (comment, review and
    /// release ids, `updated_at`, a push's `after`) are made the delivery's own: the same body
    /// under another id would be a replay, answered "duplicate"
    /// (`a_signed_body_under_a_new_delivery_id_is_a_duplicate` sends those with `post`).
    async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(&as_event_of(payload, delivery)).unwrap();
        let signature = self.secret.sign(&body);
        self.post(event, delivery, body, Some(signature)).await
    }

    async fn comments_on_issue_1(&self) -> Vec<String> {
        self.forge
            .comments(&self.repo, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.body)
            .collect()
    }
}

/// The harness, or (only with `BATON_ALLOW_SKIP=1` outside CI) a loud skip: a missing
/// `@octokit/webhooks-examples` fails the test through `require::missing`, naming it.
macro_rules! harness {
    ($triggers:expr, $policy:expr) => {
        match harness($triggers, $policy).await {
            Some(h) => h,
            None => return,
        }
    };
}

#[tokio::test]
async fn real_payloads_start_and_steer_runs() {
    let h = harness!(all_triggers(), policy());
    let mut assigned = h.example("issues", Some("assigned"));
    assigned["assignee"]["login"] = json!("baton-bot");
    let mut command = h.example("issue_comment", Some("created"));
    command["comment"]["body"] = json!("Looks right.\n/baton rollback 2");
    let start = |workflow: &str| JobAction::Start {
        workflow: workflow.into(),
    };
    let pr = Subject::PullRequest {
        number: 2,
        head: "changes".into(),
        head_sha: h.example("pull_request", Some("opened"))["pull_request"]["head"]["sha"]
            .as_str()
            .unwrap()
            .into(),
    };
    let synced = h.example("pull_request", Some("synchronize"));
    let synced_subject = Subject::PullRequest {
        number: 2,
        head: "changes".into(),
        head_sha: synced["pull_request"]["head"]["sha"]
            .as_str()
            .unwrap()
            .into(),
    };
    let cases: Vec<(&str, Value, &str, Subject, JobAction)> = vec![
        (
            "issues",
            h.example("issues", Some("opened")),
            "issues.opened",
            Subject::Issue { number: 1 },
            start("issue_to_pr"),
        ),
        (
            "issues",
            h.example("issues", Some("labeled")),
            "issues.labeled",
            Subject::Issue { number: 1 },
            start("issue_to_pr"),
        ),
        (
            "issues",
            assigned,
            "issues.assigned",
            Subject::Issue { number: 1 },
            start("issue_to_pr"),
        ),
        (
            "issue_comment",
            command,
            "issue_comment.created",
            Subject::Issue { number: 1 },
            JobAction::Steer {
                command: Command::Rollback(baton_actors::RollbackRequest::Steps(2)),
            },
        ),
        (
            "pull_request",
            h.example("pull_request", Some("opened")),
            "pull_request.opened",
            pr,
            start("pr_review"),
        ),
        (
            "pull_request",
            synced,
            "pull_request.synchronize",
            synced_subject,
            start("pr_review"),
        ),
        (
            "push",
            h.example("push", None),
            "push",
            Subject::Tag {
                name: "simple-tag".into(),
            },
            start("release_notes"),
        ),
        (
            "release",
            h.example("release", Some("published")),
            "release.published",
            Subject::Tag {
                name: "0.0.1".into(),
            },
            start("release_notes"),
        ),
    ];
    let mut expected = HashMap::new();
    for (i, (event, payload, name, subject, action)) in cases.into_iter().enumerate() {
        let delivery = format!("delivery-{i}");
        let (status, body) = h.deliver(event, &delivery, &payload).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (202, Some("queued")),
            "{name}: {body}"
        );
        expected.insert(delivery, (name, subject, action));
    }
    h.webhook.wait_idle().await;
    let jobs = h.sink.jobs();
    assert_eq!(jobs.len(), expected.len(), "{jobs:#?}");
    for job in jobs {
        let (name, subject, action) = &expected[&job.delivery_id];
        assert_eq!(job.event, *name);
        assert_eq!(&job.subject, subject, "{name}");
        assert_eq!(&job.action, action, "{name}");
        assert_eq!(job.sender, "Codertocat");
        assert_eq!(job.repo, h.repo);
    }

    // A comment without a command, and an issue labeled with another label, start nothing.
    let chatter = h.example("issue_comment", Some("created"));
    let (status, body) = h.deliver("issue_comment", "chatter", &chatter).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "{body}"
    );
    let mut other_label = h.example("issues", Some("labeled"));
    other_label["label"]["name"] = json!("question");
    let (status, body) = h.deliver("issues", "other-label", &other_label).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "{body}"
    );
    h.webhook.wait_idle().await;
    assert_eq!(h.sink.jobs().len(), expected.len());
}

#[tokio::test]
async fn bad_signatures_are_refused_and_nothing_happens() {
    let h = harness!(all_triggers(), policy());
    let payload = h.example("issues", Some("labeled"));
    let body = serde_json::to_vec(&payload).unwrap();
    let good = h.secret.sign(&body);
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let wrong_secret = WebhookSecret::new("not-the-secret").unwrap().sign(&body);
    let other_body = h.secret.sign(b"{}");
    let attempts: Vec<(&str, Option<String>)> = vec![
        ("no signature", None),
        ("flipped digit", Some(String::from_utf8(flipped).unwrap())),
        ("wrong secret", Some(wrong_secret)),
        ("another body's signature", Some(other_body)),
        ("sha1 prefix", Some(good.replace("sha256=", "sha1="))),
        ("not hex", Some("sha256=xyz".into())),
        ("empty", Some(String::new())),
    ];
    for (what, signature) in attempts {
        let (status, _) = h.post("issues", "d-1", body.clone(), signature).await;
        assert_eq!(status, 401, "{what}");
    }
    // Unsigned garbage is 401 too: the signature is checked before the body is parsed.
    let (status, _) = h.post("issues", "d-2", b"{not json".to_vec(), None).await;
    assert_eq!(status, 401);
    h.webhook.wait_idle().await;
    assert!(h.sink.jobs().is_empty());
    // The refused deliveries left no trace: the real one with the same id still runs.
    let (status, body) = h.post("issues", "d-1", body.clone(), Some(good)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("queued")),
        "{body}"
    );
    h.webhook.wait_idle().await;
    assert_eq!(h.sink.jobs().len(), 1);
}

#[tokio::test]
async fn malformed_oversized_ping_and_unknown() {
    let h = harness!(all_triggers(), policy());
    // Over 25 MB: 413, signed or not.
    let mut big = b"{\"pad\":\"".to_vec();
    big.resize(MAX_BODY + 1, b'a');
    big.extend_from_slice(b"\"}");
    let signature = h.secret.sign(&big);
    let (status, _) = h.post("issues", "big", big, Some(signature)).await;
    assert_eq!(status, 413);
    // Malformed JSON, a JSON array, a missing event header.
    let bad = b"{\"action\": \"opened\",".to_vec();
    let (status, body) = h
        .post("issues", "bad", bad.clone(), Some(h.secret.sign(&bad)))
        .await;
    assert_eq!(status, 400, "{body}");
    let array = b"[1, 2]".to_vec();
    let (status, _) = h
        .post(
            "issues",
            "array",
            array.clone(),
            Some(h.secret.sign(&array)),
        )
        .await;
    assert_eq!(status, 400);
    let payload = serde_json::to_vec(&h.example("issues", Some("labeled"))).unwrap();
    let response = h
        .client
        .post(&h.url)
        .header("x-github-delivery", "no-event")
        .header("x-hub-signature-256", h.secret.sign(&payload))
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // ping is 200.
    let ping = common_forge::example(&h.examples, "ping", |_| true);
    let (status, body) = h.deliver("ping", "ping-1", &ping).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pong")));
    // Events baton does not handle are 202 and ignored.
    let star = json!({"action": "created", "repository": {"full_name": "Codertocat/Hello-World"},
                      "sender": {"login": "Codertocat", "type": "User"}});
    let (status, body) = h.deliver("star", "star-1", &star).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")));
    let closed = h.example("issues", Some("reopened"));
    let (status, body) = h.deliver("issues", "closed-1", &closed).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")));
    h.webhook.wait_idle().await;
    assert!(h.sink.jobs().is_empty());
}

#[tokio::test]
async fn redeliveries_start_nothing_new() {
    let h = harness!(all_triggers(), policy());
    let payload = h.example("issues", Some("labeled"));
    let (status, _) = h.deliver("issues", "once", &payload).await;
    assert_eq!(status, 202);
    let (status, body) = h.deliver("issues", "once", &payload).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));

    // Twenty copies at the same moment: one job.
    let sends = (0..20).map(|_| h.deliver("issues", "burst", &payload));
    let results = futures_join_all(sends).await;
    let queued = results.iter().filter(|(s, _)| *s == 202).count();
    let duplicates = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((queued, duplicates), (1, 19), "{results:?}");

    // A delivery the store already has (the daemon restarted since): nothing.
    h.sink.stored.lock().unwrap().insert("from-before".into());
    let (status, body) = h.deliver("issues", "from-before", &payload).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));

    h.webhook.wait_idle().await;
    let ids: Vec<String> = h.sink.jobs().into_iter().map(|j| j.delivery_id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["burst", "once"]);
}

#[tokio::test]
async fn a_delivery_that_could_not_be_dispatched_can_be_redelivered() {
    let h = harness!(all_triggers(), policy());
    let payload = h.example("issues", Some("labeled"));
    h.sink
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _) = h.deliver("issues", "unlucky", &payload).await;
    assert_eq!(status, 202);
    h.webhook.wait_idle().await;
    assert!(h.sink.jobs().is_empty());
    // GitHub's "Redeliver": accepted again, and this time it runs.
    let (status, body) = h.deliver("issues", "unlucky", &payload).await;
    assert_eq!(status, 202, "{body}");
    h.webhook.wait_idle().await;
    assert_eq!(h.sink.jobs().len(), 1);
}

/// `join_all` without the futures crate: spawn and await in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<(u16, Value)>
where
    F: std::future::Future<Output = (u16, Value)>,
{
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut set = Vec::new();
    // Poll them together: a small select loop over pinned futures.
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for slot in pending.iter_mut() {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => {
                        set.push(out);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    set
}

#[tokio::test]
async fn senders_without_permission_get_nothing_run_and_a_reply() {
    let senders = SenderPolicy {
        deny_reply: Some("only people with write access can run baton here.".into()),
        ..policy()
    };
    let h = harness!(all_triggers(), senders);
    let mut command = h.example("issue_comment", Some("created"));
    command["comment"]["body"] = json!("/baton run");
    command["sender"]["login"] = json!("mallory");
    let (status, body) = h.deliver("issue_comment", "m-1", &command).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("queued")));
    // Someone GitHub has never heard of.
    command["sender"]["login"] = json!("stranger");
    let (status, _) = h.deliver("issue_comment", "m-2", &command).await;
    assert_eq!(status, 202);
    // Closing one's own issue asks nothing of baton: no job, and no reply either.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/issues.closed.json"
    );
    let mut closed: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    closed["repository"] = command["repository"].clone();
    closed["sender"]["login"] = json!("mallory");
    let (status, _) = h.deliver("issues", "m-3", &closed).await;
    assert_eq!(status, 202);
    h.webhook.wait_idle().await;
    assert!(h.sink.jobs().is_empty());
    assert_eq!(
        h.comments_on_issue_1().await,
        [
            "@mallory only people with write access can run baton here.",
            "@stranger only people with write access can run baton here.",
        ]
    );
}

#[tokio::test]
async fn without_a_reply_configured_denied_senders_hear_nothing() {
    let h = harness!(all_triggers(), policy());
    let mut labeled = h.example("issues", Some("labeled"));
    labeled["sender"]["login"] = json!("mallory");
    let (status, _) = h.deliver("issues", "m-1", &labeled).await;
    assert_eq!(status, 202);
    h.webhook.wait_idle().await;
    assert!(h.sink.jobs().is_empty());
    assert!(h.comments_on_issue_1().await.is_empty());
}

#[tokio::test]
async fn bots_are_ignored_unless_allowed() {
    let senders = SenderPolicy {
        allowed_bots: vec!["renovate[bot]".into()],
        ..policy()
    };
    let h = harness!(all_triggers(), senders);
    h.forge
        .set_permission(&h.repo, "renovate[bot]", Permission::Write)
        .await
        .unwrap();
    h.forge
        .set_permission(&h.repo, "dependabot[bot]", Permission::Write)
        .await
        .unwrap();
    let mut pr = h.example("pull_request", Some("opened"));
    pr["sender"] = json!({"login": "dependabot[bot]", "type": "Bot", "id": 49699333});
    let (status, body) = h.deliver("pull_request", "bot-1", &pr).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "{body}"
    );
    // baton's own comments never trigger it (no loops).
    let mut own = h.example("issue_comment", Some("created"));
    own["comment"]["body"] = json!("/baton retry");
    own["sender"]["login"] = json!("baton-bot");
    let (status, body) = h.deliver("issue_comment", "own-1", &own).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "{body}"
    );
    pr["sender"] = json!({"login": "renovate[bot]", "type": "Bot", "id": 29139614});
    let (status, body) = h.deliver("pull_request", "bot-2", &pr).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("queued")),
        "{body}"
    );
    h.webhook.wait_idle().await;
    let jobs = h.sink.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].sender, "renovate[bot]");
}

#[tokio::test]
async fn a_signed_body_under_a_new_delivery_id_is_a_duplicate() {
    let h = harness!(all_triggers(), policy());
    // A `/baton` command: the comment's id is its identity, whatever the delivery header says.
    let mut command = h.example("issue_comment", Some("created"));
    command["comment"]["body"] = json!("/baton run");
    let body = serde_json::to_vec(&command).unwrap();
    let signature = h.secret.sign(&body);
    let (status, answer) = h
        .post(
            "issue_comment",
            "first",
            body.clone(),
            Some(signature.clone()),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("queued")));
    h.webhook.wait_idle().await;
    for replay in ["replayed-1", "replayed-2"] {
        let (status, answer) = h
            .post(
                "issue_comment",
                replay,
                body.clone(),
                Some(signature.clone()),
            )
            .await;
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("duplicate")),
            "{replay}"
        );
    }
    // The same comment with another id is another command.
    command["comment"]["id"] = json!(command["comment"]["id"].as_u64().unwrap() + 1);
    let body = serde_json::to_vec(&command).unwrap();
    let (status, answer) = h
        .post(
            "issue_comment",
            "second",
            body.clone(),
            Some(h.secret.sign(&body)),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (202, Some("queued")));
    // An issue event: the object, the action and its own timestamp.
    let labeled = h.example("issues", Some("labeled"));
    let body = serde_json::to_vec(&labeled).unwrap();
    let signature = h.secret.sign(&body);
    let (status, _) = h
        .post("issues", "labeled-1", body.clone(), Some(signature.clone()))
        .await;
    assert_eq!(status, 202);
    let (status, answer) = h.post("issues", "labeled-2", body, Some(signature)).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    h.webhook.wait_idle().await;
    let jobs: Vec<String> = h.sink.jobs().into_iter().map(|j| j.delivery_id).collect();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert!(!jobs.iter().any(|j| j.starts_with("replayed")), "{jobs:?}");
}

#[tokio::test]
async fn permissions_are_cached_briefly() {
    for (ttl, expected_jobs) in [(60, 2), (0, 1)] {
        let senders = SenderPolicy {
            permission_cache_secs: ttl,
            ..policy()
        };
        let h = harness!(all_triggers(), senders);
        let mut command = h.example("issue_comment", Some("created"));
        command["comment"]["body"] = json!("/baton approve");
        h.deliver("issue_comment", "c-1", &command).await;
        h.webhook.wait_idle().await;
        // Codertocat loses write access; a cached "admin" still holds within the TTL.
        h.forge
            .set_permission(&h.repo, "Codertocat", Permission::Read)
            .await
            .unwrap();
        h.deliver("issue_comment", "c-2", &command).await;
        h.webhook.wait_idle().await;
        assert_eq!(h.sink.jobs().len(), expected_jobs, "cache ttl {ttl}s");
    }
}

#[tokio::test]
async fn triggers_are_configurable() {
    // Only the `baton` label (the default), and no tag pushes.
    let h = harness!(vec![Trigger::new(TriggerOn::IssueLabeled)], policy());
    let (status, body) = h
        .deliver("issues", "l-1", &h.example("issues", Some("labeled")))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "label is bug"
    );
    let mut labeled = h.example("issues", Some("labeled"));
    labeled["label"]["name"] = json!("baton");
    let (status, _) = h.deliver("issues", "l-2", &labeled).await;
    assert_eq!(status, 202);
    let (status, body) = h.deliver("push", "p-1", &h.example("push", None)).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")));
    h.webhook.wait_idle().await;
    let jobs = h.sink.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].delivery_id, "l-2");
}

/// GitHub's four kinds of CI news, real payloads each: accepted (2xx) and starting nothing;
/// news of the commit a run waits on wakes it, news of another commit (an older push) does not.
#[tokio::test]
async fn ci_news_wakes_the_wait_on_its_commit_and_no_other() {
    let h = harness!(all_triggers(), policy());
    let waited = "c0ffee".repeat(6) + "c0ff";
    let cases = [
        ("check_suite", Some("completed"), "/check_suite/head_sha"),
        ("check_run", Some("completed"), "/check_run/head_sha"),
        ("workflow_run", Some("completed"), "/workflow_run/head_sha"),
        ("status", None, "/sha"),
    ];
    for (n, (event, action, pointer)) in cases.into_iter().enumerate() {
        let watch = h.ci_wakes.watch(&waited);
        // The example as GitHub sent it: about some other commit.
        let other = h.example(event, action);
        let other_sha = other.pointer(pointer).and_then(Value::as_str).unwrap();
        assert_ne!(other_sha, waited);
        let (status, body) = h.deliver(event, &format!("ci-other-{n}"), &other).await;
        assert_eq!(status, 202, "{event}: {body}");
        assert_eq!(body["status"], "ignored", "{event}: {body}");
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), watch.woken());
        assert!(
            early.await.is_err(),
            "{event} about another commit woke the wait"
        );
        // The same event about the waited commit.
        let mut ours = other.clone();
        *ours.pointer_mut(pointer).unwrap() = json!(waited);
        let (status, body) = h.deliver(event, &format!("ci-ours-{n}"), &ours).await;
        assert_eq!(status, 202, "{event}: {body}");
        assert_eq!(body["status"], "woke", "{event}: {body}");
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.woken())
            .await
            .unwrap_or_else(|_| panic!("{event} about the waited commit did not wake it"));
    }
    h.webhook.wait_idle().await;
    assert!(
        h.sink.jobs().is_empty(),
        "CI news started or steered something"
    );
    // Unsigned CI news wakes nothing.
    let watch = h.ci_wakes.watch(&waited);
    let mut ours = h.example("check_run", Some("completed"));
    ours["check_run"]["head_sha"] = json!(waited);
    let body = serde_json::to_vec(&ours).unwrap();
    let (status, _) = h
        .post(
            "check_run",
            "ci-unsigned",
            body,
            Some(format!("sha256={}", "0".repeat(64))),
        )
        .await;
    assert_eq!(status, 401);
    let woken = tokio::time::timeout(std::time::Duration::from_millis(100), watch.woken());
    assert!(woken.await.is_err(), "an unsigned delivery woke the wait");
}
