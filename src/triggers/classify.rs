//! [`classify`]: one delivery (event name, payload) into a job or a reason to ignore it.
//! Pure: no IO, no clock.

use super::*;
use crate::forge::Repo;

/// Turns a delivery (event name, parsed payload) into a job, or says why it is ignored.
/// Pure: the sender's permission is checked later by the caller.
pub fn classify(
    event: &str,
    delivery_id: &str,
    payload: &Payload,
    triggers: &[Trigger],
    policy: &SenderPolicy,
) -> Classified {
    let ignored = |why: &str| Classified::Ignored(why.to_string());
    let action = payload.action.as_deref().unwrap_or("");

    let Some(full_name) = payload
        .repository
        .as_ref()
        .and_then(|r| r.full_name.as_deref())
    else {
        return ignored("the payload names no repository");
    };
    let Ok(repo) = Repo::parse(full_name) else {
        return ignored("the payload's repository name is not owner/name");
    };
    let Some(sender) = payload.sender.as_ref().and_then(|s| s.login.as_deref()) else {
        return ignored("the payload names no sender");
    };
    if policy.bot_login.as_deref() == Some(sender) {
        return ignored("the event is baton's own");
    }
    let is_bot = payload.sender.as_ref().and_then(|s| s.kind.as_deref()) == Some("Bot")
        || sender.ends_with("[bot]");
    if is_bot && !policy.allowed_bots.iter().any(|b| b == sender) {
        return ignored("the sender is a bot that is not allowed");
    }
    let active: Vec<&Trigger> = triggers.iter().filter(|t| t.applies_to(&repo)).collect();
    let find = |on: TriggerOn| active.iter().copied().find(|t| t.on == on);
    let event_name = if action.is_empty() {
        event.to_string()
    } else {
        format!("{event}.{action}")
    };
    let job = |subject: Subject, action: JobAction| {
        Classified::Job(Job {
            delivery_id: delivery_id.to_string(),
            event: event_name.clone(),
            sender: sender.to_string(),
            repo: repo.clone(),
            subject,
            action,
            identity: None,
        })
    };
    let issue_number = payload.issue.as_ref().and_then(|i| i.number);

    match event {
        "issues" => {
            let Some(number) = issue_number else {
                return ignored("the issue has no number");
            };
            let subject = Subject::Issue { number };
            match action {
                "opened" | "labeled" => {
                    let labels: Vec<&str> = if action == "opened" {
                        payload
                            .issue
                            .iter()
                            .flat_map(|i| i.labels.iter().flatten())
                            .filter_map(|l| l.name.as_deref())
                            .collect()
                    } else {
                        payload
                            .label
                            .iter()
                            .filter_map(|l| l.name.as_deref())
                            .collect()
                    };
                    let hit = active.iter().find(|t| {
                        t.on == TriggerOn::IssueLabeled
                            && labels.contains(&t.label.as_deref().unwrap_or(DEFAULT_LABEL))
                    });
                    match hit {
                        Some(t) => job(
                            subject,
                            JobAction::Start {
                                workflow: t.workflow(),
                            },
                        ),
                        None => ignored("no trigger's label is on the issue"),
                    }
                }
                "assigned" => match (find(TriggerOn::IssueAssigned), &policy.bot_login) {
                    (Some(t), Some(bot))
                        if payload.assignee.as_ref().and_then(|a| a.login.as_deref())
                            == Some(bot.as_str()) =>
                    {
                        job(
                            subject,
                            JobAction::Start {
                                workflow: t.workflow(),
                            },
                        )
                    }
                    (Some(_), None) => ignored("issue_assigned needs the bot's login configured"),
                    (Some(_), Some(_)) => ignored("the issue was assigned to someone else"),
                    (None, _) => ignored("no issue_assigned trigger"),
                },
                "closed" => job(subject, JobAction::IssueClosed),
                _ => ignored("issue action not handled"),
            }
        }
        "issue_comment" => {
            if action != "created" {
                return ignored("only new comments carry commands");
            }
            let Some(t) = find(TriggerOn::IssueComment) else {
                return ignored("no issue_comment trigger");
            };
            let Some(number) = issue_number else {
                return ignored("the issue has no number");
            };
            let body = payload
                .comment
                .as_ref()
                .and_then(|c| c.body.as_deref())
                .unwrap_or("");
            if let Some(instructions) = parse_revise(body) {
                let on_pull = payload
                    .issue
                    .as_ref()
                    .is_some_and(|i| i.pull_request.is_some());
                return if on_pull {
                    job(
                        Subject::Issue { number },
                        JobAction::Revise { instructions },
                    )
                } else {
                    ignored("`/baton revise` works on a pull request, not an issue")
                };
            }
            let on_pull = payload
                .issue
                .as_ref()
                .is_some_and(|i| i.pull_request.is_some());
            let start =
                |subject: Subject, workflow: String| job(subject, JobAction::Start { workflow });
            match parse_command(body) {
                None => ignored("the comment holds no /baton command"),
                Some(Err(why)) => Classified::Ignored(why.to_string()),
                Some(Ok(Said::Run)) => start(Subject::Issue { number }, t.workflow()),
                Some(Ok(Said::RunForce)) => job(
                    Subject::Issue { number },
                    JobAction::StartOrRevise {
                        workflow: t.workflow(),
                    },
                ),
                // The comment does not carry the head: the review reads the PR itself.
                Some(Ok(Said::Review)) if on_pull => start(
                    Subject::PullRequest {
                        number,
                        head: String::new(),
                        head_sha: String::new(),
                    },
                    find(TriggerOn::PullRequest).map_or_else(
                        || TriggerOn::PullRequest.default_workflow().to_string(),
                        Trigger::workflow,
                    ),
                ),
                Some(Ok(Said::Review)) => ignored("`/baton review` works on a pull request"),
                // The workflow the `bug` label starts, as if the issue had been labeled.
                Some(Ok(Said::Triage)) if !on_pull => start(
                    Subject::Issue { number },
                    active
                        .iter()
                        .find(|t| {
                            t.on == TriggerOn::IssueLabeled && t.label.as_deref() == Some(BUG_LABEL)
                        })
                        .map_or_else(|| TRIAGE_WORKFLOW.to_string(), |t| t.workflow()),
                ),
                Some(Ok(Said::Triage)) => ignored("`/baton triage` works on an issue"),
                Some(Ok(Said::FixCi)) if on_pull => {
                    job(Subject::Issue { number }, JobAction::FixCi)
                }
                Some(Ok(Said::FixCi)) => ignored("`/baton fix-ci` works on baton's pull request"),
                Some(Ok(Said::Steer(command))) => {
                    job(Subject::Issue { number }, JobAction::Steer { command })
                }
            }
        }
        "pull_request" if action == "closed" => {
            let pull = payload.pull_request.as_ref();
            let (Some(number), head) = (
                pull.and_then(|p| p.number),
                pull.and_then(|p| p.head.as_ref()),
            ) else {
                return ignored("the pull request payload is incomplete");
            };
            job(
                Subject::PullRequest {
                    number,
                    head: head.and_then(|h| h.name.clone()).unwrap_or_default(),
                    head_sha: head.and_then(|h| h.sha.clone()).unwrap_or_default(),
                },
                JobAction::PullRequestClosed {
                    merged: pull.and_then(|p| p.merged) == Some(true),
                },
            )
        }
        "pull_request_review" => {
            if action != "submitted" {
                return ignored("only a submitted review asks for a revision");
            }
            let state = payload.review.as_ref().and_then(|r| r.state.as_deref());
            if !state.is_some_and(|s| s.eq_ignore_ascii_case("changes_requested")) {
                return ignored("the review does not request changes");
            }
            // baton's own review (PR Review on baton's PR, under a token that is not a bot
            // account) must not start a revision: that would loop up to max_revisions.
            let body = payload.review.as_ref().and_then(|r| r.body.as_deref());
            if body.is_some_and(|b| b.contains(crate::forge::MARKER_PREFIX)) {
                return ignored("the review is baton's own");
            }
            if find(TriggerOn::PullRequestReview).is_none() {
                return ignored("no pull_request_review trigger");
            }
            let pull = payload.pull_request.as_ref();
            let head = pull.and_then(|p| p.head.as_ref());
            let Some(number) = pull.and_then(|p| p.number) else {
                return ignored("the pull request payload is incomplete");
            };
            job(
                Subject::PullRequest {
                    number,
                    head: head.and_then(|h| h.name.clone()).unwrap_or_default(),
                    head_sha: head.and_then(|h| h.sha.clone()).unwrap_or_default(),
                },
                JobAction::Revise {
                    instructions: String::new(),
                },
            )
        }
        "pull_request" => {
            if action != "opened" && action != "synchronize" {
                return ignored("pull request action not handled");
            }
            let Some(t) = find(TriggerOn::PullRequest) else {
                return ignored("no pull_request trigger");
            };
            let pull = payload.pull_request.as_ref();
            let head = pull.and_then(|p| p.head.as_ref());
            let (Some(number), Some(head), Some(head_sha)) = (
                pull.and_then(|p| p.number),
                head.and_then(|h| h.name.as_deref()),
                head.and_then(|h| h.sha.as_deref()),
            ) else {
                return ignored("the pull request payload is incomplete");
            };
            job(
                Subject::PullRequest {
                    number,
                    head: head.to_string(),
                    head_sha: head_sha.to_string(),
                },
                JobAction::Start {
                    workflow: t.workflow(),
                },
            )
        }
        "push" => {
            let Some(tag) = payload
                .git_ref
                .as_deref()
                .and_then(|r| r.strip_prefix("refs/tags/"))
            else {
                return ignored("a push to a branch");
            };
            if payload.deleted == Some(true) {
                return ignored("a tag deleted");
            }
            match find(TriggerOn::TagPush) {
                Some(t) => job(
                    Subject::Tag {
                        name: tag.to_string(),
                    },
                    JobAction::Start {
                        workflow: t.workflow(),
                    },
                ),
                None => ignored("no tag_push trigger"),
            }
        }
        "release" => {
            if action != "published" {
                return ignored("release action not handled");
            }
            let (Some(t), Some(tag)) = (
                find(TriggerOn::ReleasePublished),
                payload.release.as_ref().and_then(|r| r.tag_name.as_deref()),
            ) else {
                return ignored("no release_published trigger, or no tag");
            };
            job(
                Subject::Tag {
                    name: tag.to_string(),
                },
                JobAction::Start {
                    workflow: t.workflow(),
                },
            )
        }
        _ => ignored("event not handled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    fn payload(extra: Value) -> Value {
        let mut p = json!({
            "repository": {"full_name": "octo/app"},
            "sender": {"login": "alice", "type": "User"},
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    fn start(event: &str, p: Value, triggers: &[Trigger], policy: &SenderPolicy) -> String {
        let p: Payload = serde_json::from_value(p).unwrap();
        match classify(event, "d1", &p, triggers, policy) {
            Classified::Job(job) => format!("{:?} {:?}", job.action, job.subject),
            Classified::Ignored(why) => format!("ignored: {why}"),
        }
    }

    #[test]
    fn classification_table() {
        let all = {
            let mut t = Trigger::defaults();
            t.push(Trigger::new(TriggerOn::TagPush));
            t
        };
        let policy = SenderPolicy {
            bot_login: Some("baton-bot".into()),
            allowed_bots: vec!["friendly[bot]".into()],
            ..SenderPolicy::default()
        };
        let issue = json!({"number": 7, "labels": [{"name": "baton"}]});
        let cases: Vec<(&str, Value, &str)> = vec![
            ("issues", payload(json!({"action": "opened", "issue": issue})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "opened", "issue": {"number": 7, "labels": []}})),
             "ignored: no trigger's label is on the issue"),
            ("issues", payload(json!({"action": "labeled", "issue": {"number": 7}, "label": {"name": "baton"}})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "labeled", "issue": {"number": 7}, "label": {"name": "bug"}})),
             "Start { workflow: \"bug_triage\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "opened", "issue": {"number": 7, "labels": [{"name": "bug"}]}})),
             "Start { workflow: \"bug_triage\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "labeled", "issue": {"number": 7}, "label": {"name": "wontfix"}})),
             "ignored: no trigger's label is on the issue"),
            ("issues", payload(json!({"action": "assigned", "issue": {"number": 7}, "assignee": {"login": "baton-bot"}})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issues", payload(json!({"action": "assigned", "issue": {"number": 7}, "assignee": {"login": "bob"}})),
             "ignored: the issue was assigned to someone else"),
            ("issues", payload(json!({"action": "closed", "issue": issue})),
             "IssueClosed Issue { number: 7 }"),
            ("issues", payload(json!({"action": "reopened", "issue": issue})),
             "ignored: issue action not handled"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 9, "pull_request": {"url": "u"}}, "comment": {"body": "/baton revise use checked_div"}})),
             "Revise { instructions: \"use checked_div\" } Issue { number: 9 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton revise x"}})),
             "ignored: `/baton revise` works on a pull request, not an issue"),
            ("pull_request_review", payload(json!({"action": "submitted", "review": {"state": "changes_requested"}, "pull_request": {"number": 9, "head": {"ref": "f", "sha": "abc"}}})),
             "Revise { instructions: \"\" } PullRequest { number: 9, head: \"f\", head_sha: \"abc\" }"),
            ("pull_request_review", payload(json!({"action": "submitted", "review": {"state": "approved"}, "pull_request": {"number": 9}})),
             "ignored: the review does not request changes"),
            ("pull_request_review", payload(json!({"action": "submitted", "review": {"state": "changes_requested", "body": "❌ 1 test failed\n<!-- baton:review=pr_review:9 -->"}, "pull_request": {"number": 9}})),
             "ignored: the review is baton's own"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 9, "pull_request": {"url": "u"}}, "comment": {"body": "/baton fix-ci"}})),
             "FixCi Issue { number: 9 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton fix-ci"}})),
             "ignored: `/baton fix-ci` works on baton's pull request"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton rollback 2"}})),
             "Steer { command: Rollback(Steps(2)) } Issue { number: 7 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton run"}})),
             "Start { workflow: \"issue_to_pr\" } Issue { number: 7 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7, "pull_request": {"url": "x"}}, "comment": {"body": "/baton review"}})),
             "Start { workflow: \"pr_review\" } PullRequest { number: 7, head: \"\", head_sha: \"\" }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton review"}})),
             "ignored: `/baton review` works on a pull request"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "/baton triage"}})),
             "Start { workflow: \"bug_triage\" } Issue { number: 7 }"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7, "pull_request": {}}, "comment": {"body": "/baton triage"}})),
             "ignored: `/baton triage` works on an issue"),
            ("issue_comment", payload(json!({"action": "edited", "issue": {"number": 7}, "comment": {"body": "/baton run"}})),
             "ignored: only new comments carry commands"),
            ("issue_comment", payload(json!({"action": "created", "issue": {"number": 7}, "comment": {"body": "nice"}})),
             "ignored: the comment holds no /baton command"),
            ("pull_request", payload(json!({"action": "synchronize", "pull_request": {"number": 9, "head": {"ref": "f", "sha": "abc"}}})),
             "Start { workflow: \"pr_review\" } PullRequest { number: 9, head: \"f\", head_sha: \"abc\" }"),
            ("pull_request", payload(json!({"action": "closed", "pull_request": {"number": 9}})),
             "PullRequestClosed { merged: false } PullRequest { number: 9, head: \"\", head_sha: \"\" }"),
            ("pull_request", payload(json!({"action": "closed", "pull_request": {"number": 9, "merged": true, "head": {"ref": "f", "sha": "abc"}}})),
             "PullRequestClosed { merged: true } PullRequest { number: 9, head: \"f\", head_sha: \"abc\" }"),
            ("pull_request", payload(json!({"action": "labeled", "pull_request": {"number": 9}})),
             "ignored: pull request action not handled"),
            ("push", payload(json!({"ref": "refs/tags/v1.0.0", "deleted": false})),
             "Start { workflow: \"release_notes\" } Tag { name: \"v1.0.0\" }"),
            ("push", payload(json!({"ref": "refs/tags/v1.0.0", "deleted": true})),
             "ignored: a tag deleted"),
            ("push", payload(json!({"ref": "refs/heads/main"})), "ignored: a push to a branch"),
            ("release", payload(json!({"action": "published", "release": {"tag_name": "v2"}})),
             "Start { workflow: \"release_notes\" } Tag { name: \"v2\" }"),
            ("release", payload(json!({"action": "created", "release": {"tag_name": "v2"}})),
             "ignored: release action not handled"),
            ("star", payload(json!({"action": "created"})), "ignored: event not handled"),
        ];
        for (event, p, expected) in cases {
            assert_eq!(
                start(event, p.clone(), &all, &policy),
                expected,
                "{event} {p}"
            );
        }

        // Bots, and baton itself.
        let mut bot = payload(json!({"action": "opened", "issue": issue}));
        bot["sender"] = json!({"login": "dependabot[bot]", "type": "Bot"});
        assert_eq!(
            start("issues", bot.clone(), &all, &policy),
            "ignored: the sender is a bot that is not allowed"
        );
        bot["sender"] = json!({"login": "friendly[bot]", "type": "Bot"});
        assert!(start("issues", bot.clone(), &all, &policy).starts_with("Start"));
        bot["sender"] = json!({"login": "baton-bot", "type": "User"});
        assert_eq!(
            start("issues", bot, &all, &policy),
            "ignored: the event is baton's own"
        );

        // Defaults have no tag_push; repos filter; custom label and workflow.
        let tag = payload(json!({"ref": "refs/tags/v1", "deleted": false}));
        assert_eq!(
            start("push", tag, &Trigger::defaults(), &policy),
            "ignored: no tag_push trigger"
        );
        let custom = vec![Trigger {
            on: TriggerOn::IssueLabeled,
            label: Some("autofix".into()),
            workflow: Some("bug_triage".into()),
            repos: vec!["other/repo".into()],
        }];
        let labeled = payload(
            json!({"action": "labeled", "issue": {"number": 1}, "label": {"name": "autofix"}}),
        );
        assert_eq!(
            start("issues", labeled.clone(), &custom, &policy),
            "ignored: no trigger's label is on the issue"
        );
        let mut here = custom.clone();
        here[0].repos = vec!["octo/app".into()];
        assert_eq!(
            start("issues", labeled, &here, &policy),
            "Start { workflow: \"bug_triage\" } Issue { number: 1 }"
        );
    }
}
