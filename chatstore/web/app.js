// The chat page: conversations, search, history, composer and live updates,
// over the same API any client uses (no privileged path: the API is the gate).
// Nothing from the server is ever inserted as HTML: text goes in as text
// nodes, and the one HTML-ish field (a search snippet, already escaped with
// <mark> around matches) is rebuilt as nodes by snippetNodes().

import * as api from "./api.js";

const PAGE = 50; // messages a page, either way
const LIST_PAGE = 30; // conversations a page
const $ = (id) => document.getElementById(id);

const state = {
  conversations: new Map(), // id -> {conversation, item}
  cursor: null,
  listDone: false,
  listLoading: false,
  open: null, // see openConversation
  sending: false,
  archived: false, // the sidebar lists the archived conversations (true) or the others
  listGeneration: 0, // moves when the sidebar switches list: late pages of the other are dropped
  // The send that failed, {text, key, where}: sending the same text again
  // (to the same place) reuses its Idempotency-Key, so a retry after a
  // 502/504, an `event: error` or a dropped connection is stored once (the
  // server replays what the first attempt finished, or asks the model again
  // for the message it stored). One for /api/chat/start, one for a message.
  failed: { start: null, message: null },
};

// -- small DOM helpers ------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function when(iso) {
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function announce(text) {
  $("announce").textContent = text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

// -- errors and sign-in ---------------------------------------------------------------

function showError(error) {
  if (error.name === "AbortError") return;
  if (error.status === 401) {
    showSignIn(error);
    return;
  }
  $("error-code").textContent = error.code ? `${error.code}:` : "error:";
  $("error-message").textContent = error.message || String(error);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function showSignIn(error) {
  stopLive();
  state.open = null;
  $("signin-reason").textContent = api.token()
    ? `Your session was refused (${error.message}): it may have expired or been signed out.`
    : "This page needs a session to show your conversations.";
  $("signin").hidden = false;
  $("history").hidden = true;
  $("composer").hidden = true;
  $("sidebar").hidden = true;
  $("menu").hidden = true;
  $("error").hidden = true;
  $("title").textContent = "chatstore";
}

// -- the conversation list --------------------------------------------------------------

function conversationTitle(conversation) {
  return conversation.title || "Untitled conversation";
}

function conversationItem(conversation) {
  const title = conversationTitle(conversation);
  const link = el(
    "a",
    { class: "conversation-link", href: `#c=${conversation.id}`, onclick: followLink },
    el("span", { class: "conversation-title" }, title),
    el(
      "span",
      { class: "conversation-meta" },
      `${conversation.message_count} messages · ${when(conversation.updated_at)}`,
    ),
  );
  const actions = el(
    "details",
    { class: "conversation-actions" },
    el("summary", { "aria-label": `Actions for ${title}` }, "⋯"),
    el("button", { type: "button", onclick: () => startRename(conversation.id) }, "Rename"),
    // Archived conversations leave the list (GET /api/conversations leaves
    // them out) and are listed by the sidebar's "Archived" switch.
    el(
      "button",
      { type: "button", onclick: () => setArchived(conversation.id, !conversation.archived) },
      conversation.archived ? "Unarchive" : "Archive",
    ),
    el("button", { type: "button", onclick: () => deleteConversation(conversation.id) }, "Delete"),
  );
  const item = el("li", { "data-id": conversation.id }, link, actions);
  if (state.open && state.open.id === conversation.id) link.setAttribute("aria-current", "page");
  return item;
}

function forget(id) {
  const known = state.conversations.get(id);
  if (known) known.item.remove();
  state.conversations.delete(id);
}

function remember(conversation, { top = false } = {}) {
  // The sidebar shows one list at a time: the archived ones, or the others.
  if (conversation.archived !== state.archived) {
    forget(conversation.id);
    return;
  }
  const known = state.conversations.get(conversation.id);
  const item = conversationItem(conversation);
  if (known) known.item.replaceWith(item);
  state.conversations.set(conversation.id, { conversation, item });
  const list = $("conversations");
  if (top) list.prepend(item);
  else if (!known) list.append(item);
}

async function loadConversations() {
  if (state.listDone || state.listLoading) return;
  state.listLoading = true;
  const generation = state.listGeneration;
  $("conversations").setAttribute("aria-busy", "true");
  try {
    const query = new URLSearchParams({ limit: String(LIST_PAGE) });
    if (state.archived) query.set("archived", "true");
    if (state.cursor) query.set("cursor", state.cursor);
    const page = await api.json("GET", `/api/conversations?${query}`);
    if (generation !== state.listGeneration) return; // the other list's page
    for (const conversation of page.data) {
      if (!state.conversations.has(conversation.id)) remember(conversation);
    }
    state.cursor = page.next_cursor;
    state.listDone = page.next_cursor === null;
    $("conversations-more").textContent = state.listDone
      ? state.conversations.size === 0
        ? state.archived
          ? "No archived conversations."
          : "No conversations yet."
        : ""
      : "Loading…";
  } catch (error) {
    if (generation !== state.listGeneration) return;
    showError(error);
    state.listDone = true;
    $("conversations-more").textContent = "";
  } finally {
    if (generation === state.listGeneration) {
      state.listLoading = false;
      $("conversations").setAttribute("aria-busy", "false");
    }
  }
  if (generation !== state.listGeneration) return;
  // The observer fires on changes only: a first page shorter than the sidebar
  // leaves the marker in view, so ask for the next page here.
  const marker = $("conversations-more").getBoundingClientRect();
  if (!state.listDone && marker.top < window.innerHeight && !$("sidebar").hidden) {
    await loadConversations();
  }
}

// A conversation with new activity moves to the top, as the server orders them.
async function bump(id) {
  try {
    remember(await api.json("GET", `/api/conversations/${id}`), { top: true });
  } catch (error) {
    if (error.status !== 404) showError(error);
  }
}

function startRename(id) {
  const known = state.conversations.get(id);
  if (!known) return;
  const input = el("input", {
    type: "text",
    value: known.conversation.title || "",
    "aria-label": "New title",
    maxlength: "500",
  });
  const form = el("form", { class: "rename" }, input);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const title = input.value.trim() || null;
      const updated = await api.json("PATCH", `/api/conversations/${id}`, { body: { title } });
      remember(updated);
      if (state.open && state.open.id === id) $("title").textContent = conversationTitle(updated);
    } catch (error) {
      showError(error);
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") remember(known.conversation);
  });
  known.item.querySelector(".conversation-link").replaceWith(form);
  known.item.querySelector("details").open = false;
  input.focus();
  input.select();
}

