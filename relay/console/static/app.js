// The console: hash-routed pages rendered from the relay's /v1 JSON.
// The session cookie is HttpOnly; this script only ever holds the CSRF token, in memory.
import { badge, fill, h, jsonBlock, note, safeLink, table, when } from "./dom.js";
import { stackedBars } from "./chart.js";

const POLL_MS = 2000;
const STATUSES = ["queued", "processing", "succeeded", "failed", "cancelled"];
const view = document.getElementById("view");
let session = null; // {client, role, key_prefix, csrf_token, expires_at}
let timer = null; // the current page's live refresh

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** Call the relay as the signed-in session; JSON in, JSON out, problems thrown. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf_token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (resp.status === 401 && session && path !== "/console/session") {
    session = null;
    showSignIn("Your session ended (signed out, expired or the key was revoked).");
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

const isAdmin = () => session && session.role === "admin";
const seesAll = () => session && (session.role === "admin" || session.role === "auditor");

function live(fn) {
  stopLive();
  timer = setInterval(() => fn().catch(() => {}), POLL_MS);
}

function stopLive() {
  if (timer) clearInterval(timer);
  timer = null;
}

function errorNote(err) {
  return note(err instanceof ApiError ? `${err.status}: ${err.message}` : String(err), "error");
}

// --- signing in and out ------------------------------------------------------------------

function showSignIn(message) {
  stopLive();
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  fill(document.getElementById("who"));
  const key = h("input", { type: "password", name: "key", id: "key", autocomplete: "off", required: true, placeholder: "rk_..." });
  const status = h("div");
  const form = h(
    "form",
    { class: "sign-in", id: "sign-in" },
    h("h1", {}, "Sign in"),
    h("label", { for: "key" }, "API key (client, admin or auditor)"),
    key,
    h("button", { type: "submit" }, "Sign in"),
    h("p", { class: "hint" }, "The key is exchanged for a session cookie and not kept by this page."),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      session = await api("POST", "/console/session", { key: key.value });
      key.value = "";
      signedIn();
    } catch (err) {
      fill(status, errorNote(err));
    }
  });
  fill(view, message ? note(message) : null, form);
}

function signedIn() {
  document.getElementById("nav").hidden = false;
  document.getElementById("nav-upstream").hidden = !isAdmin();
  document.getElementById("sign-out").hidden = false;
  fill(document.getElementById("who"), `${session.client} (${session.role})`);
  route();
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await api("DELETE", "/console/session");
  } finally {
    session = null;
    location.hash = "";
    showSignIn("Signed out.");
  }
});

// --- tasks -------------------------------------------------------------------------------

function select(name, options, value) {
  return h("select", { name, id: name }, options.map((o) => h("option", { value: o, selected: o === value }, o || "any")));
}

function isoFromLocal(value) {
  return value ? new Date(value).toISOString() : "";
}

async function tasksPage(params) {
  const filters = h(
    "form",
    { class: "filters", id: "task-filters" },
    h("label", {}, "Status ", select("status", ["", ...STATUSES], params.get("status") || "")),
    h("label", {}, "Model ", h("input", { name: "model", value: params.get("model") || "" })),
    seesAll() ? h("label", {}, "Client ", h("input", { name: "client", value: params.get("client") || "" })) : null,
    h("label", {}, "Created after ", h("input", { type: "datetime-local", name: "created_after" })),
    h("label", {}, "Created before ", h("input", { type: "datetime-local", name: "created_before" })),
    h("button", { type: "submit" }, "Filter"),
  );
  const body = h("div", { id: "task-list" });
  fill(view, h("h1", {}, "Tasks"), filters, body);
  const query = () => {
    const q = new URLSearchParams({ limit: "50" });
    const form = new FormData(filters);
    for (const name of ["status", "model", "client"]) if (form.get(name)) q.set(name, form.get(name));
    for (const name of ["created_after", "created_before"]) if (form.get(name)) q.set(name, isoFromLocal(form.get(name)));
    return q;
  };
  const refresh = async () => {
    try {
      const page = await api("GET", `/v1/tasks?${query()}`);
      fill(body, page.data.length ? taskTable(page.data) : note("No tasks match."));
    } catch (err) {
      fill(body, errorNote(err));
    }
  };
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  await refresh();
  live(refresh); // statuses change while you look: re-read every few seconds
}

