// The agent console: the queue with live waiting times, the conversations
// this agent holds, replies, release and resolve, the desk (every agent's
// presence and load) and this agent's ratings, over /agent/ws through the
// client SDK the server serves (its AgentClient follows each held
// conversation with `watch` from the last seq it has, so a reconnect misses
// nothing and shows nothing twice).

import { AgentClient, ApiError, Auth, ClosedError, StorageTokenStore } from "/sdk/chatbot-server-client.js";
import { Transcript, TypingSender, clockTime, duration, el, quotaText } from "./common.js";

const store = new StorageTokenStore("chatbot.agent");
const $ = (id) => document.getElementById(id);

const ui = {
  who: $("who"), status: $("status"), username: $("username"), logout: $("logout"),
  presence: $("presence"), assignMode: $("assign-mode"),
  auth: $("auth"), form: $("auth-form"), name: $("auth-username"), password: $("auth-password"),
  authError: $("auth-error"), authSubmit: $("auth-submit"),
  denied: $("denied"), deniedText: $("denied-text"), deniedLogout: $("denied-logout"),
  console: $("console"), queue: $("queue"), queueCount: $("queue-count"), queueEmpty: $("queue-empty"),
  mine: $("mine"), mineCount: $("mine-count"), mineEmpty: $("mine-empty"),
  placeholder: $("placeholder"), conversation: $("conversation"), convUser: $("conv-user"),
  convMeta: $("conv-meta"), release: $("release"), resolve: $("resolve"),
  transcripts: $("transcripts"), reply: $("reply"), replyInput: $("reply-input"), replySend: $("reply-send"),
  toast: $("toast"), toastText: $("toast-text"), toastClose: $("toast-close"), typing: $("typing"),
  summary: $("summary"), summaryText: $("summary-text"), ratings: $("ratings"),
  replies: $("replies"), repliesCount: $("replies-count"), replyNew: $("reply-new"),
  replyNewShortcut: $("reply-new-shortcut"), replyNewContent: $("reply-new-content"),
  replyHint: $("reply-hint"),
  ratingsCount: $("ratings-count"),
  agents: $("agents"), agentsCount: $("agents-count"), queueNote: $("queue-note"),
};

/** The SDK's client while logged in. */
let agent = null;
let me = null;
let queue = [];
/** Held conversations by session id. */
const convs = new Map();
/** Queue items being claimed, by session id: what the new conversation shows. */
const claiming = new Map();
let selected = null;
/** How conversations reach this agent (`connected`): `manual` or `auto`,
 * the most they may hold, and their status. */
let assign = "manual";
let maxConversations = Infinity;
let myStatus = "available";
/** The conversation on screen survives a reload of this tab (not shared by
 * other tabs, each of which may show another one). */
const SELECTED_KEY = "chatbot.agent.selected";
/** The conversation to show again once a (re)connect follows it. */
let restoring = null;
/** Server clock minus this browser's, from the messages' timestamps. */
let skew = 0;
let toastTimer = null;

function show(section) {
  for (const s of [ui.auth, ui.denied, ui.console]) s.hidden = s !== section;
  ui.who.hidden = section !== ui.console;
}

function showAuth(message) {
  stopSocket();
  show(ui.auth);
  ui.authError.hidden = !message;
  ui.authError.textContent = message || "";
  ui.name.focus();
}

function stopSocket() {
  if (agent) agent.close();
  agent = null;
}

function explain(e) {
  if (!(e instanceof ApiError)) return String(e);
  return e.code === "network_error" ? e.message : `${e.message} (${e.code})`;
}

async function submitAuth(ev) {
  ev.preventDefault();
  ui.authSubmit.disabled = true;
  ui.authError.hidden = true;
  const auth = new Auth({ tokens: store });
  try {
    await auth.login(ui.name.value.trim(), ui.password.value);
    auth.close();
    ui.password.value = "";
    await start();
  } catch (e) {
    ui.authError.textContent = explain(e);
    ui.authError.hidden = false;
  } finally {
    auth.close();
    ui.authSubmit.disabled = false;
  }
}

/** Checks the role over REST first: a refused socket upgrade tells a browser
 * nothing, while `GET /api/agent/queue` says `agent_only`. */
