// The recipient's pages of the smdp web app (issue 13; docs/web.md).
// Everything a sender wrote is put on the page with textContent, never as
// HTML: a subject or a file name is text, whatever characters it holds.
// Views are chosen by the address's #fragment, so the browser's back button
// and bookmarks work without a framework and without the server's help.
"use strict";

const state = {
  csrf: null, me: null, view: null, events: null,
  envelopes: { next: null, focus: 0 },
  mailbox: { next: null },
  sent: { next: null, shown: 0 },
  lists: [],
  message: null,
  chart: null,
};
const VIEWS = ["login", "envelopes", "mailbox", "message", "compose", "sent", "lists", "settings",
  "admin"];
// The five who's of the API's decided_by (docs/api.md), as the page says them.
const DECIDED_BY = {
  "white-list": "your white list", "black-list": "your black list", expiry: "expiry",
  origin: "the sender's server", server: "this server",
};
const SVG = "http://www.w3.org/2000/svg";
const LIST_NAMES = {
  "in-white": "inbound white", "in-black": "inbound black",
  "out-white": "outbound white", "out-black": "outbound black",
};
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
    if (response.status === 401 && path !== "/api/login") loggedOut();
    throw error;
  }
  return data;
}

// Bidirectional overrides, embeddings and isolates are shown as their code
// points: "invoice<U+202E>fdp.exe" must not read as "invoiceexe.pdf".
const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069]/g;
function visible(value) {
  return String(value).replace(BIDI_CONTROLS,
    (c) => `<U+${c.codePointAt(0).toString(16).toUpperCase()}>`);
}

// A card of a list (mail, sent, lists, tokens, the administrator's lists),
// of a ``kind`` its style may name: the <li> and the body its text goes in,
// which the caller appends to it with its buttons.
function card(kind = "") {
  const item = document.createElement("li");
  item.className = kind ? `card ${kind}` : "card";
  const body = document.createElement("div");
  body.className = "card-body";
  return [item, body];
}

function text(tag, className, value) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = visible(value);
  return node;
}

function say(id, message, isError) {
  const node = $(id);
  node.textContent = message;
  node.classList.toggle("error", Boolean(isError));
}

function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

// A time to the minute: "2026-12-03 10:54 UTC" (the API's has seconds).
function day(iso) {
  return iso ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : "?";
}

function when(iso) {
  const node = text("time", "", age(iso));
  node.dateTime = iso;
  node.title = iso;
  return node;
}

// -- views ------------------------------------------------------------------------

function show(view, moveFocus) {
  state.view = view;
  for (const name of VIEWS) $(`${name}-view`).hidden = name !== view;
  const inside = view !== "login";
  $("logout").hidden = !inside;
  $("nav").hidden = !inside;
  const current = view === "message" ? "mailbox" : view;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // A screen reader hears the new view's title; a keyboard continues there.
  if (moveFocus) $(`${view}-title`).focus();
}