async function setArchived(id, archived) {
  try {
    const updated = await api.json("PATCH", `/api/conversations/${id}`, { body: { archived } });
    remember(updated); // leaves this list: it belongs to the other one now
    announce(`${conversationTitle(updated)} ${archived ? "archived" : "unarchived"}.`);
    if (state.conversations.size === 0 && state.listDone) {
      $("conversations-more").textContent = state.archived
        ? "No archived conversations."
        : "No conversations yet.";
    }
  } catch (error) {
    showError(error);
  }
}

// Switches the sidebar between the conversations and the archived ones.
function toggleArchived() {
  state.archived = !state.archived;
  state.listGeneration += 1;
  state.listLoading = false;
  state.listDone = false;
  state.cursor = null;
  state.conversations.clear();
  $("conversations").replaceChildren();
  $("conversations-more").textContent = "Loading…";
  const toggle = $("archived-toggle");
  toggle.setAttribute("aria-pressed", String(state.archived));
  toggle.textContent = state.archived ? "Back to conversations" : "Archived conversations";
  loadConversations();
}

async function deleteConversation(id) {
  const known = state.conversations.get(id);
  const title = known ? conversationTitle(known.conversation) : "this conversation";
  if (!confirm(`Delete "${title}" and all its messages? This cannot be undone.`)) return;
  try {
    await api.json("DELETE", `/api/conversations/${id}`);
    if (known) known.item.remove();
    state.conversations.delete(id);
    if (state.open && state.open.id === id) navigate(null);
  } catch (error) {
    showError(error);
  }
}

// -- messages -----------------------------------------------------------------------------

function roleLabel(message) {
  return { user: "You", assistant: "Assistant", system: "System", tool: "Tool" }[message.role];
}