function taskTable(tasks) {
  const showClient = tasks.some((t) => "client" in t);
  return table(
    [
      ["Task", (t) => h("a", { href: `#/tasks/${encodeURIComponent(t.id)}` }, t.id)],
      ["Model", (t) => t.model],
      ...(showClient ? [["Client", (t) => (typeof t.client === "object" && t.client ? t.client.name ?? JSON.stringify(t.client) : t.client)]] : []),
      ["Status", (t) => badge(t.status)],
      ["Created", (t) => when(t.created_at)],
      ["Updated", (t) => when(t.updated_at)],
      ["Cost", (t) => cost(t)],
      ["Metadata", (t) => (t.metadata ? JSON.stringify(t.metadata) : "")],
    ],
    tasks,
    (t) => ({ dataset: { taskId: t.id } }),
  );
}

function cost(t) {
  if (t.cost_actual !== null && t.cost_actual !== undefined) return String(t.cost_actual);
  if (t.cost_estimate !== null && t.cost_estimate !== undefined) return `~${t.cost_estimate}`;
  return "";
}

function urlsIn(value, found = []) {
  if (typeof value === "string" && /^https?:\/\//i.test(value)) found.push(value);
  else if (Array.isArray(value)) value.forEach((v) => urlsIn(v, found));
  else if (value && typeof value === "object") Object.values(value).forEach((v) => urlsIn(v, found));
  return found;
}

/** Whether each entry's prev_hash names the previous entry's hash (the chain is linked). */
function chainLinked(entries) {
  for (let i = 1; i < entries.length; i++) if (entries[i].prev_hash !== entries[i - 1].hash) return false;
  return true;
}

async function taskPage(id) {
  const summary = h("section", { id: "task-summary" });
  const timeline = h("section", { id: "task-timeline" });
  const historyBox = h("section", { id: "task-history" });
  const deliveriesBox = h("section", { id: "task-deliveries" });
  fill(view, h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")), h("h1", {}, "Task ", h("code", {}, id)), summary, timeline, historyBox, deliveriesBox);
  const refresh = async () => {
    let task;
    try {
      task = await api("GET", `/v1/tasks/${encodeURIComponent(id)}`);
    } catch (err) {
      stopLive();
      fill(summary, errorNote(err));
      fill(timeline);
      fill(historyBox);
      fill(deliveriesBox);
      return;
    }
    const [events, deliveries] = await Promise.all([
      api("GET", `/v1/tasks/${encodeURIComponent(id)}/events?limit=200`).catch(() => ({ data: [] })),
      api("GET", `/v1/tasks/${encodeURIComponent(id)}/deliveries`).catch(() => ({ data: [] })),
    ]);
    renderTask(task, summary);
    renderTimeline(events.data, timeline);
    renderHistory(events.data, historyBox);
    renderDeliveries(deliveries.data, deliveriesBox, refresh);
  };
  await refresh();
  // Kept polling even once the task is terminal: deliveries (and retries) still move.
  live(refresh);
}

function renderTask(task, box) {
  const links = urlsIn(task.output);
  fill(
    box,
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Status"), h("dd", { id: "task-status" }, badge(task.status)),
      h("dt", {}, "Model"), h("dd", {}, task.model),
      h("dt", {}, "Cost"), h("dd", {}, `estimate ${task.cost_estimate ?? "-"}, actual ${task.cost_actual ?? "-"}`),
      h("dt", {}, "Upstream task"), h("dd", {}, task.upstream_task_id ?? "-"),
      h("dt", {}, "Created"), h("dd", {}, when(task.created_at)),
      h("dt", {}, "Completed"), h("dd", {}, when(task.completed_at) || "-"),
      h("dt", {}, "Webhook URL"), h("dd", {}, task.webhook_url ? safeLink(task.webhook_url) : "-"),
      h("dt", {}, "Output"), h("dd", { id: "task-output" }, links.length ? h("ul", {}, links.map((u) => h("li", {}, safeLink(u)))) : "-"),
      h("dt", {}, "Error"), h("dd", {}, task.error ? JSON.stringify(task.error) : "-"),
    ),
    h("h2", {}, "Metadata"),
    h("div", { id: "task-metadata" }, task.metadata ? jsonBlock(task.metadata) : "none"),
  );
}

function renderTimeline(entries, box) {
  const steps = entries.filter((e) => e.to_status);
  fill(
    box,
    h("h2", {}, "Status timeline"),
    h("ol", { class: "timeline" }, steps.map((e) => h("li", {}, badge(e.to_status), " ", h("time", {}, when(e.created_at))))),
  );
}

function renderHistory(entries, box) {
  const hashed = entries.some((e) => e.hash);
  fill(
    box,
    h("h2", {}, `History (${entries.length} entries)`),
    hashed ? note(chainLinked(entries) ? "Hash chain: every entry links to the one before." : "Hash chain: BROKEN (an entry does not link to the one before).", chainLinked(entries) ? "info" : "error") : null,
    table(
      [
        ["#", (e) => e.seq],
        ["Type", (e) => e.type],
        ["Status", (e) => (e.to_status ? `${e.from_status ?? "-"} → ${e.to_status}` : "")],
        ["Source", (e) => e.source],
        ["At", (e) => when(e.created_at)],
        ...(hashed ? [["Hash", (e) => h("code", { title: e.hash }, String(e.hash).slice(0, 16))]] : []),
        ["Upstream event", (e) => (e.upstream_event ? h("details", {}, h("summary", {}, "show"), jsonBlock(e.upstream_event)) : "")],
      ],
      entries,
    ),
  );
}

function attemptsTable(attempts) {
  return table(
    [
      ["Attempt", (a) => a.attempt],
      ["Status code", (a) => a.status_code ?? "-"],
      ["Latency ms", (a) => (a.latency_ms === undefined || a.latency_ms === null ? "" : Math.round(a.latency_ms))],
      ["Response", (a) => h("code", { class: "excerpt" }, a.response_excerpt ?? "")],
      ["Error", (a) => a.error ?? ""],
      ["At", (a) => when(a.started_at)],
    ],
    attempts || [],
  );
}

function retryButton(delivery, after) {
  if (delivery.status !== "failed" && delivery.status !== "dead") return null;
  const out = h("span");
  const button = h("button", { type: "button", class: "retry", dataset: { deliveryId: delivery.id } }, "Retry");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", `/v1/deliveries/${encodeURIComponent(delivery.id)}/retry`);
      fill(out, note("Queued again."));
      await after();
    } catch (err) {
      fill(out, errorNote(err));
      button.disabled = false;
    }
  });
  return h("span", {}, button, out);
}

