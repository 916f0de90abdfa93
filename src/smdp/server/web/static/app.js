// The recipient's page of the smdp web app (issue 13; docs/web.md).
// Everything a sender wrote is put on the page with textContent, never as
// HTML: a subject or a file name is text, whatever characters it holds.
"use strict";

const state = { csrf: null, next: null, focus: 0, events: null };
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? {} : await response.json();
  if (!response.ok) {
    const error = new Error(data.error || `${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function show(view) {
  $("login-view").hidden = view !== "login";
  $("mail-view").hidden = view !== "mail";
  $("logout").hidden = view !== "mail";
}

function text(tag, className, value) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = value;
  return node;
}

function envelopeItem(env) {
  const item = document.createElement("li");
  item.className = "envelope";
  item.tabIndex = -1;
  item.dataset.id = String(env.id);
  const box = document.createElement("input");
  box.type = "checkbox";
  box.id = `select-${env.id}`;
  box.addEventListener("change", () => item.classList.toggle("selected", box.checked));
  const label = document.createElement("label");
  label.htmlFor = box.id;
  label.className = "visually-plain";
  const body = document.createElement("div");
  const who = env.sender_name ? `${env.sender_name} <${env.sender}>` : env.sender || "<>";
  const quality = env.quality ? ` quality ${env.quality.value.toFixed(2)} (${env.quality.standing})` : "";
  body.append(
    text("div", "state", env.state + (env.reason ? ` · ${env.reason}` : "")),
    text("div", "subject", env.subject || "(no subject)"),
    text("div", "meta", `${who} via ${env.via === "smtp" ? "SMTP" : env.server}${quality}`),
    text("div", "meta", `${env.received_at} · ${env.size} octets` +
      (env.attachments.count ? ` · ${env.attachments.count} attachment(s): ${env.attachments.names.join(", ")}` : "")),
  );
  for (const line of env.headlines) body.append(text("div", "headlines", line));
  label.textContent = `Select envelope ${env.id}: ${env.subject}`;
  label.className = "sr-only";
  item.append(box, body, label);
  item.addEventListener("click", (event) => {
    if (event.target !== box) { state.focus = indexOf(item); focusItem(); }
  });
  return item;
}

function items() { return Array.from($("envelopes").children); }
function indexOf(item) { return items().indexOf(item); }
function focusItem() {
  const all = items();
  if (!all.length) return;
  state.focus = Math.max(0, Math.min(state.focus, all.length - 1));
  all[state.focus].focus();
}

async function load(append) {
  const params = new URLSearchParams({ state: $("state").value, q: $("search").value, limit: "50" });
  if (append && state.next) params.set("before", String(state.next));
  const data = await api("GET", `/api/envelopes?${params}`);
  const list = $("envelopes");
  if (!append) list.replaceChildren();
  for (const env of data.envelopes) list.append(envelopeItem(env));
  state.next = data.next;
  $("more").hidden = data.next === null;
  $("status").textContent = `${items().length} envelope(s) shown`;
}

function chosenIds() {
  const selected = items().filter((item) => item.querySelector("input").checked);
  const chosen = selected.length ? selected : items().slice(state.focus, state.focus + 1);
  return chosen.map((item) => Number(item.dataset.id));
}

async function decide(decision) {
  const ids = chosenIds();
  if (!ids.length) return;
  const data = await api("POST", "/api/decisions", { decision, ids });
  const failed = data.results.filter((r) => !r.ok);
  $("status").textContent = failed.length
    ? failed.map((r) => r.message).join("; ")
    : `${data.results.length} envelope(s): ${decision}`;
  await load(false);
  focusItem();
}

function listen() {
  if (state.events) state.events.close();
  state.events = new EventSource("/api/events");
  state.events.addEventListener("envelopes", () => {
    if ($("state").value === "pending" && !$("search").value) load(false);
  });
}

async function enter(me) {
  state.csrf = me.csrf;
  $("who").textContent = me.user;
  show("mail");
  await load(false);
  listen();
}

const KEYS = { a: "accept", w: "accept-auth", r: "reject", s: "reject-spam", b: "reject-spammer" };

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await enter(await api("POST", "/api/login", {
        address: $("login-address").value, password: $("login-password").value }));
    } catch (error) {
      $("login-error").textContent = error.message;
    }
  });
  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/logout");
    if (state.events) state.events.close();
    state.csrf = null;
    show("login");
  });
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); load(false); });
  $("more").addEventListener("click", () => load(true));
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }
  document.addEventListener("keydown", (event) => {
    if ($("mail-view").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = document.activeElement ? document.activeElement.tagName : "";
    if (tag === "INPUT" && document.activeElement.type !== "checkbox") return;
    if (tag === "SELECT" || tag === "TEXTAREA") return;
    if (event.key === "j") { state.focus += 1; focusItem(); }
    else if (event.key === "k") { state.focus -= 1; focusItem(); }
    else if (event.key === "x") {
      const item = items()[state.focus];
      if (item) { const box = item.querySelector("input"); box.click(); }
    } else if (KEYS[event.key]) { decide(KEYS[event.key]); }
    else return;
    event.preventDefault();
  });
  try {
    await enter(await api("GET", "/api/me"));
  } catch (error) {
    show("login");
  }
});