function folded(summary, body) {
  return el("details", { class: "fold" }, el("summary", {}, summary), el("pre", {}, body));
}

function messageItem(message) {
  const item = el(
    "li",
    { class: `message ${message.role}`, id: `m-${message.seq}`, "data-seq": message.seq },
    el(
      "div",
      { class: "message-head" },
      el("span", { class: "who" }, roleLabel(message)),
      el("time", { datetime: message.created_at }, when(message.created_at)),
    ),
  );
  if (message.role === "tool") {
    const what = [message.name, message.tool_call_id].filter(Boolean).join(" · ");
    item.append(folded(`Tool result${what ? ` (${what})` : ""}`, message.content ?? ""));
  } else if (message.content !== null && message.content !== "") {
    item.append(el("div", { class: "content" }, message.content));
  }
  for (const call of message.tool_calls || []) {
    item.append(folded(`Tool call: ${call.function.name}`, call.function.arguments));
  }
  return item;
}

// Puts a message where its seq belongs, once: live events, replies and pages
// may all bring the same message, and the seq is its identity.
function place(message) {
  const open = state.open;
  if (!open || open.id !== message.conversation_id || open.items.has(message.seq)) return false;
  const item = messageItem(message);
  const list = $("messages");
  if (open.items.size === 0 || message.seq > open.maxSeq) {
    list.append(item);
  } else {
    const next = [...list.children].find((node) => Number(node.dataset.seq) > message.seq);
    list.insertBefore(item, next || null);
  }
  open.items.set(message.seq, item);
  open.minSeq = open.items.size === 1 ? message.seq : Math.min(open.minSeq, message.seq);
  open.maxSeq = Math.max(open.maxSeq, message.seq);
  $("empty").hidden = true;
  return true;
}

function nearBottom() {
  const history = $("history");
  return history.scrollHeight - history.scrollTop - history.clientHeight < 80;
}

function scrollToBottom() {
  const history = $("history");
  history.scrollTop = history.scrollHeight;
}

async function messagesPage(open, query) {
  const params = new URLSearchParams({ limit: String(PAGE), ...query });
  return api.json("GET", `/api/conversations/${open.id}/messages?${params}`, {
    signal: open.abort.signal,
  });
}

async function openConversation(id, seq = null) {
  stopLive();
  const open = {
    id,
    items: new Map(),
    minSeq: 0,
    maxSeq: 0,
    olderMore: false,
    newerMore: false,
    loadingOlder: false,
    loadingNewer: false,
    abort: new AbortController(),
  };
  state.open = open;
  $("messages").replaceChildren();
  $("empty").hidden = true;
  $("empty").textContent = "No messages yet: say hello.";
  $("older").hidden = true;
  $("history").hidden = false;
  $("composer").hidden = false;
  for (const [known, { item }] of state.conversations) {
    const link = item.querySelector(".conversation-link");
    if (link) link.toggleAttribute("aria-current", known === id);
    if (link && known === id) link.setAttribute("aria-current", "page");
  }
  try {
    const [conversation, older, newer] = await Promise.all([
      api.json("GET", `/api/conversations/${id}`, { signal: open.abort.signal }),
      messagesPage(open, seq === null ? { order: "desc" } : { order: "desc", before: seq + 1 }),
      seq === null ? null : messagesPage(open, { order: "asc", after: seq }),
    ]);
    if (state.open !== open) return;
    $("title").textContent = conversationTitle(conversation);
    document.title = `${conversationTitle(conversation)} · chatstore`;
    for (const message of older.data.reverse()) place(message);
    open.olderMore = older.has_more;
    if (newer) {
      for (const message of newer.data) place(message);
      open.newerMore = newer.has_more;
    }
    $("empty").hidden = open.items.size > 0;
    $("older").hidden = !open.olderMore;
    const target = seq === null ? null : open.items.get(seq);
    if (target) {
      target.classList.add("found");
      target.scrollIntoView({ block: "center" });
      target.setAttribute("tabindex", "-1");
      target.focus({ preventScroll: true });
    } else {
      scrollToBottom();
    }
    if (!open.newerMore) follow(open);
    fillViewport();
  } catch (error) {
    if (state.open === open) {
      showError(error);
      if (error.status === 404) navigate(null);
    }
  }
}

