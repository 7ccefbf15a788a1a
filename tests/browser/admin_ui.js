// The admin UI in a real browser: Debian's chromium driven by playwright-core (never a browser
// download). Run by tests/admin_browser.rs against a `baton serve` it started, with:
//   BATON_URL, BATON_TOKEN   the daemon and its admin token (the token also starts runs over the API)
//   FLAGS_DIR                a directory the test's shell steps wait on (files appear on cue)
//   SCREENSHOTS              where screenshots go (under target/)
//   CHROMIUM                 the browser (default /usr/bin/chromium)
// Prints one line per case; exits non-zero on the first failure.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const base = process.env.BATON_URL;
const token = process.env.BATON_TOKEN;
const flags = process.env.FLAGS_DIR;
const shots = process.env.SCREENSHOTS;
const TIMEOUT = 15000;

function flag(name) {
  return path.join(flags, name);
}

async function api(method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(`${method} ${p}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}

// A shell step that waits until its flag file exists (the test creates it on cue).
function waitFor(name) {
  return { run: `while [ ! -f '${flag(name)}' ]; do sleep 0.02; done` };
}

async function startRun(def, input) {
  const r = await api("POST", "/api/runs", { workflow: def.id, definition: def, input: input || {} });
  return r.id;
}

async function apiStatus(id) {
  return (await api("GET", "/api/runs/" + id)).status;
}

function check(cond, what) {
  if (!cond) throw new Error("failed: " + what);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
}

// A page-wide marker that a reload would wipe out.
async function mark(page) {
  await page.evaluate(() => { window.__batonNoReload = 42; });
}
async function notReloaded(page, what) {
  check((await page.evaluate(() => window.__batonNoReload)) === 42, what + " without a reload");
}

(async () => {
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "baton-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1200, height: 900 },
  });
  context.setDefaultTimeout(TIMEOUT);
  try {
    const page = context.pages()[0] || (await context.newPage());

    // A page without a session redirects to the login.
    await page.goto(base + "/runs/run_nope");
    check(new URL(page.url()).pathname === "/login", "no session redirects to /login");
    console.log("ok: a page without a session redirects to /login");

    // A wrong token is refused and stays on the page with an error.
    await page.fill('input[name="token"]', "wrong-token");
    await page.click('button[type="submit"]');
    await page.waitForSelector("p.error");
    check(new URL(page.url()).pathname === "/login", "a wrong token stays on /login");
    await shot(page, "login-refused");
    console.log("ok: a wrong token is refused");

    await page.fill('input[name="token"]', token);
    await page.click('button[type="submit"]');
    await page.waitForURL(base + "/");
    await page.waitForSelector("#live-state:text('live')");
    console.log("ok: logged in");

    // A new run appears on the open dashboard without a reload.
    await mark(page);
    const gate = {
      id: "browser-gate",
      steps: [
        { id: "prepare", action: "shell", with: waitFor("prepared") },
        { id: "approval", wait: { signal: "approve" } },
        { id: "finish", action: "shell", with: waitFor("finished") },
      ],
    };
    const run = await startRun(gate, { repo: "octo/app", issue: 14 });
    await page.waitForSelector(`tr[data-run="${run}"]`);
    await notReloaded(page, "the new run appeared");
    await shot(page, "dashboard-new-run");
    console.log("ok: a new run appears on the open dashboard");

    // Its page: running, then waiting, live.
    await page.click(`a[href="/runs/${run}"]`);
    await page.waitForSelector('#run-status[data-status="running"]');
    await page.waitForSelector("#live-state:text('live')");
    await mark(page);
    const t0 = Date.now();
    fs.writeFileSync(flag("prepared"), "");
    await page.waitForSelector('#run-status[data-status="waiting"]');
    // From the cue to the page (the step's 20 ms poll, the transition, the 100 ms window, a fetch).
    console.log(`latency: step finished to waiting shown on the open page in ${Date.now() - t0} ms`);
    await page.waitForSelector('button:text-is("Approve")');
    await notReloaded(page, "the run went from running to waiting");
    await shot(page, "run-waiting");
    console.log("ok: the run went from running to waiting live");

    // A POST without the CSRF token is refused and changes nothing.
    const refused = await page.evaluate(async (id) => {
      const r = await fetch(`/runs/${id}/approve`, {
        method: "POST",
        credentials: "same-origin",
        body: new URLSearchParams({}),
      });
      return r.status;
    }, run);
    check(refused === 403, `a POST without csrf is refused (got ${refused})`);
    check((await apiStatus(run)) === "waiting", "the refused POST changed nothing");
    console.log("ok: a request without the CSRF token is refused");

    // Approve: the page stays, the run goes on (running), then completes, live.
    await page.click('button:text-is("Approve")');
    await page.waitForSelector('#run-status[data-status="running"]');
    fs.writeFileSync(flag("finished"), "");
    await page.waitForSelector('#run-status[data-status="completed"]');
    await notReloaded(page, "the approved run completed");
    await shot(page, "run-completed");
    console.log("ok: approved from the page and saw it complete live");

    // Retry a failed run.
    const flaky = {
      id: "browser-flaky",
      steps: [{ id: "check", action: "shell", with: { run: `test -f '${flag("fixed")}'` } }],
    };
    const failed = await startRun(flaky, {});
    for (let i = 0; (await apiStatus(failed)) !== "failed"; i++) {
      check(i < 500, "the flaky run fails");
      await new Promise((r) => setTimeout(r, 20));
    }
    await page.goto(base + "/runs/" + failed);
    await page.waitForSelector('#run-status[data-status="failed"]');
    await page.waitForSelector("#live-state:text('live')");
    fs.writeFileSync(flag("fixed"), "");
    await mark(page);
    await page.click('button:text-is("Retry")');
    await page.waitForSelector('#run-status[data-status="completed"]');
    await notReloaded(page, "the retried run completed");
    console.log("ok: retried a failed run");

    // A phone-sized viewport renders the run page without horizontal scrolling.
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(base + "/runs/" + run);
    await phone.waitForSelector("#run-status");
    const widths = await phone.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
    }));
    await shot(phone, "run-phone");
    check(widths.scroll <= widths.client, `no horizontal scrolling on a phone (${JSON.stringify(widths)})`);
    await phone.goto(base + "/");
    const dash = await phone.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);
    await shot(phone, "dashboard-phone");
    check(dash, "the dashboard fits a phone");
    await phone.goto(base + "/workflows");
    await shot(phone, "workflows-phone");
    console.log("ok: a phone-sized viewport renders without horizontal scrolling");
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
