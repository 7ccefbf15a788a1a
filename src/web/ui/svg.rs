//! The pictures the server draws: a run's timeline and a workflow's diagram, as SVG text.
//! Every piece of text in them goes through [`esc`]; templates insert them unescaped.

use std::fmt::Write as _;

use baton_actors::record::Millis;
use baton_actors::{RunRecord, Workflow};

/// HTML/XML escaping for text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(n - 1).collect::<String>())
    }
}

fn status_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A bar per step that has started, on one time axis from the run's start to its end (or now).
pub fn timeline(rec: &RunRecord, now: Millis) -> String {
    let started: Vec<_> = rec
        .steps
        .iter()
        .filter(|s| s.started_at.is_some())
        .collect();
    if started.is_empty() {
        return String::new();
    }
    let t0 = rec
        .started_at
        .or_else(|| started.iter().filter_map(|s| s.started_at).min())
        .unwrap_or(now);
    let t1 = rec
        .completed_at
        .unwrap_or(now)
        .max(
            started
                .iter()
                .filter_map(|s| s.finished_at)
                .max()
                .unwrap_or(t0),
        )
        .max(t0 + 1);
    let (label_w, bar_w, row) = (100.0, 300.0, 22.0);
    let height = row * started.len() as f64 + 24.0;
    let span = (t1 - t0) as f64;
    let mut out = format!(
        r#"<svg class="timeline" role="img" aria-label="timeline of the steps" viewBox="0 0 {} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">"#,
        label_w + bar_w + 10.0
    );
    for (i, s) in started.iter().enumerate() {
        let a = s.started_at.unwrap_or(t0);
        let b = s.finished_at.unwrap_or(now).max(a);
        let x = label_w + bar_w * (a.saturating_sub(t0)) as f64 / span;
        let w = (bar_w * (b - a) as f64 / span).max(2.0);
        let y = row * i as f64 + 4.0;
        let status = status_name(&s.status);
        let _ = write!(
            out,
            r#"<text x="0" y="{}" class="label">{}</text><rect x="{x:.1}" y="{y}" width="{w:.1}" height="{}" rx="3" class="bar {}"><title>{}: {} ({})</title></rect>"#,
            y + 14.0,
            esc(&clip(&s.id, 13)),
            row - 8.0,
            esc(&status),
            esc(&s.id),
            esc(&status),
            super::duration(b - a),
        );
    }
    let _ = write!(
        out,
        r#"<text x="{label_w}" y="{}" class="axis">0</text><text x="{}" y="{}" class="axis" text-anchor="end">{}</text></svg>"#,
        height - 4.0,
        label_w + bar_w,
        height - 4.0,
        super::duration(t1 - t0)
    );
    out
}

/// A workflow's steps top to bottom: the fall-through path, `next` branches (right),
/// `on_failure = goto:` (left, dashed), and wait points (dashed, shaded).
pub fn diagram(wf: &Workflow) -> String {
    let steps = wf.steps();
    let n = steps.len();
    let (x, box_w, box_h, gap) = (90.0, 240.0, 44.0, 26.0);
    let y_of = |i: usize| 10.0 + i as f64 * (box_h + gap);
    let index = |id: &str| -> usize {
        if id == "end" {
            n
        } else {
            steps.iter().position(|s| s.id == id).unwrap_or(n)
        }
    };
    let branches: usize = steps.iter().map(|s| s.next.len()).sum();
    let width = x + box_w + 40.0 + 26.0 * branches as f64 + 150.0;
    let height = y_of(n) + box_h + 10.0;
    let mut out = format!(
        r#"<svg class="diagram" role="img" aria-label="diagram of {}" viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="head"/></marker></defs>"#,
        esc(wf.id())
    );
    let mut lane = 0usize;
    for (i, s) in steps.iter().enumerate() {
        let y = y_of(i);
        let wait = s.wait.is_some();
        let kind = match (&s.action, &s.wait) {
            (Some(a), _) => a.clone(),
            (None, Some(w)) => format!("wait for `{}`", w.signal),
            _ => String::new(),
        };
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" class="node{}"/><text x="{}" y="{}" class="id">{}</text><text x="{}" y="{}" class="kind">{}</text>"#,
            if wait { " wait" } else { "" },
            x + 10.0,
            y + 18.0,
            esc(&clip(&s.id, 30)),
            x + 10.0,
            y + 35.0,
            esc(&clip(&kind, 36)),
        );
        if let Some(cond) = &s.when {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" class="cond" text-anchor="end">if {}</text>"#,
                x - 4.0,
                y + 18.0,
                esc(&clip(cond, 14))
            );
        }
        // Fall-through to the next step (or the end).
        let _ = write!(
            out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" class="edge" marker-end="url(#arrow)"/>"#,
            x + box_w / 2.0,
            y + box_h,
            x + box_w / 2.0,
            y_of(i + 1)
        );
        for rule in &s.next {
            let to = index(&rule.goto);
            let lx = x + box_w + 30.0 + 26.0 * lane as f64;
            lane += 1;
            let (y1, y2) = (y + box_h / 2.0, y_of(to) + box_h / 2.0);
            let _ = write!(
                out,
                r#"<path d="M{},{y1} H{lx} V{y2} H{}" class="edge branch" fill="none" marker-end="url(#arrow)"><title>{} → {}</title></path><text x="{}" y="{}" class="cond">{}</text>"#,
                x + box_w,
                x + box_w + 2.0,
                esc(&rule.when),
                esc(&rule.goto),
                lx + 4.0,
                y1 - 3.0,
                esc(&clip(&rule.when, 18))
            );
        }
        if let baton_actors::definition::OnFailure::Goto(target) = &s.on_failure {
            let to = index(target);
            let (y1, y2) = (y + box_h / 2.0, y_of(to) + box_h / 2.0);
            let _ = write!(
                out,
                r#"<path d="M{x},{y1} H{} V{y2} H{}" class="edge failure" fill="none" marker-end="url(#arrow)"><title>on failure → {}</title></path>"#,
                x - 30.0,
                x - 2.0,
                esc(target)
            );
        }
    }
    let y = y_of(n);
    let _ = write!(
        out,
        r#"<rect x="{}" y="{y}" width="{}" height="{box_h}" rx="22" class="node end"/><text x="{}" y="{}" class="id" text-anchor="middle">end</text></svg>"#,
        x + box_w / 2.0 - 50.0,
        100.0,
        x + box_w / 2.0,
        y + 27.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