async function route(moveFocus) {
  if (!state.csrf) { show("login", false); return; }
  const [name, arg] = location.hash.replace(/^#/, "").split("/");
  try {
    if (name === "mailbox" && arg) {
      show("message", false);
      await openMessage(Number(arg));
      if (moveFocus) $("message-title").focus();
      return;
    }
    // The administrator's view exists for administrators only; the API
    // refuses the rest anyway (403).
    const allowed = VIEWS.includes(name) && name !== "login" && name !== "message"
      && (name !== "admin" || state.me.admin);
    const view = allowed ? name : "envelopes";
    show(view, moveFocus);
    if (view === "envelopes") await loadEnvelopes(false);
    else if (view === "mailbox") await loadMailbox(false);
    else if (view === "compose") fillIdentities();
    else if (view === "sent") await loadSent(false);
    else if (view === "lists") await loadLists();
    else if (view === "settings") await loadTokens();
    else if (view === "admin") await loadAdmin();
  } catch (error) {
    if (error.status !== 401) say(`${state.view}-status`, error.message, true);
  }
}

// -- envelopes --------------------------------------------------------------------

function envelopeItem(env) {
  const item = document.createElement("li");
  item.className = "card envelope";
  item.tabIndex = -1;
  item.dataset.id = String(env.id);
  item.dataset.state = env.state;
  const box = document.createElement("input");
  box.type = "checkbox";
  box.id = `select-${env.id}`;
  box.addEventListener("change", () => item.classList.toggle("selected", box.checked));
  const label = text("label", "sr-only", `Select envelope ${env.id}: ${env.subject || "(no subject)"}`);
  label.htmlFor = box.id;
  const body = document.createElement("div");
  body.className = "card-body";
  const who = env.sender_name ? `${env.sender_name} <${env.sender}>` : env.sender || "<>";
  const quality = env.quality
    ? ` · quality ${env.quality.value.toFixed(2)} (${env.quality.standing})` : "";
  const top = document.createElement("div");
  top.className = "top";
  top.append(text("span", `badge state-${env.state}`, env.state), when(env.received_at));
  body.append(
    top,
    text("div", "subject", env.subject || "(no subject)"),
    text("div", "meta", who),
    text("div", "meta", `via ${env.via === "smtp" ? `SMTP (${env.server})` : env.server}${quality}`),
    text("div", "meta", `${env.size} octets` +
      (env.attachments.count ? ` · ${env.attachments.count} attachment(s): ${env.attachments.names.join(", ")}` : "")),
  );
  for (const line of env.headlines) body.append(text("div", "headlines", line));
  // Who decided: the user, or the server by a list, expiry, ... with why.
  if (env.decided_by === "user") {
    body.append(text("div", "meta", "decided by you"));
  } else if (env.decided_by) {
    body.append(text("div", "reason",
      `Decided by ${DECIDED_BY[env.decided_by] || env.decided_by}: ${env.reason}`));
  }
  if (env.state === "accepted") {
    const read = text("a", "read", "Read");
    read.href = `#mailbox/${env.id}`;
    read.setAttribute("aria-label", `Read envelope ${env.id}: ${env.subject || "(no subject)"}`);
    body.append(read);
  }
  item.append(box, body, label);
  item.addEventListener("click", (event) => {
    if (event.target !== box && event.target.tagName !== "A") {
      state.envelopes.focus = envelopeItems().indexOf(item);
      focusEnvelope();
    }
  });
  return item;
}

function envelopeItems() { return Array.from($("envelopes").children); }

function focusEnvelope() {
  const all = envelopeItems();
  if (!all.length) return;
  state.envelopes.focus = Math.max(0, Math.min(state.envelopes.focus, all.length - 1));
  all.forEach((item, i) => { item.tabIndex = i === state.envelopes.focus ? 0 : -1; });
  all[state.envelopes.focus].focus();
}

async function loadEnvelopes(append) {
  const params = new URLSearchParams({ state: $("state").value, q: $("search").value, limit: "50" });
  if (append && state.envelopes.next) params.set("before", String(state.envelopes.next));
  const data = await api("GET", `/api/envelopes?${params}`);
  const list = $("envelopes");
  const hadFocus = list.contains(document.activeElement);
  const checked = new Set(envelopeItems().filter((item) => item.querySelector("input").checked)
    .map((item) => item.dataset.id));
  if (!append) list.replaceChildren();
  for (const env of data.envelopes) {
    const item = envelopeItem(env);
    if (checked.has(item.dataset.id)) {
      item.querySelector("input").checked = true;
      item.classList.add("selected");
    }
    list.append(item);
  }
  state.envelopes.next = data.next;
  $("more").hidden = data.next === null;
  const all = envelopeItems();
  all.forEach((item, i) => { item.tabIndex = i === Math.min(state.envelopes.focus, all.length - 1) ? 0 : -1; });
  // The count apart from the status: a decision's result stays readable
  // when an arriving envelope redraws the list.
  $("envelopes-count").textContent = `${all.length} envelope(s) shown`;
  if (hadFocus) focusEnvelope();
}

function chosenIds() {
  const all = envelopeItems();
  const selected = all.filter((item) => item.querySelector("input").checked);
  const chosen = selected.length ? selected : all.slice(state.envelopes.focus, state.envelopes.focus + 1);
  return chosen.map((item) => Number(item.dataset.id));
}

async function decide(decision) {
  const ids = chosenIds();
  if (!ids.length) { say("envelopes-status", "No envelope to decide on."); return; }
  const hadFocus = $("envelopes").contains(document.activeElement);
  let data;
  try {
    data = await api("POST", "/api/decisions", { decision, ids });
  } catch (error) {
    say("envelopes-status", error.message, true);
    return;
  }
  const failed = data.results.filter((r) => !r.ok);
  say("envelopes-status", failed.length
    ? failed.map((r) => r.message).join("; ")
    : data.results.map((r) => `envelope ${r.id}: ${r.message}`).join("; "), failed.length > 0);
  for (const item of envelopeItems()) item.querySelector("input").checked = false;
  await loadEnvelopes(false);
  if (hadFocus) focusEnvelope();
}

function listen() {
  if (state.events) state.events.close();
  state.events = new EventSource("/api/events");
  state.events.addEventListener("envelopes", () => {
    if (state.view === "envelopes" && $("state").value === "pending" && !$("search").value) {
      loadEnvelopes(false).catch(() => {});
    }
  });
  // A recipient of a sent message changed state: the open Sent view asks
  // again for what it shows.
  state.events.addEventListener("sent", () => {
    if (state.view === "sent") loadSent(false).catch(() => {});
  });
}

// -- mailbox and reading ------------------------------------------------------------

async function loadMailbox(append) {
  const params = new URLSearchParams({ state: "accepted", q: $("mailbox-search").value, limit: "50" });
  if (append && state.mailbox.next) params.set("before", String(state.mailbox.next));
  const data = await api("GET", `/api/envelopes?${params}`);
  const list = $("mailbox");
  if (!append) list.replaceChildren();
  for (const env of data.envelopes) {
    const [item, body] = card();
    const link = text("a", "subject", env.subject || "(no subject)");
    link.href = `#mailbox/${env.id}`;
    const top = document.createElement("div");
    top.className = "top";
    top.append(text("span", "meta", env.sender_name ? `${env.sender_name} <${env.sender}>` : env.sender),
      when(env.received_at));
    body.append(top, link);
    if (env.state === "fetching") body.append(text("div", "meta", "being fetched from the sender's server"));
    if (env.attachments.count) body.append(text("div", "meta", `attachments: ${env.attachments.names.join(", ")}`));
    for (const line of env.headlines) body.append(text("div", "headlines", line));
    item.append(body);
    list.append(item);
  }
  state.mailbox.next = data.next;
  $("mailbox-more").hidden = data.next === null;
  say("mailbox-status", `${list.children.length} message(s) shown`);
}

async function openMessage(id) {
  state.message = id;
  $("message-title").textContent = `Message ${id}`;
  for (const part of ["attachments", "html", "text"]) $(`message-${part}-part`).hidden = true;
  $("message-headers").replaceChildren();
  $("message-html").removeAttribute("src");
  $("message-remote").hidden = true;
  for (const button of document.querySelectorAll("#message-reject button")) button.disabled = false;
  say("message-status", "");
  let data;
  try {
    data = await api("GET", `/api/messages/${id}`);
  } catch (error) {
    say("message-status", error.message, true);
    $("message-reject").hidden = true;
    return;
  }
  $("message-reject").hidden = false;
  $("message-title").textContent = visible(data.headers.Subject || "(no subject)");
  const headers = $("message-headers");
  for (const name of ["From", "To", "Cc", "Reply-To", "Date"]) {
    if (!data.headers[name]) continue;
    headers.append(text("dt", "", name), text("dd", "", data.headers[name]));
  }
  if (data.attachments.length) {
    const list = $("message-attachments");
    list.replaceChildren();
    for (const att of data.attachments) {
      const item = document.createElement("li");
      const link = text("a", "", att.name || `attachment ${att.number}`);
      link.href = `/api/messages/${id}/attachments/${att.number}`;
      link.setAttribute("download", "");
      item.append(link, text("span", "meta", ` ${att.type}, ${att.size} octets`));
      list.append(item);
    }
    $("message-attachments-part").hidden = false;
  }
  if (data.text !== null) {
    $("message-text").textContent = data.text;
    $("message-text-part").hidden = false;
  }
  if (data.has_html) await showHtml(id, false);
}

async function showHtml(id, remote) {
  const path = `/api/messages/${id}/html${remote ? "?remote=1" : ""}`;
  // The count of cut-out images is a header: ask for it before framing.
  const head = await fetch(path, { method: "HEAD", credentials: "same-origin" });
  const blocked = Number(head.headers.get("X-Remote-Content-Blocked") || "0");
  if (state.message !== id) return;
  $("message-html").src = path;
  $("message-html-part").hidden = false;
  if (!remote && blocked > 0) {
    $("message-remote-note").textContent =
      `${blocked} remote image(s) blocked: loading them tells the sender that, when and where you read this.`;
    $("message-remote-load").hidden = false;
    $("message-remote").hidden = false;
  } else if (remote) {
    $("message-remote-note").textContent = "Remote images loaded.";
    $("message-remote-load").hidden = true;
    $("message-remote").hidden = false;
  }
}

async function rejectMessage(decision) {
  const id = state.message;
  try {
    const data = await api("POST", "/api/decisions", { decision, ids: [id] });
    const result = data.results[0];
    say("message-status", result.ok ? `Message ${id}: ${result.message}` : result.message, !result.ok);
    if (result.ok) {
      for (const button of document.querySelectorAll("#message-reject button")) button.disabled = true;
    }
  } catch (error) {
    say("message-status", error.message, true);
  }
}

// -- compose and sent ------------------------------------------------------------------

function fillIdentities() {
  const select = $("compose-from");
  if (select.options.length) return;
  for (const identity of state.me.identities) {
    const option = text("option", "", identity);
    option.value = identity;
    option.selected = identity === state.me.user;
    select.append(option);
  }
}

function addresses(value) {
  return value.split(",").map((a) => a.trim()).filter((a) => a);
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve({ name: file.name, type: file.type, data: url.slice(url.indexOf(",") + 1) });
    };
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function sendMessage() {
  say("compose-status", "Sending…");
  try {
    const attachments = await Promise.all(Array.from($("compose-files").files).map(readFile));
    const data = await api("POST", "/api/messages", {
      from: $("compose-from").value,
      to: addresses($("compose-to").value), cc: addresses($("compose-cc").value),
      bcc: addresses($("compose-bcc").value),
      subject: $("compose-subject").value, text: $("compose-text").value, attachments,
    });
    const parts = [];
    if (data.queued.length) parts.push(`envelopes queued for ${data.queued.join(", ")}`);
    if (data.direct.length) parts.push(`sent directly to ${data.direct.join(", ")}`);
    if (data.refused.length) parts.push(`refused by your black list: ${data.refused.join(", ")}`);
    const from = $("compose-from").value;
    $("compose-form").reset();
    $("compose-from").value = from;
    say("compose-status", `Sent: ${parts.join("; ")}. The Sent view follows each recipient.`);
  } catch (error) {
    say("compose-status", error.message, true);
  }
}

async function loadSent(append) {
  // A redraw keeps as many messages as were shown (the older pages too).
  const limit = append ? 50 : Math.min(200, Math.max(50, state.sent.shown));
  const params = new URLSearchParams({ limit: String(limit) });
  if (append && state.sent.next) params.set("before", String(state.sent.next));
  const data = await api("GET", `/api/sent?${params}`);
  if (state.view !== "sent") return;
  const list = $("sent");
  if (!append) list.replaceChildren();
  for (const msg of data.messages) {
    const [item, body] = card();
    item.dataset.msgid = msg.msgid;
    const top = document.createElement("div");
    top.className = "top";
    top.append(text("span", "meta", `from ${msg.from}`), when(msg.created_at));
    const rcpts = document.createElement("ul");
    rcpts.className = "recipients";
    rcpts.setAttribute("aria-label", `Recipients of ${msg.subject || "(no subject)"}`);
    for (const r of msg.recipients) {
      const line = document.createElement("li");
      line.dataset.recipient = r.recipient;
      line.append(text("span", "rcpt", r.recipient), text("span", `badge state-${r.state}`, r.state),
        text("span", "meta", `by ${r.route.toUpperCase()}`));
      if (r.detail) line.append(text("span", "meta detail", r.detail));
      rcpts.append(line);
    }
    body.append(top, text("div", "subject", msg.subject || "(no subject)"), rcpts);
    item.append(body);
    list.append(item);
  }
  state.sent.next = data.next;
  state.sent.shown = list.children.length;
  $("sent-more").hidden = data.next === null;
  say("sent-status", `${list.children.length} message(s) shown`);
}

// -- lists -------------------------------------------------------------------------------

async function loadLists() {
  state.lists = (await api("GET", "/api/lists")).entries;
  renderLists();
}

function renderLists() {
  const filter = $("lists-filter").value.trim().toLowerCase();
  const list = $("lists");
  list.replaceChildren();
  const shown = state.lists.filter((e) => !filter ||
    [e.address, e.server || "", LIST_NAMES[e.list]].some((v) => v.toLowerCase().includes(filter)));
  for (const entry of shown) {
    const [item, body] = card("list-entry");
    const top = document.createElement("div");
    top.className = "top";
    top.append(text("span", `badge list-${entry.list}`, LIST_NAMES[entry.list]),
      text("span", "meta", entry.how === "auto" ? "by a decision" : "by hand"));
    body.append(top, text("div", "subject", entry.address));
    if (entry.server) body.append(text("div", "meta", `server ${entry.server}`));
    const used = entry.uses ? `used ${entry.uses} time(s)` + (entry.last_used ? `, last ${day(entry.last_used)}` : "")
      : "never used";
    body.append(text("div", "meta", `added ${day(entry.added)}`), text("div", "meta", used));
    const remove = text("button", "remove", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${entry.address} from the ${LIST_NAMES[entry.list]} list`);
    remove.addEventListener("click", () => editList("remove", entry.list, entry.address, entry.server));
    item.append(body, remove);
    list.append(item);
  }
  const total = state.lists.length;
  say("lists-status", shown.length === total ? `${total} entries` : `${shown.length} of ${total} entries`);
}

async function editList(action, list, address, server) {
  const body = { action, list, address };
  if (server && list.startsWith("in-")) body.server = server;
  try {
    const data = await api("POST", "/api/lists", body);
    await loadLists();
    say("lists-status", data.message);
    return true;
  } catch (error) {
    say("lists-status", error.message, true);
    return false;
  }
}

// -- settings ------------------------------------------------------------------------------

async function changePassword() {
  const current = $("password-current").value;
  const fresh = $("password-new").value;
  if (fresh !== $("password-repeat").value) {
    say("password-status", "The two new passwords differ; nothing was changed.", true);
    return;
  }
  try {
    const data = await api("POST", "/api/password", { current, new: fresh });
    $("password-form").reset();
    say("password-status",
      `Password changed; ${data.other_sessions_ended} other session(s) logged out.`);
    $("token-new").hidden = true;
    await loadTokens();
  } catch (error) {
    say("password-status", error.message, true);
  }
}

async function loadTokens() {
  const data = await api("GET", "/api/tokens");
  const list = $("tokens");
  list.replaceChildren();
  for (const token of data.tokens) {
    const [item, body] = card();
    body.append(text("div", "subject", token.name),
      text("div", "meta", `made ${day(token.created)}`),
      text("div", "meta", token.last_used ? `last used ${day(token.last_used)}` : "never used"));
    const revoke = text("button", "remove", "Revoke");
    revoke.type = "button";
    revoke.setAttribute("aria-label", `Revoke the token ${token.name}`);
    revoke.addEventListener("click", () => revokeToken(token));
    item.append(body, revoke);
    list.append(item);
  }
  say("tokens-status", `${data.tokens.length} token(s)`);
}

async function makeToken() {
  try {
    const made = await api("POST", "/api/tokens", { name: $("token-name").value });
    $("token-name").value = "";
    await loadTokens();
    $("token-secret").value = made.token;
    $("token-new").hidden = false;
    say("tokens-status", `Token ${made.name} made; copy it now.`);
    $("token-secret").focus();
    $("token-secret").select();
  } catch (error) {
    say("tokens-status", error.message, true);
  }
}

async function revokeToken(token) {
  try {
    await api("DELETE", `/api/tokens/${token.id}`);
    $("token-new").hidden = true;
    await loadTokens();
    say("tokens-status", `Token ${token.name} revoked.`);
  } catch (error) {
    say("tokens-status", error.message, true);
  }
}

// -- the administrator's view ------------------------------------------------------------

function button(label, name, action) {
  const node = text("button", "", label);
  node.type = "button";
  if (name) node.setAttribute("aria-label", name);
  node.addEventListener("click", action);
  return node;
}

async function loadAdmin() {
  const [health, peers, queue, senders, accounts] = await Promise.all([
    api("GET", "/api/admin/health"), api("GET", "/api/admin/peers"),
    api("GET", "/api/admin/queue"), api("GET", "/api/admin/senders"),
    api("GET", "/api/admin/accounts")]);
  if (state.view !== "admin") return;
  showHealth(health);
  showPeers(peers.peers);
  showQueue(queue);
  showSenders(senders);
  showAccounts(accounts.accounts);
  // The chart shown last, else the busiest peer's.
  const charted = peers.peers.find((p) => p.server === state.chart)
    || peers.peers.reduce((most, p) => (most && most.messages >= p.messages ? most : p), null);
  if (charted) await showChart(charted.server);
  else $("chart").hidden = true;
}

function showHealth(health) {
  const list = $("admin-health");
  list.replaceChildren();
  const listeners = Object.entries(health.listeners).map(([name, where]) => `${name} ${where}`);
  const store = health.store.ok
    ? `${health.store.backend}, schema ${health.store.schema_version}, answering`
    : `${health.store.backend}: NOT answering: ${health.store.error}`;
  const queue = `${health.queue.depth} job(s) waiting` +
    (health.queue.oldest ? `, the oldest for ${Math.round(health.queue.oldest_age_seconds)} s` : "");
  for (const [name, value] of [["Listeners", listeners.join(" · ") || "none"],
    ["Store", store], ["Queue", queue]]) {
    list.append(text("dt", "", name), text("dd", name === "Store" && !health.store.ok ? "error" : "", value));
  }
}

function showPeers(peers) {
  const list = $("admin-peers");
  list.replaceChildren();
  for (const peer of peers) {
    const [item, body] = card("peer");
    item.dataset.server = peer.server;
    const top = document.createElement("div");
    top.className = "top";
    top.append(text("span", "subject", peer.server),
      text("span", `badge standing-${peer.standing}`, peer.standing));
    body.append(top,
      text("div", "meta", `quality ${peer.value.toFixed(2)} · ${peer.messages} message(s), votes ${peer.votes}`),
      text("div", "reason", peer.reason));
    if (peer.override) {
      body.append(text("div", "meta",
        `${peer.override} by hand since ${day(peer.override_at)}`));
    }
    const actions = document.createElement("div");
    actions.className = "decisions";
    actions.append(button("Chart", `Chart of ${peer.server}`,
      () => showChart(peer.server).then(() => $("chart").focus())));
    // The administrator's word on the peer, with the reason typed above it.
    const overrideButton = (label, name, value) => adminButton(label, name, "POST",
      `/api/admin/peers/${encodeURIComponent(peer.server)}`,
      () => ({ override: value, reason: $("peer-reason").value }),
      (answer) => {
        $("peer-reason").value = "";
        return `${peer.server}: ${answer.standing} (${answer.reason})`;
      });
    if (peer.override !== "blocked") {
      actions.append(overrideButton("Block", `Block ${peer.server}`, "blocked"));
    }
    if (peer.override !== "allowed") {
      actions.append(overrideButton("Allow", `Allow ${peer.server}`, "allowed"));
    }
    if (peer.override) {
      actions.append(overrideButton("Unblock", `Hand ${peer.server} back to the quality formula`,
        null));
    }
    body.append(actions);
    item.append(body);
    list.append(item);
  }
  if (!peers.length) list.append(text("li", "hint", "No peer server has sent anything yet."));
}

// A button of the administrator's view: the change, the view read again,
// and what came of it (or why not) said in its status line.
function adminButton(label, name, method, path, payload, said) {
  return button(label, name, async () => {
    try {
      const answer = await api(method, path, typeof payload === "function" ? payload() : payload);
      await loadAdmin();
      say("admin-status", said(answer));
    } catch (error) {
      say("admin-status", error.message, true);
    }
  });
}

// The quality chart: Quality(X) (section 5.3, from -1 to 1) at each sample,
// drawn as an SVG in the page (no library, no inline script: elements made
// here, their look in app.css).
async function showChart(server) {
  state.chart = server;
  const data = await api("GET", `/api/admin/peers/${encodeURIComponent(server)}/history?days=30`);
  if (state.chart !== server) return;
  const points = data.points;
  // As wide as its box in CSS pixels, so that the labels keep their size
  // on a phone rather than shrink with a scaled drawing.
  $("chart").hidden = false;
  const width = Math.max(280, $("chart-box").clientWidth || 640);
  const height = 220, left = 44, right = 12, top = 12, bottom = 30;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-labelledby", "chart-caption");
  svg.classList.add("chart");
  const add = (tag, attrs, parent = svg) => {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    parent.append(node);
    return node;
  };
  const times = points.map((p) => Date.parse(p.at));
  const start = times.length ? Math.min(...times) : Date.now() - 86400000;
  const end = times.length ? Math.max(...times, start + 1) : Date.now();
  const x = (t) => left + (t - start) / (end - start) * (width - left - right);
  const y = (v) => top + (1 - v) / 2 * (height - top - bottom);
  for (const v of [1, 0.5, 0, -0.5, -1]) {
    add("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" });
    const label = add("text", { x: left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" });
    label.textContent = v.toFixed(1);
  }
  for (const [t, anchor] of [[start, "start"], [end, "end"]]) {
    const label = add("text", { x: x(t), y: height - 8, class: "tick", "text-anchor": anchor });
    label.textContent = new Date(t).toISOString().slice(0, 10);
  }
  if (points.length > 1) {
    add("polyline", { points: points.map((p, i) => `${x(times[i])},${y(p.value)}`).join(" "),
      class: "line" });
  }
  points.forEach((p, i) => {
    const dot = add("circle", { cx: x(times[i]), cy: y(p.value), r: 3.5, class: "dot" });
    add("title", {}, dot).textContent =
      `${p.at}: quality ${p.value.toFixed(2)} (${p.messages} messages, votes ${p.votes})`;
  });
  const last = points[points.length - 1];
  $("chart-caption").textContent = points.length
    ? `Quality of ${server} over the last 30 days: ${points.length} sample(s), from ` +
      `${points[0].value.toFixed(2)} on ${points[0].at.slice(0, 10)} to ` +
      `${last.value.toFixed(2)} on ${last.at.slice(0, 10)} (${last.messages} messages).`
    : `Quality of ${server}: no sample in the last 30 days yet.`;
  $("chart-box").replaceChildren(svg);
  $("chart").hidden = false;
}

function showQueue(queue) {
  const peers = $("admin-queue-peers");
  peers.replaceChildren();
  for (const p of queue.peers) {
    peers.append(text("li", "", `${p.peer}: ${p.jobs} job(s), the oldest since ${day(p.oldest)}`));
  }
  if (!queue.peers.length) peers.append(text("li", "hint", "Nothing waiting."));
  const list = $("admin-queue");
  list.replaceChildren();
  for (const job of queue.jobs) {
    const [item, body] = card();
    const top = document.createElement("div");
    top.className = "top";
    top.append(text("span", "subject", `${job.kind} to ${job.peer}`),
      text("span", "meta", job.running ? "running now" : `next attempt ${day(job.next_attempt)}`));
    body.append(top, text("div", "meta", `job ${job.id} · ${job.attempts} attempt(s) · queued ${day(job.created_at)}`));
    if (job.last_error) body.append(text("div", "meta detail", `last error: ${job.last_error}`));
    const retry = adminButton("Retry now", `Retry job ${job.id} to ${job.peer} now`, "POST",
      `/api/admin/queue/${job.id}/retry`, undefined, () => `Job ${job.id} is being retried now.`);
    retry.disabled = job.running;
    item.append(body, retry);
    list.append(item);
  }
}

function showSenders(senders) {
  const reports = $("admin-reports");
  reports.replaceChildren();
  for (const r of senders.reports) reports.append(text("li", "", `${r.sender}: ${r.reports} report(s)`));
  if (!senders.reports.length) reports.append(text("li", "hint", "No spam report."));
  const list = $("admin-suspended");
  list.replaceChildren();
  for (const s of senders.suspended) {
    const [item, body] = card();
    body.append(text("div", "subject", s.address), text("div", "reason", s.reason));
    item.append(body, adminButton("Unsuspend", `Lift the suspension of ${s.address}`, "POST",
      `/api/admin/senders/${encodeURIComponent(s.address)}`, { suspended: false },
      () => `${s.address} may send again.`));
    list.append(item);
  }
  if (!senders.suspended.length) list.append(text("li", "hint", "No sender is suspended."));
}

function showAccounts(accounts) {
  const list = $("admin-accounts");
  list.replaceChildren();
  for (const a of accounts) {
    const [item, body] = card();
    const top = document.createElement("div");
    top.className = "top";
    top.append(text("span", "subject", a.address));
    if (a.admin) top.append(text("span", "badge", "administrator"));
    if (a.suspended) top.append(text("span", "badge state-refused", "suspended"));
    body.append(top);
    const others = a.identities.filter((i) => i !== a.address);
    if (others.length) body.append(text("div", "meta", `also ${others.join(", ")}`));
    item.append(body);
    list.append(item);
  }
}

// -- logging in and out ------------------------------------------------------------------

async function enter(me) {
  state.csrf = me.csrf;
  state.me = me;
  $("who").textContent = me.user;
  $("nav-admin").hidden = !me.admin;
  $("compose-from").replaceChildren();
  listen();
  await route(false);
}

function loggedOut() {
  if (state.events) state.events.close();
  state.events = null;
  state.csrf = null;
  state.me = null;
  $("who").textContent = "";
  $("nav-admin").hidden = true;
  show("login", false);
}

const KEYS = { a: "accept", w: "accept-auth", r: "reject", s: "reject-spam", b: "reject-spammer" };

function onKey(event) {
  if (state.view !== "envelopes" || event.ctrlKey || event.metaKey || event.altKey) return;
  const active = document.activeElement;
  const tag = active ? active.tagName : "";
  if (tag === "INPUT" && active.type !== "checkbox") return;
  if (tag === "SELECT" || tag === "TEXTAREA" || tag === "BUTTON" && event.key === " ") return;
  const item = envelopeItems()[state.envelopes.focus];
  // The first j or k goes to the list; later ones move within it.
  const inList = $("envelopes").contains(active);
  if (event.key === "j") { if (inList) state.envelopes.focus += 1; focusEnvelope(); }
  else if (event.key === "k") { if (inList) state.envelopes.focus -= 1; focusEnvelope(); }
  else if (event.key === "x") { if (item) item.querySelector("input").click(); }
  else if (event.key === "o") { if (item && item.dataset.state === "accepted") location.hash = `#mailbox/${item.dataset.id}`; }
  else if (KEYS[event.key]) { decide(KEYS[event.key]); }
  else return;
  event.preventDefault();
}

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    say("login-error", "");
    try {
      const me = await api("POST", "/api/login", {
        address: $("login-address").value, password: $("login-password").value });
      $("login-password").value = "";
      await enter(me);
      $(`${state.view}-title`).focus();
    } catch (error) {
      say("login-error", error.message, true);
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (error) { /* already out */ }
    loggedOut();
    $("login-title").focus();
  });
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    $("main").focus();
  });
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); loadEnvelopes(false); });
  $("state").addEventListener("change", () => loadEnvelopes(false));
  $("more").addEventListener("click", () => loadEnvelopes(true));
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }
  $("mailbox-search-form").addEventListener("submit", (event) => { event.preventDefault(); loadMailbox(false); });
  $("mailbox-more").addEventListener("click", () => loadMailbox(true));
  for (const button of document.querySelectorAll("#message-reject button")) {
    button.addEventListener("click", () => rejectMessage(button.dataset.decision));
  }
  $("message-remote-load").addEventListener("click", () => {
    showHtml(state.message, true).then(() => $("message-html").focus());
  });
  $("compose-form").addEventListener("submit", (event) => { event.preventDefault(); sendMessage(); });
  $("list-add-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const ok = await editList("add", $("list-name").value, $("list-address").value.trim(),
      $("list-server").value.trim() || null);
    if (ok) { $("list-address").value = ""; $("list-server").value = ""; }
  });
  $("lists-filter").addEventListener("input", renderLists);
  $("password-form").addEventListener("submit", (event) => { event.preventDefault(); changePassword(); });
  $("sent-more").addEventListener("click", () => loadSent(true));
  $("token-form").addEventListener("submit", (event) => { event.preventDefault(); makeToken(); });
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => route(true));
  try {
    await enter(await api("GET", "/api/me"));
  } catch (error) {
    show("login", false);
  }
});
