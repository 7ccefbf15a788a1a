// Live updates for the admin UI: the server sends `runs` events naming the runs that changed
// (coalesced); the page then fetches its live part again (`?fragment=1`) and swaps it in. The
// same events carry in-step progress, which a run page writes under its running step.
(function () {
  "use strict";
  var kind = document.body.dataset.live;
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (!kind || !live || !window.EventSource) return;
  var runId = document.body.dataset.run;
  var busy = false, again = false, held = false;

  function editing() {
    var a = document.activeElement;
    return a && live.contains(a) && (a.tagName === "INPUT" || a.tagName === "SELECT");
  }

  function refresh() {
    if (busy) { again = true; return; }
    if (editing()) { held = true; return; }
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || r.status === 401) { window.location.href = "/login"; return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          live.innerHTML = html;
          document.body.dataset.updated = String(Date.now());
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  // Action forms post in the background: the page stays, and the result arrives live.
  live.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || (form.method || "").toLowerCase() !== "post") return;
    e.preventDefault();
    var flash = document.getElementById("flash");
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      body: new URLSearchParams(new FormData(form)),
    }).then(function (r) {
      if (r.ok) { if (flash) flash.textContent = ""; refresh(); return; }
      return r.text().then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var err = doc.querySelector(".error");
        if (flash) flash.textContent = err ? err.textContent : ("failed: HTTP " + r.status);
      });
    }).catch(function () { if (flash) flash.textContent = "the daemon did not answer"; });
  });

  live.addEventListener("focusout", function () {
    if (held) { held = false; setTimeout(refresh, 0); }
  });

  var source = new EventSource("/ui/events");
  source.addEventListener("open", function () {
    if (state) state.textContent = "live";
    refresh(); // anything that changed before the stream opened
  });
  source.addEventListener("error", function () {
    if (state) state.textContent = "reconnecting…";
  });
  // A run page shows its running step's latest progress message, kept across refreshes.
  var latest = {};
  function showProgress() {
    var nodes = live.querySelectorAll("[data-progress-step]");
    for (var i = 0; i < nodes.length; i++) {
      var message = latest[nodes[i].getAttribute("data-progress-step")];
      if (message !== undefined) nodes[i].textContent = message;
    }
  }
  new MutationObserver(showProgress).observe(live, { childList: true });

  source.addEventListener("runs", function (e) {
    var data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    if (kind === "run") {
      (data.progress || []).forEach(function (p) {
        if (p.run === runId) latest[p.step] = p.message;
      });
      showProgress();
      if (!data.lagged && data.runs.indexOf(runId) < 0) return;
    } else if (!data.lagged && data.runs.length === 0) {
      return; // progress alone: the list shows none
    }
    refresh();
  });
})();
