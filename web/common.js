// What the customer chat and the agent console share: the REST calls with
// their tokens, a self-healing socket, and a transcript that renders the
// conversation's events exactly once and in seq order.

/** Tokens of one page kind (customer or agent), in localStorage so every tab
 * of that kind shares them and a reload keeps the user logged in. */
export class AuthStore {
  constructor(key) {
    this.key = key;
  }
  get() {
    try {
      return JSON.parse(localStorage.getItem(this.key)) || null;
    } catch {
      return null;
    }
  }
  save(body) {
    const { token, refreshToken, user } = body;
    localStorage.setItem(this.key, JSON.stringify({ token, refreshToken, user }));
  }
  clear() {
    localStorage.removeItem(this.key);
  }
}

/** An API failure, with the server's stable code and its message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "network_error";
  }
}

async function request(path, { method = "GET", body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network_error", "The server cannot be reached. Check your connection.");
  }
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, json && json.error, json && json.message);
  }
  return json;
}

export function login(username, password) {
  return request("/api/auth/login", { method: "POST", body: { username, password } });
}

export function register(username, email, password) {
  return request("/api/auth/register", { method: "POST", body: { username, email, password } });
}

/** Whether a refused call may succeed with a refreshed access token. */
function tokenLapsed(e) {
  return e instanceof ApiError && e.status === 401 &&
    ["token_expired", "invalid_token", "missing_token"].includes(e.code);
}

/** Trades the refresh token for a new pair; false when the user must log in. */
export async function refresh(store) {
  const saved = store.get();
  if (!saved || !saved.refreshToken) return false;
  try {
    store.save(await request("/api/auth/refresh", {
      method: "POST",
      body: { refreshToken: saved.refreshToken },
    }));
    return true;
  } catch (e) {
    // Another tab may have rotated it a moment ago and saved the successor.
    const now = store.get();
    return Boolean(now && now.refreshToken !== saved.refreshToken);
  }
}

/** An authenticated call; refreshes the token once when it has lapsed. */
export async function api(store, path, options = {}) {
  const call = () => request(path, { ...options, token: (store.get() || {}).token });
  try {
    return await call();
  } catch (e) {
    if (tokenLapsed(e) && (await refresh(store))) return call();
    throw e;
  }
}

export async function logout(store) {
  const saved = store.get();
  store.clear();
  if (!saved) return;
  try {
    await request("/api/auth/logout", {
      method: "POST",
      token: saved.token,
      body: { refreshToken: saved.refreshToken },
    });
  } catch {
    // The tokens are forgotten here either way.
  }
}

/**
 * A WebSocket that reconnects with backoff. `url(ticket)` builds the address
 * for each attempt (so it can carry the latest sessionId and lastSeq); every
 * attempt buys a fresh single-use ticket, so the token never sits in a URL.
 */