function closeConversation() {
  stopLive();
  state.open = null;
  $("messages").replaceChildren();
  $("older").hidden = true;
  $("title").textContent = "chatstore";
  document.title = "chatstore";
  $("empty").hidden = false;
  $("empty").textContent = "Pick a conversation, or type below to start a new one.";
  $("history").hidden = false;
  $("composer").hidden = false;
  for (const { item } of state.conversations.values()) {
    item.querySelector(".conversation-link")?.removeAttribute("aria-current");
  }
}

// Older pages as the reader scrolls up: the page is prepended and the scroll
// position moved by exactly what was added above (the page, less the
// "Loading older messages" line once there is nothing older), so what is on
// screen does not jump. That line stays in place while a page loads: showing
// it only then would push the messages down and back up.
async function loadOlder() {
  const open = state.open;
  if (!open || !open.olderMore || open.loadingOlder) return;
  open.loadingOlder = true;
  try {
    const page = await messagesPage(open, { order: "desc", before: open.minSeq });
    if (state.open !== open) return;
    const history = $("history");
    const height = history.scrollHeight;
    const top = history.scrollTop;
    for (const message of page.data) place(message);
    open.olderMore = page.has_more;
    $("older").hidden = !open.olderMore;
    history.scrollTop = top + (history.scrollHeight - height);
  } catch (error) {
    showError(error);
  } finally {
    open.loadingOlder = false;
  }
}

async function loadNewer() {
  const open = state.open;
  if (!open || !open.newerMore || open.loadingNewer) return;
  open.loadingNewer = true;
  $("newer").hidden = false;
  try {
    const page = await messagesPage(open, { order: "asc", after: open.maxSeq });
    if (state.open !== open) return;
    for (const message of page.data) place(message);
    open.newerMore = page.has_more;
    if (!open.newerMore) follow(open);
  } catch (error) {
    showError(error);
  } finally {
    open.loadingNewer = false;
    $("newer").hidden = true;
  }
}

function onScroll() {
  const history = $("history");
  if (history.scrollTop < 300) loadOlder();
  if (history.scrollHeight - history.scrollTop - history.clientHeight < 300) loadNewer();
}

// A short page leaves nothing to scroll: keep loading until it fills.
async function fillViewport() {
  const history = $("history");
  const open = state.open;
  while (open && state.open === open && open.olderMore && history.scrollHeight <= history.clientHeight) {
    await loadOlder();
  }
}

// -- live updates ---------------------------------------------------------------------------

// The conversation's event stream through fetch() (EventSource sends no
// Authorization header), resumed after a drop with Last-Event-ID: the newest
// seq on the page, so nothing is missed, and place() drops what is already shown.
async function follow(open) {
  if (open.following) return;
  open.following = true;
  let delay = 1000;
  while (state.open === open && !open.abort.signal.aborted) {
    try {
      const response = await api.send("GET", `/api/conversations/${open.id}/events`, {
        accept: "text/event-stream",
        signal: open.abort.signal,
        lastEventId: open.maxSeq,
      });
      delay = 1000;
      await api.readEvents(response, ({ event, data }) => {
        if (event !== "message") return;
        const message = JSON.parse(data);
        const atBottom = nearBottom();
        if (place(message)) {
          if (atBottom) scrollToBottom();
          announce(`${roleLabel(message)}: ${message.content ?? ""}`);
          bump(open.id);
        }
      });
    } catch (error) {
      if (error.name === "AbortError" || open.abort.signal.aborted) return;
      if (error.status === 401 || error.status === 404) {
        showError(error);
        return;
      }
      // Anything else (a restart, a 429 for too many streams, a network
      // drop): retry, backing off to 30 s.
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 30000);
  }
}

function stopLive() {
  if (state.open) state.open.abort.abort();
}

// -- sending ---------------------------------------------------------------------------------

function titleFrom(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 60 ? `${line.slice(0, 59)}…` : line;
}

// The key for sending `text` to `where`: the failed attempt's when it is
// the same text to the same place, else a new one; remembered until the
// send succeeds.
function keyFor(kind, text, where) {
  const failed = state.failed[kind];
  if (failed && failed.text === text && failed.where === where) return failed;
  return { text, where, key: api.newKey() };
}