async function start() {
  const saved = store.get();
  if (!saved) return showAuth();
  stopSocket();
  agent = new AgentClient({ tokens: store });
  try {
    queue = (await agent.rest.queue()).items;
  } catch (e) {
    stopSocket();
    if (e instanceof ApiError && e.code === "agent_only") {
      ui.deniedText.textContent = `${saved.user.username} cannot use the agent console: ${e.message} (${e.code}).`;
      return show(ui.denied);
    }
    if (e instanceof ApiError && e.status === 401) {
      store.set(null);
      return showAuth(`Please log in again (${e.code}).`);
    }
    return showAuth(explain(e));
  }
  show(ui.console);
  ui.username.textContent = saved.user.username;
  loadReplies();
  renderQueue();
  renderMine();
  agent.on("state", ({ state }) => {
    ui.status.textContent = state === "open" ? "Online" : "Reconnecting…";
    ui.status.className = `pill ${state === "open" ? "online" : "offline"}`;
    refreshControls();
  });
  agent.on("auth-lost", (e) => {
    store.set(null);
    showAuth(`Your session ended: ${e.message}`);
  });
  agent.on("message", (m) => {
    if (m.timestamp) skew = Date.parse(m.timestamp) - Date.now();
  });
  agent.on("connected", onConnected);
  agent.on("queue", (items) => {
    queue = items;
    renderQueue();
  });
  agent.on("assigned", follow);
  agent.on("removed", ({ sessionId, reason, mode }) => {
    const why = {
      removed: mode === "bot" ? "is back with the assistant" : "went back to the queue",
      "not-held": "is no longer yours",
      "not-assigned": "is no longer assigned to you",
    }[reason];
    drop(sessionId, why);
  });
  agent.on("ack", onAck);
  agent.on("error", onError);
  agent.on("history-lost", (m) => convs.get(m.sessionId)?.transcript.lost());
  agent.on("earlier", ({ sessionId, messages }) => convs.get(sessionId)?.transcript.prependEarlier(messages));
  agent.on("status", (status) => {
    showPresence(status);
    renderQueue();
  });
  agent.on("agents", renderAgents);
  agent.on("typing", onTyping);
  // Live word of a conversation this agent resolved (a replayed one has a
  // seq and shows in its transcript).
  agent.on("csat", showCsat);
  agent.on("summary", (m) => {
    // It may come before the claim's `ack`: kept by session, not by conversation.
    summaries.set(m.sessionId, m.summary);
    showSummary();
  });
  agent.on("event", ({ sessionId, event }) => onEvent(sessionId, event));
  agent.connect().catch(() => {
    // auth-lost already showed the login form.
  });
}

/** Runs an agent command; a refusal arrives as an `error` (a toast). */
function command(run) {
  if (!agent || !agent.connected) {
    toast("Not connected; try again in a moment.");
    return false;
  }
  run(agent).catch((e) => {
    if (e instanceof ClosedError) toast("Not connected; try again in a moment.");
  });
  return true;
}

/** The customer of a held conversation started or stopped typing (the
 * server says `false` after 5 s without news; the timer covers a socket
 * that went quiet). */
function onTyping(m) {
  const conv = convs.get(m.sessionId);
  if (!conv) return;
  conv.typing = m.state;
  clearTimeout(conv.typingTimer);
  if (m.state) conv.typingTimer = setTimeout(() => { conv.typing = false; showTyping(); }, 7000);
  showTyping();
}

/** The AI's summary of a conversation this agent took: live when it comes,
 * and kept by the server with the conversation (`connected` and
 * `conversation-assigned` carry it after a reload). */
const summaries = new Map();

function showSummary() {
  const text = selected ? summaries.get(selected) : "";
  ui.summaryText.textContent = text || "";
  ui.summary.hidden = !text;
}

/** Every agent seen lately: available, away or offline, and their load. */
function renderAgents(agents) {
  ui.agentsCount.textContent = String(agents.filter((a) => a.status !== "offline").length);
  ui.agentsCount.classList.toggle("zero", !agents.some((a) => a.status !== "offline"));
  ui.agents.replaceChildren(...agents.map((a) => {
    const li = el("li", `item agent-item ${a.status}`);
    li.dataset.agentId = a.id;
    li.dataset.status = a.status;
    const you = me && me.id === a.id ? " (you)" : "";
    li.append(el("span", "dot"), el("span", "name", `${a.username}${you}`));
    const load = a.conversations === 1 ? "1 conversation" : `${a.conversations} conversations`;
    li.append(el("span", "muted small", `${a.status} · ${load}`));
    return li;
  }));
}

/** The agent's canned replies, by shortcut (`GET /api/agent/replies`). */
let replies = [];

async function loadReplies() {
  try {
    replies = (await agent.rest.replies()).replies;
  } catch (e) {
    toast(explain(e));
  }
  renderReplies();
}

