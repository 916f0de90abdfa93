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
  sent: { timer: null },
  lists: [],
  message: null,
};
// How often the sent view asks again: the API has no event for a
// recipient's state, and a few seconds is how fast a person looks.
const SENT_POLL_MS = 3000;
const VIEWS = ["login", "envelopes", "mailbox", "message", "compose", "sent", "lists", "settings"];
const LIST_NAMES = {
  "in-white": "inbound white", "in-black": "inbound black",
  "out-white": "outbound white", "out-black": "outbound black",
};
const MANUAL_REASON = "your decision";
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

function when(iso) {
  const node = text("time", "", age(iso));
  node.dateTime = iso;
  node.title = iso;
  return node;
}

// -- views ------------------------------------------------------------------------

function show(view, moveFocus) {
  if (state.view === "sent" && view !== "sent") stopSentPoll();
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
    const view = VIEWS.includes(name) && name !== "login" && name !== "message" ? name : "envelopes";
    show(view, moveFocus);
    if (view === "envelopes") await loadEnvelopes(false);
    else if (view === "mailbox") await loadMailbox(false);
    else if (view === "compose") fillIdentities();
    else if (view === "sent") { await loadSent(); startSentPoll(); }
    else if (view === "lists") await loadLists();
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
  // The server says "your decision" for the user's own choice; any other
  // reason is a decision it took itself (a list, the quality, expiry).
  if (env.state !== "pending" && env.reason === MANUAL_REASON) {
    body.append(text("div", "meta", "decided by you"));
  } else if (env.state !== "pending" && env.reason) {
    body.append(text("div", "reason", `Decided by the server: ${env.reason}`));
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
}

// -- mailbox and reading ------------------------------------------------------------

async function loadMailbox(append) {
  const params = new URLSearchParams({ state: "accepted", q: $("mailbox-search").value, limit: "50" });
  if (append && state.mailbox.next) params.set("before", String(state.mailbox.next));
  const data = await api("GET", `/api/envelopes?${params}`);
  const list = $("mailbox");
  if (!append) list.replaceChildren();
  for (const env of data.envelopes) {
    const item = document.createElement("li");
    item.className = "card";
    const body = document.createElement("div");
    body.className = "card-body";
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

async function loadSent() {
  const data = await api("GET", "/api/sent?limit=50");
  if (state.view !== "sent") return;
  const list = $("sent");
  list.replaceChildren();
  for (const msg of data.messages) {
    const item = document.createElement("li");
    item.className = "card";
    item.dataset.msgid = msg.msgid;
    const body = document.createElement("div");
    body.className = "card-body";
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
  say("sent-status", `${data.messages.length} message(s) shown`);
}

function startSentPoll() {
  stopSentPoll();
  state.sent.timer = setInterval(() => {
    if (state.view === "sent") loadSent().catch(() => {});
  }, SENT_POLL_MS);
}

function stopSentPoll() {
  if (state.sent.timer) clearInterval(state.sent.timer);
  state.sent.timer = null;
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
    const item = document.createElement("li");
    item.className = "card list-entry";
    const body = document.createElement("div");
    body.className = "card-body";
    const top = document.createElement("div");
    top.className = "top";
    top.append(text("span", `badge list-${entry.list}`, LIST_NAMES[entry.list]),
      text("span", "meta", entry.how === "auto" ? "by a decision" : "by hand"));
    body.append(top, text("div", "subject", entry.address));
    if (entry.server) body.append(text("div", "meta", `server ${entry.server}`));
    body.append(text("div", "meta", `added ${entry.added ? entry.added.replace("T", " ").replace("Z", " UTC") : "?"} · used ${entry.uses} time(s)`));
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
  } catch (error) {
    say("password-status", error.message, true);
  }
}

// -- logging in and out ------------------------------------------------------------------

async function enter(me) {
  state.csrf = me.csrf;
  state.me = me;
  $("who").textContent = me.user;
  $("compose-from").replaceChildren();
  listen();
  await route(false);
}

function loggedOut() {
  if (state.events) state.events.close();
  state.events = null;
  stopSentPoll();
  state.csrf = null;
  state.me = null;
  $("who").textContent = "";
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
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => route(true));
  try {
    await enter(await api("GET", "/api/me"));
  } catch (error) {
    show("login", false);
  }
});