async function sendMessage(text) {
  let attempt = null;
  let pending = null;
  let draft = null;
  try {
    if (!state.open) {
      attempt = keyFor("start", text, null);
      const started = await api.json("POST", "/api/chat/start", {
        body: { title: titleFrom(text) },
        idempotencyKey: attempt.key,
      });
      state.failed.start = null;
      attempt = null;
      remember(started.conversation, { top: true });
      navigate(started.session_id, null, { wait: true });
      await openConversation(started.session_id);
    } else if (state.open.newerMore) {
      // Reading an old page: the reply goes at the end, so show the end first.
      await openConversation(state.open.id);
    }
    const open = state.open;
    attempt = keyFor("message", text, open.id);
    pending = el(
      "li",
      { class: "message user pending" },
      el("div", { class: "message-head" }, el("span", { class: "who" }, "You"), "sending…"),
      el("div", { class: "content" }, text),
    );
    $("messages").append(pending);
    $("empty").hidden = true;
    scrollToBottom();
    const response = await api.send("POST", `/api/chat/${open.id}/message`, {
      body: { content: text },
      accept: "text/event-stream, application/json",
      idempotencyKey: attempt.key,
    });
    const type = response.headers.get("content-type") || "";
    if (type.startsWith("text/event-stream")) {
      // The streaming chat: the stored messages as `message`, the reply's text
      // as `delta`s while it is written, then `done`, or `error`.
      let done = false;
      await api.readEvents(response, ({ event, data }) => {
        const body = JSON.parse(data);
        if (event === "message") {
          if (body.role === "user") pending.remove();
          if (body.role === "assistant" && draft) draft.remove();
          place(body);
        } else if (event === "delta") {
          if (!draft) {
            draft = el(
              "li",
              { class: "message assistant streaming" },
              el("div", { class: "message-head" }, el("span", { class: "who" }, "Assistant")),
              el("div", { class: "content" }, ""),
            );
            $("messages").append(draft);
          }
          const piece = typeof body === "string" ? body : (body.content ?? body.delta ?? "");
          draft.querySelector(".content").append(piece);
        } else if (event === "done") {
          done = true;
          if (body && body.user_message) place(body.user_message);
          if (body && body.reply) place(body.reply);
          pending.remove();
          if (draft) draft.remove();
        } else if (event === "error") {
          const error = body.error || {};
          throw new api.ApiError(0, error.code || "error", error.message || "The reply failed.");
        }
        scrollToBottom();
      });
      // A stream cut before `done` (the connection dropped) is a failure too.
      if (!done) throw new api.ApiError(0, "disconnected", "The reply was cut off; send again.");
    } else {
      const exchange = await response.json();
      pending.remove();
      place(exchange.user_message);
      place(exchange.reply);
      announce(`Assistant: ${exchange.reply.content ?? ""}`);
    }
    state.failed.message = null;
    scrollToBottom();
    bump(open.id);
  } catch (error) {
    if (attempt) state.failed[attempt.where === null ? "start" : "message"] = attempt;
    if (pending) pending.remove();
    if (draft) draft.remove();
    if ($("input").value === "") $("input").value = text;
    throw error;
  }
}

async function onSubmit(event) {
  event.preventDefault();
  const input = $("input");
  const text = input.value;
  if (text.trim() === "" || state.sending) return;
  state.sending = true;
  $("send").disabled = true;
  input.value = "";
  clearError();
  try {
    await sendMessage(text);
  } catch (error) {
    showError(error);
  } finally {
    state.sending = false;
    $("send").disabled = false;
    input.focus();
  }
}

// -- search --------------------------------------------------------------------------------

// The API escapes the snippet (&amp; &lt; &gt;) and wraps matches in <mark>:
// it is rebuilt here as text nodes and <mark> elements, never parsed as HTML,
// so even a bug on the server could not inject markup.
const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function unescapeHtml(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name[0] !== "#") return ENTITIES[name.toLowerCase()] ?? whole;
    const hex = name[1] === "x" || name[1] === "X";
    const code = Number.parseInt(name.slice(hex ? 2 : 1), hex ? 16 : 10);
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
  });
}