function renderReplies() {
  ui.repliesCount.textContent = String(replies.length);
  ui.repliesCount.classList.toggle("zero", replies.length === 0);
  ui.replies.replaceChildren(...replies.map((r) => {
    const li = el("li", "item");
    li.dataset.shortcut = r.shortcut;
    li.append(el("span", "name", `/${r.shortcut}`));
    const del = el("button", "link small", "Delete");
    del.type = "button";
    del.addEventListener("click", async () => {
      try {
        await agent.rest.deleteReply(r.shortcut);
      } catch (e) {
        toast(explain(e));
      }
      loadReplies();
    });
    li.append(del, el("span", "preview", r.content));
    return li;
  }));
}

async function saveReply(ev) {
  ev.preventDefault();
  const body = { shortcut: ui.replyNewShortcut.value.trim(), content: ui.replyNewContent.value };
  try {
    await agent.rest.saveReply(body.shortcut, body.content);
    ui.replyNewShortcut.value = "";
    ui.replyNewContent.value = "";
  } catch (e) {
    toast(e.message || String(e), e.code);
  }
  loadReplies();
}

/** `/shortcut` then a space or Tab puts that reply in the box; while the
 * box holds `/…`, the matching shortcuts are shown above it. */
function cannedReply(ev) {
  const text = ui.replyInput.value;
  const typed = /^\/([a-z0-9_-]*)(\s?)$/.exec(text);
  const matches = typed ? replies.filter((r) => r.shortcut.startsWith(typed[1])) : [];
  ui.replyHint.hidden = !typed || matches.length === 0;
  ui.replyHint.textContent = matches.map((r) => `/${r.shortcut}`).join("  ");
  if (!typed) return false;
  const done = typed[2] !== "" || (ev && ev.key === "Tab");
  const exact = replies.find((r) => r.shortcut === typed[1]);
  if (!done || !exact) return false;
  ui.replyInput.value = exact.content;
  ui.replyHint.hidden = true;
  return true;
}

/** Who the customers of conversations this tab showed were, for the
 * ratings that come after they left the list. */
const customerNames = new Map();
let ratings = [];
const stars = (rating) => `${"★".repeat(rating)}${"☆".repeat(5 - rating)}`;

/** The latest ratings the server keeps for this agent (`connected`). */
function showRatings(kept) {
  ratings = kept.map((r) => ({ ...r, name: r.customer || "A customer", stars: stars(r.rating) }));
  renderRatings();
}

function showCsat(m) {
  const name = customerNames.get(m.sessionId) || "A customer";
  // A second answer replaces the first.
  ratings = ratings.filter((r) => r.sessionId !== m.sessionId);
  ratings.unshift({ ...m, name, stars: stars(m.rating) });
  ratings.splice(20);
  renderRatings();
  toast(`${name} rated the conversation ${stars(m.rating)}${m.comment ? `: “${m.comment}”` : ""}`);
}

function renderRatings() {
  ui.ratingsCount.textContent = String(ratings.length);
  ui.ratingsCount.classList.toggle("zero", ratings.length === 0);
  ui.ratings.replaceChildren(...ratings.map((r) => {
    const li = el("li", "item rating-item");
    li.dataset.sessionId = r.sessionId;
    li.append(el("span", "name", r.name), el("span", "stars", r.stars));
    li.append(el("span", "preview", r.comment || "No comment"));
    return li;
  }));
}

function showTyping() {
  const conv = selected && convs.get(selected);
  const on = Boolean(conv && conv.typing);
  ui.typing.textContent = on ? `${conv.user.username} is typing` : "";
  ui.typing.hidden = !on;
}

/** (Re)connected: the SDK follows what the server says this agent holds
 * (each from the last seq already on screen) and drops what it no longer
 * holds; the conversation this tab showed is shown again. */
function onConnected(m) {
  me = m.agent;
  assign = m.assign;
  maxConversations = m.maxConversations;
  showPresence(m.status);
  showRatings(m.ratings || []);
  ui.assignMode.hidden = m.assign !== "auto";
  ui.assignMode.textContent = `Conversations are assigned to you automatically while you are available (at most ${m.maxConversations} at once).`;
  restoring = sessionStorage.getItem(SELECTED_KEY);
  for (const conv of convs.values()) conv.transcript.names.selfId = me && me.id;
  if (restoring && convs.has(restoring) && selected !== restoring) select(restoring);
}

/** The agent's presence as the server keeps it: `available` or `away`. */
function showPresence(status) {
  myStatus = status === "away" ? "away" : "available";
  ui.presence.value = myStatus;
  ui.presence.classList.toggle("away", status === "away");
}