function renderDeliveries(deliveries, box, refresh) {
  fill(
    box,
    h("h2", {}, `Deliveries (${deliveries.length})`),
    deliveries.map((d) =>
      h(
        "article",
        { class: "delivery", dataset: { deliveryId: d.id } },
        h("h3", {}, d.event_type, " → ", safeLink(d.url), " ", badge(d.status), " ", retryButton(d, refresh)),
        h("p", {}, `${d.attempt_count} attempt(s); last code ${d.last_status_code ?? "-"}; ${d.last_error ?? ""}`),
        attemptsTable(d.attempts),
      ),
    ),
  );
}

// --- deliveries --------------------------------------------------------------------------

async function deliveriesPage() {
  const list = h("div", { id: "delivery-list" });
  const recover = recoverForm();
  fill(view, h("h1", {}, "Deliveries"), recover, list);
  const refresh = async () => {
    try {
      const [dead, failed, recent] = await Promise.all(
        ["?status=dead", "?status=failed", ""].map((q) => api("GET", `/v1/deliveries${q}${q ? "&" : "?"}limit=50`)),
      );
      const seen = new Set();
      const rows = [...dead.data, ...failed.data, ...recent.data].filter((d) => !seen.has(d.id) && seen.add(d.id));
      fill(
        list,
        rows.length
          ? table(
              [
                ["Delivery", (d) => h("code", {}, d.id)],
                ["Task", (d) => h("a", { href: `#/tasks/${encodeURIComponent(d.task_id)}` }, d.task_id)],
                ["Event", (d) => d.event_type],
                ["URL", (d) => safeLink(d.url)],
                ["Status", (d) => badge(d.status)],
                ["Attempts", (d) => d.attempt_count],
                ["Last code", (d) => d.last_status_code ?? "-"],
                ["Last error", (d) => d.last_error ?? ""],
                ["", (d) => retryButton(d, refresh)],
              ],
              rows,
              (d) => ({ dataset: { deliveryId: d.id } }),
            )
          : note("No deliveries yet."),
      );
    } catch (err) {
      fill(list, errorNote(err));
    }
  };
  await refresh();
  live(refresh);
}