function snippetNodes(snippet) {
  const nodes = [];
  let marked = false;
  for (const piece of snippet.split(/(<\/?mark>)/)) {
    if (piece === "<mark>") marked = true;
    else if (piece === "</mark>") marked = false;
    else if (piece !== "") {
      const text = unescapeHtml(piece);
      nodes.push(marked ? el("mark", {}, text) : document.createTextNode(text));
    }
  }
  return nodes;
}

let searchTimer = null;
let searchGeneration = 0;

async function runSearch() {
  const q = $("search").value.trim();
  const generation = ++searchGeneration;
  if (q === "") {
    closeSearch();
    return;
  }
  try {
    const results = await api.json("GET", `/api/search?${new URLSearchParams({ q, limit: "30" })}`);
    if (generation !== searchGeneration) return;
    const hits = results.data.map((hit) => {
      const known = state.conversations.get(hit.conversation_id);
      const where = known ? conversationTitle(known.conversation) : "a conversation";
      return el(
        "li",
        {},
        el(
          "a",
          {
            href: `#c=${hit.conversation_id}&seq=${hit.seq}`,
            class: "hit",
            onclick: followLink,
          },
          el("span", { class: "snippet" }, ...snippetNodes(hit.snippet)),
          el("span", { class: "conversation-meta" }, `${roleLabel(hit)} in ${where} · ${when(hit.created_at)}`),
        ),
      );
    });
    $("hits").replaceChildren(...hits);
    $("search-status").textContent =
      hits.length === 0 ? `No messages match “${q}”.` : `${hits.length} messages match “${q}”.`;
    $("search-results").hidden = false;
    $("conversations").hidden = true;
    $("conversations-more").hidden = true;
    $("archived-toggle").hidden = true;
  } catch (error) {
    showError(error);
  }
}

function closeSearch() {
  $("search-results").hidden = true;
  $("conversations").hidden = false;
  $("conversations-more").hidden = false;
  $("archived-toggle").hidden = false;
}

// -- navigation ------------------------------------------------------------------------------

// The open conversation (and message) live in the fragment, #c=<id>&seq=<n>,
// so a reload or the back button shows the same place.
function navigate(id, seq = null, { wait = false } = {}) {
  const hash = id === null ? "" : `#c=${id}${seq === null ? "" : `&seq=${seq}`}`;
  history.pushState(null, "", location.pathname + location.search + hash);
  document.body.classList.remove("nav-open");
  $("menu").setAttribute("aria-expanded", "false");
  if (!wait) route();
}

function followLink(event) {
  if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  const params = new URLSearchParams(new URL(event.currentTarget.href).hash.slice(1));
  const seq = params.get("seq");
  navigate(params.get("c"), seq === null ? null : Number(seq));
}

function route() {
  const params = new URLSearchParams(location.hash.slice(1));
  const id = params.get("c");
  const seq = Number.parseInt(params.get("seq") ?? "", 10);
  if (id) openConversation(id, Number.isNaN(seq) ? null : seq);
  else closeConversation();
}

// -- start -------------------------------------------------------------------------------------

function start() {
  api.adoptTokenFromFragment();
  $("signout").hidden = api.token() === null;
  $("signout").addEventListener("click", () => {
    api.signOut();
    location.replace("/");
  });
  $("error-close").addEventListener("click", clearError);
  $("menu").addEventListener("click", () => {
    const opened = document.body.classList.toggle("nav-open");
    $("menu").setAttribute("aria-expanded", String(opened));
  });
  $("new-chat").addEventListener("click", () => {
    navigate(null);
    $("input").focus();
  });
  $("composer").addEventListener("submit", onSubmit);
  $("input").addEventListener("keydown", (event) => {
    // Enter sends; Shift+Enter is a new line; Enter while an input method is
    // composing (Japanese, Chinese...) confirms the composition instead.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("history").addEventListener("scroll", onScroll, { passive: true });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  });
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, 300);
  });
  $("archived-toggle").addEventListener("click", toggleArchived);
  $("search-close").addEventListener("click", () => {
    $("search").value = "";
    closeSearch();
  });
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadConversations();
  }).observe($("conversations-more"));
  window.addEventListener("popstate", route);
  loadConversations().then(() => {
    if (!$("signin").hidden) return;
    route();
  });
}

start();