/** A conversation this agent now holds (the SDK follows its events). */
function follow(held) {
  const c = held.info || {};
  const sessionId = held.sessionId;
  let conv = convs.get(sessionId);
  if (!conv) {
    const list = el("ol", "messages");
    list.hidden = true;
    ui.transcripts.append(list);
    conv = {
      sessionId,
      user: c.user || { username: "Customer" },
      since: c.assignedAt || new Date(Date.now() + skew).toISOString(),
      preview: c.lastMessage || "",
      unread: false,
      list,
      transcript: new Transcript(list, "agent", { customer: (c.user || {}).username, selfId: me && me.id }),
      typing: false,
      typingTimer: null,
      typist: new TypingSender((state) => Boolean(agent && agent.typing(sessionId, state))),
    };
    convs.set(sessionId, conv);
  }
  if (c.user && c.user.username) customerNames.set(sessionId, c.user.username);
  if (c.summary) summaries.set(sessionId, c.summary);
  if (!selected || sessionId === restoring) select(sessionId);
  else if (selected === sessionId) showSummary();
  renderMine();
  renderQueue();
}

function drop(sessionId, why) {
  const conv = convs.get(sessionId);
  if (!conv) return;
  convs.delete(sessionId);
  summaries.delete(sessionId);
  clearTimeout(conv.typingTimer);
  clearTimeout(conv.typist.timer);
  conv.list.remove();
  if (why) toast(`The conversation with ${conv.user.username} ${why}.`);
  if (selected === sessionId) {
    selected = null;
    const next = convs.keys().next();
    if (!next.done) select(next.value);
    else showConversation(null);
  }
  renderMine();
}

function onAck(m) {
  if (m.action === "claim") {
    claiming.delete(m.sessionId);
    if (convs.has(m.sessionId)) select(m.sessionId);
    ui.replyInput.focus();
  }
}

function onError(m) {
  if (m.sessionId && claiming.delete(m.sessionId)) renderQueue();
  // A failed answer of a held conversation is drawn in its transcript.
  if (typeof m.seq !== "number") toast(m.message, m.code);
}

/** One event of a held conversation, exactly once and in seq order. */
function onEvent(sessionId, e) {
  const conv = convs.get(sessionId);
  if (!conv) return;
  conv.transcript.render(e);
  if (e.type === "user-message") conv.preview = e.content;
  else if (e.type === "agent-message") conv.preview = `You: ${e.content}`;
  if (e.type === "user-message" && sessionId !== selected) conv.unread = true;
  if (e.type === "user-message") conv.typing = false;
  showTyping();
  renderMine();
}

function select(sessionId) {
  const before = selected && convs.get(selected);
  if (before && selected !== sessionId) before.typist.stop();
  selected = sessionId;
  sessionStorage.setItem(SELECTED_KEY, sessionId);
  const conv = convs.get(sessionId);
  showConversation(conv);
  renderMine();
}

function showConversation(conv) {
  ui.placeholder.hidden = Boolean(conv);
  ui.conversation.hidden = !conv;
  for (const c of convs.values()) c.list.hidden = c !== conv;
  if (!conv) return;
  conv.unread = false;
  ui.convUser.textContent = conv.user.username;
  ui.convMeta.textContent = `Yours since ${clockTime(conv.since)} · ${conv.sessionId}`;
  conv.list.scrollTop = conv.list.scrollHeight;
  refreshControls();
  showTyping();
  showSummary();
  showBudget(conv);
}

/** The customer's token budget beside the conversation's title, read when
 * the conversation is shown (an agent may read any user's usage). */
async function showBudget(conv) {
  const id = conv.user && conv.user.id;
  if (!id) return;
  try {
    const q = await agent.rest.userUsage(id);
    if (selected === conv.sessionId) {
      ui.convMeta.textContent = `Yours since ${clockTime(conv.since)} · ${conv.sessionId} · ${quotaText(q)}`;
    }
  } catch {
    // The budget line is a nicety; the conversation goes on without it.
  }
}

function refreshControls() {
  const open = Boolean(agent && agent.connected);
  for (const b of [ui.release, ui.resolve, ui.replySend]) b.disabled = !open || !selected;
}

/** Why this agent may not claim now, if they may not: at capacity, or
 * conversations are assigned automatically while they are available. */
function claimBlocked() {
  if (convs.size + claiming.size >= maxConversations) {
    return `You hold ${convs.size} of ${maxConversations} conversations: resolve or release one to claim another.`;
  }
  if (assign === "auto" && myStatus === "available") {
    return "Conversations are assigned automatically while you are available; set yourself Away to pick one.";
  }
  return null;
}