function recoverForm() {
  const out = h("span", { id: "recover-result" });
  const form = h(
    "form",
    { class: "filters", id: "recover" },
    h("strong", {}, "Recover a subscription: "),
    h("label", {}, "Subscription ", h("input", { name: "subscription", required: true, placeholder: "sub_..." })),
    h("label", {}, "since ", h("input", { type: "datetime-local", name: "since", required: true })),
    h("button", { type: "submit" }, "Recover"),
    out,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const result = await api("POST", `/v1/subscriptions/${encodeURIComponent(data.get("subscription"))}/recover`, { since: isoFromLocal(data.get("since")) });
      fill(out, note(`Queued ${result.queued} deliveries again${result.more ? " (more remain: recover again)" : ""}.`));
    } catch (err) {
      fill(out, err.status === 405 ? note("This relay has no recover endpoint yet.", "error") : errorNote(err));
    }
  });
  return form;
}

// --- subscriptions -----------------------------------------------------------------------

async function subscriptionsPage() {
  const list = h("div", { id: "subscription-list" });
  const secretBox = h("div", { id: "secret-box" });
  fill(view, h("h1", {}, "Subscriptions"), secretBox, list);
  const refresh = async () => {
    try {
      const [subs, health] = await Promise.all([
        api("GET", "/v1/subscriptions?limit=200"),
        api("GET", "/console/api/subscription-health").catch(() => ({ data: [] })),
      ]);
      const byId = Object.fromEntries(health.data.map((x) => [x.subscription_id, x]));
      fill(list, subs.data.length ? subscriptionTable(subs.data, byId, refresh, secretBox) : note("No subscriptions."));
    } catch (err) {
      fill(list, errorNote(err));
    }
  };
  await refresh();
}