export class Socket {
  constructor(store, { url, onMessage, onState, onAuthLost }) {
    this.store = store;
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.onAuthLost = onAuthLost || (() => {});
    this.ws = null;
    this.delay = 500;
    this.stopped = false;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  get open() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  async connect() {
    if (this.stopped) return;
    this.onState("connecting");
    let ticket;
    try {
      ({ ticket } = await api(this.store, "/api/auth/ws-ticket", { method: "POST" }));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return this.onAuthLost(e);
      return this.retry();
    }
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${this.url(ticket)}`, ["chatbot.v1"]);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      this.onState("open");
    };
    ws.onmessage = (ev) => {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.onMessage(m);
    };
    ws.onclose = (ev) => this.closed(ws, ev);
  }

  async closed(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (this.stopped) return;
    this.onState("closed", ev.code);
    // 4001: the token expired or was revoked; a refresh decides which.
    if (ev.code === 4001 && !(await refresh(this.store))) {
      return this.onAuthLost(new ApiError(401, ev.reason || "token_expired", "Please log in again."));
    }
    this.retry();
  }

  retry() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 15000);
  }
}

/** `document.createElement` with a class and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function clockTime(iso) {
  const d = iso ? new Date(iso) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "45s", "3m 05s", "1h 02m". */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** "today at 09:00", "tomorrow at 09:00" or "on Mon 14 Dec at 09:00", in
 * this browser's time zone. */
export function openingText(iso) {
  const at = new Date(iso);
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((day(at) - day(new Date())) / 86400000);
  if (days === 0) return `today at ${time}`;
  if (days === 1) return `tomorrow at ${time}`;
  const date = at.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
  return `on ${date} at ${time}`;
}

/**
 * Tells the other side while this user types: `send(true)` on the first
 * keystroke and again every 2 s while typing goes on (the server passes at
 * most one a second), `send(false)` 3 s after the last keystroke or when the
 * message is sent. `send` returns whether it went out.
 */
export class TypingSender {
  constructor(send) {
    this.send = send;
    this.on = false;
    this.last = 0;
    this.timer = null;
  }

  typed() {
    const now = Date.now();
    if ((!this.on || now - this.last > 2000) && this.send(true)) {
      this.on = true;
      this.last = now;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.stop(), 3000);
  }

  stop() {
    clearTimeout(this.timer);
    if (this.on) {
      this.on = false;
      this.send(false);
    }
  }
}

export function newId() {
  if (crypto.randomUUID) return `c-${crypto.randomUUID()}`;
  return `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * Who answers after `m`, given who answered before: `{mode, agent}`, and
 * while queued the customer's `position` in line once the server said it.
 */
export function modeAfter(m, current) {
  switch (m.type) {
    case "agent-left":
      return { mode: "queued", agent: null };
    case "handoff-queued":
      return {
        mode: "queued", agent: null, position: m.position,
        agentsOnline: m.agentsOnline, estimatedWaitSeconds: m.estimatedWaitSeconds,
      };
    case "handoff-waiting":
      return { ...current, mode: "queued", agent: null, position: m.position, agentsOnline: m.agentsOnline };
    case "queue-position":
      return { ...current, mode: "queued", position: m.position, estimatedWaitSeconds: m.estimatedWaitSeconds };
    case "agent-joined":
      return { mode: "assigned", agent: m.agent };
    case "handoff-resolved":
    case "handoff-timeout":
    case "handoff-cancelled":
      return { mode: "bot", agent: null };
    default:
      return current;
  }
}

/** Most events held back while waiting for a missing one. */
const MAX_PENDING = 2000;

/**
 * One conversation on screen. Events are rendered exactly once and in seq
 * order: a duplicate (an overlap between a replay and the live feed) is
 * dropped, and an event that comes before the ones it follows waits for them.
 *
 * `viewer` is "customer" or "agent": it decides which side each message sits
 * on. `names.customer` labels the customer's messages for an agent;
 * `names.selfId` is the agent's own id.
 */
/** Fills in, from the transcript store, what a conversation's event log no
 * longer held (`history-lost`): the messages before `oldestSeq`. Best effort:
 * without them the page still says that earlier messages are gone. */
export async function loadEarlier(store, transcript, sessionId, oldestSeq) {
  try {
    const page = await api(store, `/api/sessions/${encodeURIComponent(sessionId)}/messages?limit=200`);
    transcript.prependEarlier(page.messages.filter((e) => typeof e.seq === "number" && e.seq < oldestSeq));
  } catch (e) {
    console.warn("could not load the earlier messages", e);
  }
}

/** A user's token budget as a short line: "Tokens: 1,834 of 50,000 · resets
 * 00:00", or only the count without a budget. */
export function quotaText(q) {
  if (!q) return "";
  const n = (v) => Number(v).toLocaleString();
  if (q.limit === null || q.limit === undefined) return `Tokens used: ${n(q.used)}`;
  const left = Math.max(0, q.limit - q.used);
  const resets = q.resetsAt ? ` · resets ${clockTime(q.resetsAt)}` : "";
  return `Tokens: ${n(q.used)} of ${n(q.limit)} (${n(left)} left)${resets}`;
}

export class Transcript {
  /**
   * `actions` (the customer's page only) lets the answers' thumbs send a
   * rating: `actions.rate(messageId, rating, comment)`.
   */
  constructor(list, viewer, names = {}, actions = null) {
    this.list = list;
    this.viewer = viewer;
    this.names = names;
    this.actions = actions;
    this.reset(0);
  }

  /** Forget what is shown; the next event expected is `after + 1`. */
  reset(after) {
    this.list.replaceChildren();
    this.lastSeq = after;
    this.pending = new Map();
    this.answers = new Map();
    /** The latest answer to each user message, by the user message's id. */
    this.replies = new Map();
    /** The latest answer that ended, which `regenerate` would replace. */
    this.lastAnswer = null;
    this.running = null;
    this.gap = null;
  }

  /** The log no longer holds what came before `oldestSeq`. */
  skipTo(oldestSeq) {
    if (oldestSeq - 1 > this.lastSeq) {
      this.lastSeq = oldestSeq - 1;
      this.gap = this.notice("Earlier messages are no longer available.", "warn");
      this.drain();
    }
  }

  /** Shows transcript entries (`GET /api/sessions/{id}/messages`, oldest
   * first) that the log no longer held, above everything else. */
  prependEarlier(entries) {
    const customer = this.viewer === "customer";
    const nodes = entries.map((e) => {
      if (e.role === "user") {
        return this.bubble("user", customer, customer ? "You" : this.names.customer || "Customer", e.content, e);
      }
      if (e.role === "agent") {
        const mine = !customer && e.agent && e.agent.id === this.names.selfId;
        return this.bubble("agent", mine, `${(e.agent && e.agent.username) || "An agent"} · agent`, e.content, e);
      }
      const li = this.bubble("bot", false, "Assistant", e.content, e);
      if (e.superseded) this.supersede(li);
      if (e.feedback) this.showRating(li, e.feedback);
      this.rateable(li, e.messageId);
      return li;
    });
    if (!nodes.length) return;
    this.list.prepend(...nodes);
    if (this.gap) this.gap.remove();
    this.gap = null;
  }

  /** Takes one event (anything with a `seq`); returns the events rendered. */
  accept(m) {
    if (typeof m.seq !== "number" || m.seq <= this.lastSeq) return [];
    if (m.seq > this.lastSeq + 1) {
      this.pending.set(m.seq, m);
      if (this.pending.size > MAX_PENDING) this.skipTo(Math.min(...this.pending.keys()));
      return [];
    }
    this.render(m);
    this.lastSeq = m.seq;
    return [m, ...this.drain()];
  }

  drain() {
    const done = [];
    for (let next = this.pending.get(this.lastSeq + 1); next; next = this.pending.get(this.lastSeq + 1)) {
      this.pending.delete(next.seq);
      this.render(next);
      this.lastSeq = next.seq;
      done.push(next);
    }
    for (const seq of this.pending.keys()) if (seq <= this.lastSeq) this.pending.delete(seq);
    return done;
  }

  nearBottom() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
  }

  append(node) {
    const stick = this.nearBottom();
    this.list.append(node);
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  message(kind, mine, label, text, m) {
    const li = this.bubble(kind, mine, label, text, m);
    this.append(li);
    return li;
  }

  bubble(kind, mine, label, text, m) {
    const li = el("li", `msg ${kind} ${mine ? "mine" : "theirs"}`);
    if (m.messageId) li.dataset.messageId = m.messageId;
    li.dataset.seq = m.seq;
    if (label) li.append(el("span", "who-line", `${label} · ${clockTime(m.timestamp)}`));
    const bubble = el("div", "bubble");
    const body = el("span", "text", text);
    bubble.append(body);
    li.append(bubble);
    return li;
  }

  /** Marks an answer replaced by a regenerated one. */
  supersede(li) {
    if (li.classList.contains("superseded")) return;
    li.classList.add("superseded");
    li.append(el("span", "tag", "Replaced by a new answer"));
  }

  /** Gives an ended answer its thumbs (on the customer's page). */
  rateable(li, messageId) {
    if (!this.actions || li.querySelector(".rating")) return;
    const row = el("div", "rating");
    const thumb = (rating, glyph, label) => {
      const b = el("button", `thumb ${rating}`, glyph);
      b.type = "button";
      b.title = label;
      b.setAttribute("aria-label", label);
      b.dataset.rating = rating;
      b.addEventListener("click", () => this.actions.rate(messageId, rating));
      return b;
    };
    const note = el("button", "link small comment", "Add a comment");
    note.type = "button";
    note.hidden = true;
    note.addEventListener("click", () => this.commentForm(li, messageId));
    row.append(thumb("up", "👍", "Good answer"), thumb("down", "👎", "Bad answer"), note);
    li.append(row);
  }

  /** An inline form that sends the answer's rating again with a comment. */
  commentForm(li, messageId) {
    if (li.querySelector("form.comment-form")) return;
    const form = el("form", "comment-form");
    const input = el("input");
    input.maxLength = 1000;
    input.placeholder = "What was good or wrong about it?";
    input.setAttribute("aria-label", "Comment on the answer");
    const save = el("button", "secondary small", "Send");
    save.type = "submit";
    form.append(input, save);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.actions.rate(messageId, li.dataset.rating || "up", input.value.trim() || null);
      form.remove();
    });
    li.append(form);
    input.focus();
  }

  /** Shows an answer's latest rating: the pressed thumb, or (for an agent) a tag. */
  showRating(li, feedback) {
    li.dataset.rating = feedback.rating;
    for (const b of li.querySelectorAll(".thumb")) {
      b.classList.toggle("pressed", b.dataset.rating === feedback.rating);
    }
    const note = li.querySelector(".comment");
    if (note) note.hidden = false;
    let tag = li.querySelector(".tag.feedback");
    if (!tag) {
      tag = el("span", "tag feedback");
      li.append(tag);
    }
    const glyph = feedback.rating === "up" ? "👍" : "👎";
    const who = this.viewer === "customer" ? "You rated it" : "Rated";
    tag.textContent = `${who} ${glyph}${feedback.comment ? `: “${feedback.comment}”` : ""}`;
  }

  /** "How did it go?" with five stars and a comment, after a resolve. */
  csatPrompt(m) {
    const li = el("li", "notice csat");
    li.dataset.type = m.type;
    const name = (m.agent && m.agent.username) || "the agent";
    li.append(el("span", "", `How was your conversation with ${name}? `));
    const comment = el("input", "csat-comment");
    comment.maxLength = 1000;
    comment.placeholder = "Anything to add? (optional)";
    comment.setAttribute("aria-label", "Comment on the conversation");
    for (let rating = 1; rating <= 5; rating += 1) {
      const b = el("button", "star", "★");
      b.type = "button";
      b.dataset.rating = String(rating);
      b.title = `${rating} of 5`;
      b.setAttribute("aria-label", `${rating} of 5`);
      b.addEventListener("click", () => this.actions.csat(rating, comment.value.trim() || null));
      li.append(b);
    }
    li.append(comment, el("span", "csat-said", ""));
    this.csatBox = li;
    this.append(li);
  }

  notice(text, tone = "", m = {}) {
    const li = el("li", `notice ${tone}`.trim(), text);
    if (m.type) li.dataset.type = m.type;
    this.append(li);
    return li;
  }

  render(m) {
    this.show(m);
    this.previous = m.type;
  }

  /** An answer's part beside its text: "Thinking…" while the model
   * reasons (its reasoning, when the server relays it, folded away), and a
   * line per tool call. */
  answerPart(li, m) {
    if (!li) return;
    const stick = this.nearBottom();
    if (m.type === "stream-status" && m.status === "thinking" && !li.querySelector(".text").textContent) {
      if (!li.querySelector(".thinking")) li.querySelector(".bubble").prepend(el("span", "thinking", "Thinking…"));
    } else if (m.type === "stream-reasoning") {
      let box = li.querySelector("details.reasoning");
      if (!box) {
        box = el("details", "reasoning");
        box.append(el("summary", "", "Reasoning"), el("span", "reasoning-text", ""));
        li.querySelector(".bubble").prepend(box);
      }
      box.querySelector(".reasoning-text").textContent += m.token;
    } else if (m.type === "tool-activity") {
      let tools = li.querySelector(".tools");
      if (!tools) {
        tools = el("ul", "tools");
        li.querySelector(".bubble").before(tools);
      }
      const id = CSS.escape(m.toolCallId);
      let line = tools.querySelector(`[data-call="${id}"]`);
      if (!line) {
        line = el("li", "tool");
        line.dataset.call = m.toolCallId;
        tools.append(line);
      }
      line.dataset.state = m.state;
      const done = m.state === "finished";
      line.textContent = `${done ? "✓" : "⚙"} ${m.name}${done ? "" : " …"}`;
      if (m.arguments) line.title = m.arguments;
    }
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  /** What the answer cost, under it: "31 tokens (estimated)". */
  answerEnded(li, m) {
    if (!li) return;
    li.querySelector(".thinking")?.remove();
    const u = m.usage;
    if (!u) return;
    const reasoning = u.reasoningTokens ? `, ${u.reasoningTokens} reasoning` : "";
    const line = el("span", "usage", `${u.totalTokens} tokens${reasoning}${u.estimated ? " (estimated)" : ""}`);
    line.title = `prompt ${u.promptTokens} · completion ${u.completionTokens}`;
    li.append(line);
  }

  show(m) {
    const agentName = (a) => (a && a.username) || "An agent";
    const customer = this.viewer === "customer";
    switch (m.type) {
      case "user-message":
        this.message("user", customer, customer ? "You" : this.names.customer || "Customer", m.content, m);
        break;
      case "stream-start": {
        // A regenerated answer replies to the same message as the one it replaces.
        const earlier = this.replies.get(m.replyTo);
        if (earlier) this.supersede(earlier);
        const li = this.message("bot", false, "Assistant", "", m);
        li.classList.add("streaming");
        this.answers.set(m.messageId, li);
        this.replies.set(m.replyTo, li);
        this.running = m.messageId;
        break;
      }
      case "stream-token": {
        const li = this.answers.get(m.messageId);
        if (li) {
          li.querySelector(".thinking")?.remove();
          const stick = this.nearBottom();
          li.querySelector(".text").textContent += m.token;
          if (stick) this.list.scrollTop = this.list.scrollHeight;
        }
        break;
      }
      case "error": {
        const li = this.answers.get(m.messageId);
        const why = `${m.message}${m.retryable ? " You can send your message again." : ""}`;
        if (li) li.append(el("span", "tag bad", why));
        else this.notice(why, "warn", m);
        break;
      }
      case "stream-end": {
        const li = this.answers.get(m.messageId);
        if (li) {
          li.classList.remove("streaming");
          li.dataset.status = m.status;
          if (m.status === "cancelled") li.append(el("span", "tag", "Stopped"));
          if (!li.querySelector(".text").textContent) li.querySelector(".text").textContent = "…";
          this.rateable(li, m.messageId);
          this.lastAnswer = m.messageId;
        }
        this.answerEnded(li, m);
        if (this.running === m.messageId) this.running = null;
        break;
      }
      case "feedback": {
        const li = this.answers.get(m.messageId) || this.list.querySelector(`[data-message-id="${CSS.escape(m.messageId)}"]`);
        if (li) this.showRating(li, m);
        break;
      }
      case "stream-status":
      case "stream-reasoning":
      case "tool-activity":
        this.answerPart(this.answers.get(m.messageId), m);
        break;
      case "agent-message": {
        const mine = !customer && m.agent && m.agent.id === this.names.selfId;
        this.message("agent", mine, `${agentName(m.agent)} · agent`, m.content, m);
        break;
      }
      case "handoff-queued":
        this.running = null;
        // After `agent-left` (a release), the notice just shown says it all.
        if (this.previous === "agent-left") break;
        // The reply just shown is the old clients' line; this one says more.
        if (this.previous === "human-escalation-response" && this.escalationReply) {
          this.escalationReply.remove();
        }
        this.notice(customer
          ? (m.agentsOnline > 0
            ? `You asked for a human. An agent will be with you shortly (${m.agentsOnline} online).`
            : "You asked for a human. No agent is online right now; you stay in the queue.")
          : "The customer asked for a human.", "warn", m);
        break;
      case "agent-joined":
        this.notice(`${agentName(m.agent)} joined the conversation.`, "good", m);
        break;
      case "agent-left":
        this.notice(`${agentName(m.agent)} left. ${customer ? "Waiting for another agent…" : "Back in the queue."}`, "warn", m);
        break;
      case "handoff-resolved":
        this.notice(`${agentName(m.agent)} marked the conversation resolved. The assistant is back.`, "good", m);
        break;
      case "handoff-timeout":
        this.notice("No agent was free in time. The assistant is back.", "warn", m);
        break;
      case "handoff-cancelled":
        this.notice(customer ? "You no longer wait for a human. The assistant is back." : "The customer cancelled the request.", "", m);
        break;
      case "human-escalation-response":
        // The server's own words: where handoff is not in use they are all
        // there is, and with nobody online they are HANDOFF_OFFLINE_MESSAGE.
        // In the queue, the `handoff-queued` notice right after says more.
        if (customer) this.escalationReply = this.notice(m.message, "", m);
        break;
      case "csat-request":
        if (customer && this.actions) this.csatPrompt(m);
        else if (!customer) this.notice("The customer was asked how it went.", "", m);
        break;
      case "csat": {
        const stars = `${"★".repeat(m.rating)}${"☆".repeat(5 - m.rating)}`;
        const said = m.comment ? `: “${m.comment}”` : "";
        if (customer && this.csatBox) {
          this.csatBox.querySelector(".csat-said").textContent = `You rated it ${stars}${said}. Thank you!`;
          for (const b of this.csatBox.querySelectorAll(".star")) b.classList.toggle("pressed", Number(b.dataset.rating) <= m.rating);
        } else {
          this.notice(`${customer ? "You rated" : "The customer rated"} the conversation ${stars}${said}`, "good", m);
        }
        break;
      }
      case "handoff-unavailable":
        if (customer && m.reason === "closed" && m.opensAt) {
          this.notice(`Agents are back ${openingText(m.opensAt)}.`, "", m);
        } else if (!customer) {
          this.notice(m.reason === "closed"
            ? "The customer asked for a human outside office hours."
            : "The customer asked for a human; no agent was online.", "warn", m);
        }
        break;
      default:
        // `handoff-waiting` and `queue-position` change the banner only: a
        // notice each would bury the conversation.
        break;
    }
  }
}