function renderQueue() {
  ui.queueCount.textContent = String(queue.length);
  ui.queueCount.classList.toggle("zero", queue.length === 0);
  ui.queueEmpty.hidden = queue.length > 0;
  const blocked = claimBlocked();
  ui.queueNote.textContent = blocked || "";
  ui.queueNote.hidden = !blocked || queue.length === 0;
  ui.queue.replaceChildren(...queue.map((item) => {
    const li = el("li", "item");
    li.dataset.sessionId = item.sessionId;
    li.append(el("span", "name", `${item.position ? `#${item.position} ` : ""}${item.user.username}`));
    const claim = el("button", "primary small", claiming.has(item.sessionId) ? "Claiming…" : "Claim");
    claim.type = "button";
    claim.disabled = claiming.has(item.sessionId) || Boolean(blocked);
    if (blocked) claim.title = blocked;
    claim.addEventListener("click", () => {
      if (command((a) => a.claim(item.sessionId))) {
        claiming.set(item.sessionId, item);
        renderQueue();
      }
    });
    li.append(claim);
    const wait = el("span", "wait");
    wait.dataset.since = item.waitingSince;
    li.append(wait);
    li.append(el("span", "preview", item.lastMessage || "Asked for a human"));
    return li;
  }));
  tick();
}

function renderMine() {
  const all = [...convs.values()];
  ui.mineCount.textContent = String(all.length);
  ui.mineCount.classList.toggle("zero", all.length === 0);
  ui.mineEmpty.hidden = all.length > 0;
  ui.mine.replaceChildren(...all.map((conv) => {
    const li = el("li", `item conv${conv.sessionId === selected ? " selected" : ""}`);
    li.dataset.sessionId = conv.sessionId;
    li.append(el("span", "name", conv.user.username));
    li.append(conv.unread ? el("span", "dot") : el("span", "muted small", clockTime(conv.since)));
    li.append(el("span", "preview", conv.preview || "—"));
    li.addEventListener("click", () => select(conv.sessionId));
    return li;
  }));
}

/** Waiting times, once a second, on the server's clock. */
function tick() {
  const now = Date.now() + skew;
  for (const span of ui.queue.querySelectorAll(".wait")) {
    span.textContent = `waiting ${duration(now - Date.parse(span.dataset.since))}`;
  }
}

function toast(text, code) {
  ui.toastText.replaceChildren(document.createTextNode(text));
  if (code) ui.toastText.append(" ", el("code", "", code));
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { ui.toast.hidden = true; }, 8000);
}

function sendReply(ev) {
  ev.preventDefault();
  const content = ui.replyInput.value.trim();
  if (!content || !selected) return;
  const sessionId = selected;
  if (command((a) => a.reply(sessionId, content))) {
    ui.replyInput.value = "";
    convs.get(selected)?.typist.stop();
  }
}

ui.form.addEventListener("submit", submitAuth);
ui.reply.addEventListener("submit", sendReply);
ui.replyInput.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) sendReply(ev);
});
ui.replyNew.addEventListener("submit", saveReply);
ui.replyInput.addEventListener("keydown", (ev) => {
  if (ev.key === "Tab" && cannedReply(ev)) ev.preventDefault();
});
ui.replyInput.addEventListener("input", () => {
  cannedReply(null);
  const conv = selected && convs.get(selected);
  if (conv && ui.replyInput.value.trim()) conv.typist.typed();
});
ui.release.addEventListener("click", () => {
  const sessionId = selected;
  if (sessionId) command((a) => a.release(sessionId));
});
ui.resolve.addEventListener("click", () => {
  const sessionId = selected;
  if (sessionId) command((a) => a.resolve(sessionId));
});
ui.toastClose.addEventListener("click", () => { ui.toast.hidden = true; });
ui.presence.addEventListener("change", () => {
  // The server's `status` answer sets the selector; a refusal puts it back.
  if (!agent || !agent.setStatus(ui.presence.value)) {
    toast("Not connected; try again in a moment.");
    showPresence(ui.presence.value === "away" ? "available" : "away");
  }
});
const signOut = async () => {
  const leaving = agent;
  agent = null;
  if (leaving) await leaving.logout();
  else store.set(null);
  for (const sid of [...convs.keys()]) drop(sid);
  showAuth();
};
ui.logout.addEventListener("click", signOut);
ui.deniedLogout.addEventListener("click", signOut);
window.addEventListener("storage", (ev) => {
  if (ev.key === store.key && !ev.newValue && agent) showAuth("You logged out in another tab.");
});
setInterval(tick, 1000);

if (store.get()) start();
else showAuth();