function action(label, cls, fn) {
  const button = h("button", { type: "button", class: cls }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await fn();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

function subscriptionTable(subs, health, refresh, secretBox) {
  const rate = (s) => {
    const x = health[s.id];
    if (!x || x.success_rate === null) return "no attempts in 24 h";
    return `${Math.round(x.success_rate * 100)}% of ${x.attempts}`;
  };
  const lastError = (s) => {
    const x = health[s.id];
    if (!x || (!x.last_error && !x.last_status_code)) return "";
    return `${when(x.last_error_at)} ${x.last_status_code ?? ""} ${x.last_error ?? ""} ${x.last_response_excerpt ?? ""}`.trim();
  };
  const report = (s, out) => async (fn) => {
    try {
      await fn();
    } catch (err) {
      fill(secretBox, err.status === 405 ? note("This relay has no such endpoint yet.", "error") : errorNote(err));
    }
  };
  return table(
    [
      ["Subscription", (s) => h("code", {}, s.id)],
      ["URL", (s) => safeLink(s.url)],
      ["Description", (s) => s.description ?? ""],
      ["Enabled", (s) => (s.enabled ? "yes" : `no${s.disabled_reason ? ` (${s.disabled_reason})` : ""}`)],
      ["Success (24 h)", rate],
      ["Last error", lastError],
      [
        "",
        (s) => [
          action(s.enabled ? "Disable" : "Enable", "toggle", () =>
            report(s)(async () => {
              await api("PATCH", `/v1/subscriptions/${encodeURIComponent(s.id)}`, { enabled: !s.enabled });
              await refresh();
            }),
          ),
          action("Rotate secret", "rotate", () =>
            report(s)(async () => {
              const rotated = await api("POST", `/v1/subscriptions/${encodeURIComponent(s.id)}/rotate-secret`);
              fill(
                secretBox,
                h("div", { class: "secret", id: "new-secret" }, h("p", {}, `New secret for ${s.id} (shown once; the old one also signs for 24 h):`), h("code", {}, rotated.secret)),
              );
            }),
          ),
          action("Send test event", "test", () =>
            report(s)(async () => {
              const delivery = await api("POST", `/v1/subscriptions/${encodeURIComponent(s.id)}/test`);
              fill(secretBox, note(`Test event queued as delivery ${delivery.id}.`));
            }),
          ),
        ],
      ],
    ],
    subs,
    (s) => ({ dataset: { subscriptionId: s.id } }),
  );
}

// --- usage -------------------------------------------------------------------------------

const DAY_MS = 86400000;
const MAX_USAGE_PAGES = 20; // 4,000 tasks: enough for the chart's two weeks on a demo

async function usagePage() {
  const box = h("div", { id: "usage" });
  fill(view, h("h1", {}, "Usage"), box);
  const since = new Date(Date.now() - 14 * DAY_MS);
  since.setUTCHours(0, 0, 0, 0);
  try {
    // Tasks per day by model from the task list (the API groups by one key at a time).
    const tasks = [];
    let cursor = null;
    for (let i = 0; i < MAX_USAGE_PAGES; i++) {
      const q = new URLSearchParams({ limit: "200", created_after: since.toISOString() });
      if (cursor) q.set("cursor", cursor);
      const page = await api("GET", `/v1/tasks?${q}`);
      tasks.push(...page.data);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    const days = {};
    for (let t = since.getTime(); t <= Date.now(); t += DAY_MS) days[new Date(t).toISOString().slice(0, 10)] = { count: {}, cost: {} };
    for (const t of tasks) {
      const day = days[t.created_at.slice(0, 10)];
      if (!day) continue;
      day.count[t.model] = (day.count[t.model] || 0) + 1;
      day.cost[t.model] = (day.cost[t.model] || 0) + (t.cost_actual ?? t.cost_estimate ?? 0);
    }
    const entries = Object.entries(days);
    fill(
      box,
      stackedBars("Tasks per day by model (last 14 days, UTC)", entries.map(([label, d]) => ({ label, parts: d.count }))),
      stackedBars("Cost per day by model (actual, else estimate)", entries.map(([label, d]) => ({ label, parts: d.cost })), { format: (v) => v.toFixed(2) }),
      cursor ? note(`Only the newest ${tasks.length} tasks are counted.`) : null,
      await usageTotals(since),
    );
  } catch (err) {
    fill(box, errorNote(err));
  }
}

/** Totals by model (and by client for admin/auditor) from GET /v1/usage, where it exists. */
async function usageTotals(since) {
  const groups = seesAll() ? ["model", "client"] : ["model"];
  const sections = [];
  for (const group of groups) {
    try {
      const report = await api("GET", `/v1/usage?${new URLSearchParams({ from: since.toISOString(), group_by: group })}`);
      sections.push(
        h("h2", {}, `By ${group}`),
        table(
          [
            [group, (g) => g.key],
            ["Tasks", (g) => g.tasks],
            ["Succeeded", (g) => g.by_status?.succeeded ?? ""],
            ["Failed", (g) => g.by_status?.failed ?? ""],
            ["Cost (estimate)", (g) => g.cost_estimate],
            ["Cost (actual)", (g) => g.cost_actual],
          ],
          report.data,
        ),
      );
    } catch (err) {
      if (err.status === 404) return h("p", { class: "hint" }, "Totals by model and client need GET /v1/usage, which this relay does not have yet.");
      sections.push(errorNote(err));
    }
  }
  return h("div", {}, sections);
}

// --- upstream ----------------------------------------------------------------------------

async function upstreamPage() {
  const box = h("div", { id: "upstream" });
  fill(view, h("h1", {}, "Upstream"), box);
  let previous = null;
  const refresh = async () => {
    let now;
    try {
      now = await api("GET", "/console/api/upstream");
    } catch (err) {
      fill(box, errorNote(err));
      return;
    }
    const dt = previous ? now.at - previous.at : 0;
    const rate = (key, field) => (previous && dt > 0 ? ((now[field][key] || 0) - (previous[field][key] || 0)) / dt : null);
    const total = Object.values(now.requests).reduce((a, v) => a + v, 0);
    const totalBefore = previous ? Object.values(previous.requests).reduce((a, v) => a + v, 0) : 0;
    const rps = previous && dt > 0 ? (total - totalBefore) / dt : null;
    const fmt = (v, digits = 2) => (v === null || v === undefined ? "…" : Number(v).toFixed(digits));
    fill(
      box,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Request rate (this replica)"), h("dd", { id: "upstream-rate" }, `${fmt(rps)} /s of a ${now.ceiling_rps} /s ceiling (whole deployment)`),
        h("dt", {}, "Upstream key"), h("dd", {}, now.auth_failing ? "REFUSED (401/403)" : "accepted"),
        h("dt", {}, "Detection delay"), h("dd", {}, now.detection_count ? `mean ${fmt(now.detection_mean_s)} s, p95 ≤ ${fmt(now.detection_p95_s)} s over ${now.detection_count} changes` : "no status changes seen yet"),
        h("dt", {}, "In flight"), h("dd", { id: "upstream-in-flight" }, Object.entries(now.in_flight).map(([s, n]) => `${s}: ${n}`).join(", ")),
        h("dt", {}, "Webhook outbox"), h("dd", {}, `${now.outbox_pending} waiting, oldest ${fmt(now.outbox_oldest_age_s, 0)} s`),
      ),
      h("h2", {}, "Requests by outcome code (since this replica started)"),
      table(
        [
          ["Code", ([code]) => code],
          ["Requests", ([, n]) => n],
          ["Share", ([, n]) => (total ? `${((100 * n) / total).toFixed(1)}%` : "")],
          ["Rate /s", ([code]) => fmt(rate(code, "codes"))],
        ],
        Object.entries(now.codes).sort(),
      ),
      h("h2", {}, "Requests by endpoint"),
      table(
        [
          ["Endpoint", ([name]) => name],
          ["Requests", ([, n]) => n],
          ["Rate /s", ([name]) => fmt(rate(name, "requests"))],
        ],
        Object.entries(now.requests).sort(),
      ),
    );
    previous = now;
  };
  await refresh();
  live(refresh);
}

// --- routing -----------------------------------------------------------------------------

async function route() {
  if (!session) return;
  stopLive();
  const [path, search] = (location.hash.slice(1) || "/tasks").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", link.getAttribute("href") === `#/${parts[0]}`);
  try {
    if (parts[0] === "tasks" && parts[1]) await taskPage(decodeURIComponent(parts[1]));
    else if (parts[0] === "deliveries") await deliveriesPage();
    else if (parts[0] === "subscriptions") await subscriptionsPage();
    else if (parts[0] === "usage") await usagePage();
    else if (parts[0] === "upstream") await upstreamPage();
    else await tasksPage(params);
  } catch (err) {
    if (session) fill(view, errorNote(err));
  }
}

window.addEventListener("hashchange", route);

(async () => {
  try {
    session = await api("GET", "/console/session");
    signedIn();
  } catch {
    showSignIn();
  }
})();
