// chatbot-server-client 0.1.0: the browser build (ES module) of clients/typescript.
// Built by `npm run build` in clients/typescript; do not edit.

// src/emitter.ts
var Emitter = class {
  listeners = /* @__PURE__ */ new Map();
  /** Calls `fn` for every `name` event until the returned function is called. */
  on(name, fn) {
    let set = this.listeners.get(name);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(name, set);
    }
    set.add(fn);
    return () => this.off(name, fn);
  }
  /** Calls `fn` for the next `name` event only. */
  once(name, fn) {
    const off = this.on(name, (payload) => {
      off();
      fn(payload);
    });
    return off;
  }
  off(name, fn) {
    this.listeners.get(name)?.delete(fn);
  }
  emit(name, payload) {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (e) {
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }
};

// src/errors.ts
var ApiError = class extends Error {
  status;
  code;
  /** The whole error body, for fields beside `error` and `message`. */
  body;
  constructor(status, code, message, body = null) {
    super(message || code || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code || "network_error";
    this.body = body;
  }
};
var ProtocolError = class extends Error {
  code;
  /** The `error` message as it came. */
  payload;
  constructor(payload) {
    super(payload.message || payload.code);
    this.name = "ProtocolError";
    this.code = payload.code;
    this.payload = payload;
  }
};
var ClosedError = class extends Error {
  code = "client_closed";
  constructor(message = "The client was closed") {
    super(message);
    this.name = "ClosedError";
  }
};

// src/auth.ts
var MemoryTokenStore = class {
  tokens;
  constructor(tokens = null) {
    this.tokens = tokens;
  }
  get() {
    return this.tokens;
  }
  set(tokens) {
    this.tokens = tokens;
  }
};
var StorageTokenStore = class {
  key;
  storage;
  constructor(key, storage) {
    this.key = key;
    const s = storage ?? globalThis.localStorage;
    if (!s) throw new Error("StorageTokenStore needs a Storage (localStorage)");
    this.storage = s;
  }
  get() {
    try {
      const saved = JSON.parse(this.storage.getItem(this.key) ?? "null");
      if (!saved || typeof saved.token !== "string" || typeof saved.refreshToken !== "string") return null;
      if (typeof saved.expiresAt !== "number") {
        const claims = jwtClaims(saved.token);
        saved.expiresAt = claims.exp ? claims.exp * 1e3 : 0;
        saved.issuedAt = claims.iat ? claims.iat * 1e3 : saved.expiresAt;
      }
      return saved;
    } catch {
      return null;
    }
  }
  set(tokens) {
    if (tokens) this.storage.setItem(this.key, JSON.stringify(tokens));
    else this.storage.removeItem(this.key);
  }
};
function jwtClaims(token) {
  try {
    const part = token.split(".")[1] ?? "";
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    return JSON.parse(atob(b64));
  } catch {
    return {};
  }
}
function tokensFrom(body, now = Date.now()) {
  const seconds = typeof body.expiresInSeconds === "number" ? body.expiresInSeconds : null;
  const exp = jwtClaims(body.token).exp;
  const expiresAt = seconds !== null ? now + seconds * 1e3 : exp ? exp * 1e3 : now + 36e5;
  return { token: body.token, refreshToken: body.refreshToken, user: body.user, expiresAt, issuedAt: now };
}
var LAPSED = /* @__PURE__ */ new Set(["token_expired", "invalid_token", "missing_token"]);
var Auth = class extends Emitter {
  baseUrl;
  store;
  fetchFn;
  leadMs;
  refreshing = null;
  timer = null;
  closed = false;
  /** The access token last announced with `tokens`. */
  known = null;
  constructor(options = {}) {
    super();
    const origin = globalThis.location?.origin;
    const base = options.baseUrl ?? origin;
    if (!base) throw new Error("baseUrl is required outside a browser");
    this.baseUrl = base.replace(/\/+$/, "");
    this.store = options.tokens ?? new MemoryTokenStore();
    const f = options.fetch ?? globalThis.fetch;
    if (!f) throw new Error("fetch is required");
    this.fetchFn = f.bind(globalThis);
    this.leadMs = options.refreshLeadMs ?? 6e4;
    this.known = this.store.get()?.token ?? null;
    this.schedule();
  }
  /** The logged-in user, or null. */
  get user() {
    return this.store.get()?.user ?? null;
  }
  /** Stops the refresh timer (the tokens stay in the store). */
  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
  /** One REST call; errors are `ApiError`s with the server's code. */
  async request(path, options = {}) {
    if (options.auth === false) return this.send(path, options, null);
    const before = this.store.get();
    if (!before) throw new ApiError(401, "missing_token", "Not logged in");
    if (before.expiresAt <= Date.now()) await this.refresh().catch(() => false);
    try {
      return await this.send(path, options, this.store.get()?.token ?? null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && LAPSED.has(e.code) && await this.refresh()) {
        return this.send(path, options, this.store.get()?.token ?? null);
      }
      throw e;
    }
  }
  async send(path, options, token) {
    const headers = {};
    if (options.body !== void 0) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await this.fetchFn(this.baseUrl + path, {
        method: options.method ?? "GET",
        headers,
        body: options.body === void 0 ? void 0 : JSON.stringify(options.body)
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
      const body = json && typeof json === "object" ? json : null;
      throw new ApiError(resp.status, body?.error, body?.message, body);
    }
    return json;
  }
  /** `POST /api/auth/login` with a username or email. */
  async login(username, password) {
    const body = await this.request("/api/auth/login", { method: "POST", body: { username, password }, auth: false });
    this.save(body);
    return body;
  }
  /** `POST /api/auth/register`; logs the new user in. */
  async register(username, email, password) {
    const body = await this.request("/api/auth/register", {
      method: "POST",
      body: { username, email, password },
      auth: false
    });
    this.save(body);
    return body;
  }
  /**
   * Trades the refresh token for a new pair. True when there is a fresh
   * token (from this call, or one another tab saved meanwhile); false when
   * the login is over (`lost` was emitted and the tokens forgotten). A
   * network failure throws. Calls at the same time share one request.
   */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.refreshOnce().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }
  async refreshOnce() {
    const saved = this.store.get();
    if (!saved) return false;
    try {
      const body = await this.request("/api/auth/refresh", {
        method: "POST",
        body: { refreshToken: saved.refreshToken },
        auth: false
      });
      this.save(body);
      return true;
    } catch (e) {
      const now = this.store.get();
      if (now && now.refreshToken !== saved.refreshToken) {
        this.adopt(now);
        return true;
      }
      if (e instanceof ApiError && (e.status === 401 || e.status === 400)) {
        this.store.set(null);
        this.schedule();
        this.emit("lost", e);
        return false;
      }
      throw e;
    }
  }
  /** `POST /api/auth/ws-ticket`: a single-use ticket for one socket. */
  async ticket() {
    const { ticket } = await this.request("/api/auth/ws-ticket", { method: "POST" });
    return ticket;
  }
  /** `POST /api/auth/logout`: forgets the tokens here and revokes them there. */
  async logout() {
    const saved = this.store.get();
    this.store.set(null);
    this.schedule();
    if (!saved) return;
    try {
      await this.send("/api/auth/logout", { method: "POST", body: { refreshToken: saved.refreshToken } }, saved.token);
    } catch {
    }
  }
  /** `POST /api/auth/logout-all`: every token of the user, on every device. */
  async logoutAll() {
    await this.request("/api/auth/logout-all", { method: "POST" });
    this.store.set(null);
    this.schedule();
  }
  /** Keeps a login (or refresh) answer and plans the next refresh. */
  save(body) {
    const tokens = tokensFrom(body);
    this.store.set(tokens);
    this.schedule();
    this.known = tokens.token;
    this.emit("tokens", tokens);
    return tokens;
  }
  /** Tokens another tab saved: announced once (an open socket sends them
   * with `auth`), and the next refresh planned from them. */
  adopt(t) {
    this.schedule();
    if (t.token !== this.known) {
      this.known = t.token;
      this.emit("tokens", t);
    }
  }
  /** How long before expiry these tokens are refreshed. */
  lead(t) {
    return Math.min(this.leadMs, Math.max(0, (t.expiresAt - t.issuedAt) / 4));
  }
  /** Plans the refresh a little before the stored token expires. */
  schedule() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const t = this.store.get();
    if (this.closed || !t) return;
    const wait = Math.max(0, t.expiresAt - this.lead(t) - Date.now());
    this.timer = setTimeout(() => this.due(), Math.min(wait, 2 ** 31 - 1));
    this.timer.unref?.();
  }
  async due() {
    this.timer = null;
    const t = this.store.get();
    if (this.closed || !t) return;
    if (t.expiresAt - this.lead(t) > Date.now() + 1e3) return this.adopt(t);
    try {
      await this.refresh();
    } catch {
      if (!this.closed && this.store.get()?.expiresAt > Date.now()) {
        this.timer = setTimeout(() => this.due(), 2e3);
        this.timer.unref?.();
      }
    }
  }
};

// src/conversation.ts
var EVENT_TYPES = /* @__PURE__ */ new Set([
  "user-message",
  "stream-start",
  "stream-token",
  "stream-end",
  "stream-reasoning",
  "stream-status",
  "tool-activity",
  "error",
  "human-escalation-response",
  "handoff-queued",
  "agent-joined",
  "agent-message",
  "agent-left",
  "handoff-resolved",
  "handoff-timeout",
  "handoff-cancelled",
  "handoff-unavailable",
  "handoff-waiting",
  "queue-position",
  "feedback",
  "csat-request",
  "csat"
]);
function isConversationEvent(m) {
  return EVENT_TYPES.has(m.type) && typeof m.seq === "number" && m.seq >= 1;
}
function modeAfter(m, current) {
  switch (m.type) {
    case "agent-left":
      return { mode: "queued", agent: null };
    case "handoff-queued":
      return {
        mode: "queued",
        agent: null,
        position: m.position,
        agentsOnline: m.agentsOnline,
        estimatedWaitSeconds: m.estimatedWaitSeconds
      };
    case "handoff-waiting":
      return { ...current, mode: "queued", agent: null, position: m.position, agentsOnline: m.agentsOnline };
    case "queue-position":
      return {
        ...current,
        mode: "queued",
        position: m.position,
        estimatedWaitSeconds: m.estimatedWaitSeconds
      };
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
var MODE_EVENTS = /* @__PURE__ */ new Set([
  "agent-left",
  "handoff-queued",
  "handoff-waiting",
  "queue-position",
  "agent-joined",
  "handoff-resolved",
  "handoff-timeout",
  "handoff-cancelled"
]);
var MAX_PENDING = 2e3;
var Conversation = class {
  /** The seq of the last event applied; every event up to it was applied. */
  lastSeq = 0;
  /** The messages, oldest first. */
  messages = [];
  /** Every answer by its `messageId`. */
  answers = /* @__PURE__ */ new Map();
  /** The answer streaming now, if any. */
  running = null;
  /** The latest answer that ended (what `regenerate` would replace). */
  lastAnswer = null;
  mode = { mode: "bot", agent: null };
  /** Set by `history-lost`: events before this seq are gone from the log
   * (and are filled from the transcript where it still has them). */
  lostBefore = null;
  pending = /* @__PURE__ */ new Map();
  /** The latest answer to each user message, by the user message's id. */
  replies = /* @__PURE__ */ new Map();
  /** Forgets everything; the next event expected is `after + 1`. */
  reset(after = 0) {
    this.lastSeq = after;
    this.messages = [];
    this.answers.clear();
    this.replies.clear();
    this.pending.clear();
    this.running = null;
    this.lastAnswer = null;
    this.lostBefore = null;
    this.mode = { mode: "bot", agent: null };
  }
  /** Takes one event; returns the events applied (none when it is a
   * duplicate or waits for an earlier one; several when it filled a gap). */
  accept(m) {
    if (typeof m.seq !== "number" || m.seq <= this.lastSeq) return [];
    if (m.seq > this.lastSeq + 1) {
      this.pending.set(m.seq, m);
      if (this.pending.size > MAX_PENDING) return this.skipTo(Math.min(...this.pending.keys()));
      return [];
    }
    this.apply(m);
    return [m, ...this.drain()];
  }
  /** The log no longer holds what came before `oldestSeq`: go on from there. */
  skipTo(oldestSeq) {
    if (oldestSeq - 1 <= this.lastSeq) return [];
    this.lastSeq = oldestSeq - 1;
    this.lostBefore = oldestSeq;
    return this.drain();
  }
  /** Puts transcript messages (`GET /api/sessions/{id}/messages`) that the
   * log no longer held before everything else; returns those added. */
  addEarlier(messages) {
    const before = this.lostBefore ?? Infinity;
    const known = new Set(this.messages.map((e) => e.messageId));
    const added = messages.filter((t) => typeof t.seq === "number" && t.seq < before && !known.has(t.messageId)).sort((a, b) => a.seq - b.seq).map((t) => fromTranscript(t));
    for (const e of added) if (e.role === "assistant") this.answers.set(e.messageId, e);
    this.messages = [...added, ...this.messages];
    return added;
  }
  drain() {
    const done = [];
    for (let next = this.pending.get(this.lastSeq + 1); next; next = this.pending.get(this.lastSeq + 1)) {
      this.pending.delete(next.seq);
      this.apply(next);
      done.push(next);
    }
    for (const seq of this.pending.keys()) if (seq <= this.lastSeq) this.pending.delete(seq);
    return done;
  }
  apply(m) {
    this.lastSeq = m.seq;
    if (MODE_EVENTS.has(m.type)) this.mode = modeAfter(m, this.mode);
    switch (m.type) {
      case "user-message":
        this.messages.push({
          role: "user",
          messageId: m.messageId,
          ...m.clientMessageId ? { clientMessageId: m.clientMessageId } : {},
          content: m.content,
          seq: m.seq,
          timestamp: m.timestamp
        });
        break;
      case "stream-start":
        this.startAnswer(m);
        break;
      case "stream-token": {
        const a = this.answers.get(m.messageId);
        if (a) {
          a.text += m.token;
          a.thinking = false;
        }
        break;
      }
      case "stream-reasoning": {
        const a = this.answers.get(m.messageId);
        if (a) a.reasoning += m.token;
        break;
      }
      case "stream-status": {
        const a = this.answers.get(m.messageId);
        if (a) a.thinking = m.status === "thinking" && !a.text;
        break;
      }
      case "tool-activity":
        this.toolActivity(m);
        break;
      case "error": {
        const a = m.messageId ? this.answers.get(m.messageId) : void 0;
        if (a) a.error = { code: m.code, message: m.message, ...m.retryable !== void 0 ? { retryable: m.retryable } : {} };
        break;
      }
      case "stream-end": {
        const a = this.answers.get(m.messageId);
        if (a) {
          a.status = m.status;
          a.thinking = false;
          a.usage = m.usage ?? null;
          this.lastAnswer = a.messageId;
        }
        if (this.running === m.messageId) this.running = null;
        break;
      }
      case "feedback": {
        const a = this.answers.get(m.messageId);
        if (a) a.feedback = { rating: m.rating, ...m.comment ? { comment: m.comment } : {} };
        break;
      }
      case "agent-message":
        this.messages.push({
          role: "agent",
          messageId: m.messageId,
          content: m.content,
          agent: m.agent ?? null,
          seq: m.seq,
          timestamp: m.timestamp
        });
        break;
      case "handoff-queued":
        this.running = null;
        break;
      default:
        break;
    }
  }
  startAnswer(m) {
    const answer = {
      role: "assistant",
      messageId: m.messageId,
      replyTo: m.replyTo ?? null,
      seq: m.seq,
      timestamp: m.timestamp,
      text: "",
      status: "streaming",
      reasoning: "",
      thinking: false,
      tools: [],
      usage: null,
      error: null,
      feedback: null,
      superseded: false
    };
    const earlier = m.replyTo ? this.replies.get(m.replyTo) : void 0;
    if (earlier) earlier.superseded = true;
    if (m.replyTo) this.replies.set(m.replyTo, answer);
    this.answers.set(m.messageId, answer);
    this.messages.push(answer);
    this.running = m.messageId;
  }
  toolActivity(m) {
    const a = this.answers.get(m.messageId);
    if (!a) return;
    let call = a.tools.find((t) => t.toolCallId === m.toolCallId);
    if (!call) {
      call = { toolCallId: m.toolCallId, name: m.name, state: m.state };
      a.tools.push(call);
    }
    call.state = m.state;
    if (m.arguments !== void 0) call.arguments = m.arguments;
  }
};
function fromTranscript(t) {
  if (t.role === "user") {
    return { role: "user", messageId: t.messageId, content: t.content, seq: t.seq, timestamp: t.timestamp, earlier: true };
  }
  if (t.role === "agent") {
    return {
      role: "agent",
      messageId: t.messageId,
      content: t.content,
      agent: t.agent ?? null,
      seq: t.seq,
      timestamp: t.timestamp,
      earlier: true
    };
  }
  return {
    role: "assistant",
    messageId: t.messageId,
    replyTo: null,
    seq: t.seq,
    timestamp: t.timestamp,
    text: t.content,
    status: t.status ?? "completed",
    reasoning: "",
    thinking: false,
    tools: [],
    usage: null,
    error: null,
    feedback: t.feedback ?? null,
    superseded: Boolean(t.superseded),
    earlier: true
  };
}

// src/ids.ts
function newId(prefix = "c") {
  const c = globalThis.crypto;
  if (c?.randomUUID) return `${prefix}-${c.randomUUID()}`;
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// src/link.ts
var OPEN = 1;
var Link = class {
  opts;
  WS;
  ws = null;
  attempt = 0;
  stopped = true;
  timer = null;
  beat = null;
  lastFrame = 0;
  /** Counts connections, so late events of an old one are ignored. */
  generation = 0;
  constructor(opts) {
    this.opts = opts;
    const WS = opts.WebSocket ?? globalThis.WebSocket;
    if (!WS) throw new Error("No WebSocket here: pass one (e.g. the `ws` package) as the `WebSocket` option");
    this.WS = WS;
  }
  get open() {
    return Boolean(this.ws && this.ws.readyState === OPEN);
  }
  /** Which connection is current (changes at every attempt). */
  get connection() {
    return this.generation;
  }
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    void this.connect();
  }
  stop() {
    this.stopped = true;
    this.clearTimers();
    this.drop(1e3);
    this.opts.onState("closed");
  }
  /** Drops the current connection and connects again at once (e.g. to
   * resume from another `lastSeq`). */
  restart() {
    if (this.stopped) return;
    this.drop(1e3);
    this.retry(0);
  }
  /** The server said `connected`: the next failure starts the backoff anew. */
  healthy() {
    this.attempt = 0;
  }
  /** Sends one JSON message; false when not connected. */
  send(message) {
    if (!this.ws || this.ws.readyState !== OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }
  async connect() {
    if (this.stopped) return;
    const generation = ++this.generation;
    this.opts.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ticket;
    try {
      ticket = await this.opts.auth.ticket();
    } catch (e) {
      if (generation !== this.generation || this.stopped) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return this.lost(e);
      return this.retry();
    }
    if (generation !== this.generation || this.stopped) return;
    const q = new URLSearchParams({ ticket, ...this.opts.query?.() ?? {} });
    const url = `${this.opts.auth.baseUrl.replace(/^http/, "ws")}${this.opts.path}?${q}`;
    let ws;
    try {
      ws = new this.WS(url, ["chatbot.v1"]);
    } catch {
      return this.retry();
    }
    this.ws = ws;
    this.lastFrame = Date.now();
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastFrame = Date.now();
      this.startHeartbeat(ws);
      this.opts.onState("open");
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastFrame = Date.now();
      if (typeof ev.data !== "string") return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (m && typeof m === "object" && typeof m.type === "string") {
        this.opts.onMessage(m);
      }
    };
    ws.onerror = () => {
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      void this.closed(ev.code, ev.reason);
    };
  }
  async closed(code, reason) {
    this.ws = null;
    this.stopBeat();
    this.opts.onDrop?.();
    if (this.stopped) return;
    this.opts.onState("reconnecting", { code, reason });
    if (code === 4003) {
      return this.lost(new ApiError(403, "agent_only", "This account may not use the agent socket"));
    }
    if (code === 4001) {
      let fresh = false;
      try {
        fresh = await this.opts.auth.refresh();
      } catch {
        return this.retry();
      }
      if (!fresh) return this.lost(new ApiError(401, reason || "token_expired", "Please log in again"));
      return this.retry(0);
    }
    this.retry();
  }
  lost(e) {
    this.stopped = true;
    this.clearTimers();
    this.drop(1e3);
    this.opts.onState("closed");
    this.opts.onAuthLost(e);
  }
  /** Plans the next attempt: exponential backoff with "equal jitter" (half
   * the delay fixed, half random), so tabs that dropped together do not
   * come back together. */
  retry(delay) {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const initial = this.opts.backoff?.initialMs ?? 500;
    const max = this.opts.backoff?.maxMs ?? 15e3;
    const base = Math.min(max, initial * 2 ** this.attempt);
    const wait = delay ?? base / 2 + Math.random() * (base / 2);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, wait);
  }
  startHeartbeat(ws) {
    this.stopBeat();
    const every = this.opts.heartbeatMs ?? 2e4;
    if (!every) return;
    this.beat = setInterval(() => {
      if (this.ws !== ws) return this.stopBeat();
      if (Date.now() - this.lastFrame > 2 * every + 5e3) {
        this.drop(4e3);
        this.opts.onDrop?.();
        this.opts.onState("reconnecting", { code: 4e3, reason: "silent connection" });
        return this.retry();
      }
      this.send({ type: "ping" });
    }, every);
  }
  stopBeat() {
    if (this.beat) clearInterval(this.beat);
    this.beat = null;
  }
  clearTimers() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.stopBeat();
  }
  /** Forgets the current socket (its late events are ignored) and closes it. */
  drop(code) {
    const ws = this.ws;
    this.ws = null;
    this.stopBeat();
    this.generation += 1;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {
    };
    try {
      ws.close(code);
    } catch {
    }
  }
};

// src/chat-client.ts
function storageSessionStore(key, storage) {
  const s = storage ?? globalThis.localStorage;
  if (!s) throw new Error("storageSessionStore needs a Storage (localStorage)");
  return {
    get: () => s.getItem(key),
    set: (id) => id ? s.setItem(key, id) : s.removeItem(key)
  };
}
var CHAT_REFUSALS = /* @__PURE__ */ new Set([
  "generation_in_progress",
  "rate_limited",
  "budget_exhausted",
  "invalid_content",
  "content_too_long",
  "server_shutting_down",
  "invalid_message"
]);
var BaseClient = class extends Emitter {
  auth;
  constructor(options) {
    super();
    this.auth = new Auth(options);
    this.auth.on("tokens", (t) => {
      this.emit("tokens", t);
      this.onTokens(t);
    });
    this.auth.on("lost", (e) => this.authLost(e));
  }
  get user() {
    return this.auth.user;
  }
  login(username, password) {
    return this.auth.login(username, password);
  }
  register(username, email, password) {
    return this.auth.register(username, email, password);
  }
  /** An authenticated REST call (refreshed once when the token lapsed). */
  request(path, options) {
    return this.auth.request(path, options);
  }
  /** `GET /api/sessions/{id}/messages`: a page of the transcript (newest page first, oldest first within it). */
  transcript(sessionId, options = {}) {
    const q = new URLSearchParams();
    if (options.before) q.set("before", options.before);
    if (options.limit) q.set("limit", String(options.limit));
    return this.request(`/api/sessions/${encodeURIComponent(sessionId)}/messages${q.size ? `?${q}` : ""}`);
  }
  /** The transcript's messages before `beforeSeq` (paging back, at most 10 pages). */
  async earlierThan(sessionId, beforeSeq) {
    const found = [];
    let before;
    for (let page = 0; page < 10; page += 1) {
      const body = await this.transcript(sessionId, { limit: 200, ...before ? { before } : {} });
      found.push(...body.messages.filter((t) => t.seq < beforeSeq));
      const oldest = body.messages[0];
      if (!body.next || !oldest || oldest.seq <= 1) break;
      before = body.next;
    }
    return found;
  }
};
var ChatClient = class extends BaseClient {
  /** The conversation as the events built it. */
  conversation = new Conversation();
  link;
  sessionStore;
  fillEarlier;
  session;
  unacked = /* @__PURE__ */ new Map();
  state = "closed";
  constructor(options = {}) {
    super(options);
    this.sessionStore = options.sessionStore ?? null;
    this.session = options.sessionId ?? this.sessionStore?.get() ?? null;
    this.fillEarlier = options.loadEarlier ?? true;
    this.link = new Link({
      auth: this.auth,
      path: "/ws",
      query: () => this.session ? { sessionId: this.session, lastSeq: String(this.conversation.lastSeq) } : {},
      ...options.WebSocket ? { WebSocket: options.WebSocket } : {},
      ...options.backoff ? { backoff: options.backoff } : {},
      ...options.heartbeatMs !== void 0 ? { heartbeatMs: options.heartbeatMs } : {},
      onMessage: (m) => this.onMessage(m),
      onState: (state, detail) => {
        this.state = state;
        this.emit("state", { state, ...detail });
      },
      onAuthLost: (e) => this.authLost(e)
    });
  }
  /** The conversation's id (null before the first `connected`). */
  get sessionId() {
    return this.session;
  }
  get connectionState() {
    return this.state;
  }
  /** Whether a connection is open now. */
  get connected() {
    return this.link.open;
  }
  /** Opens the conversation; resolves with the first `connected`. From then
   * on the client reconnects by itself until `close()` or `logout()`. */
  connect() {
    return new Promise((resolve, reject) => {
      const offs = [
        this.once("connected", (m) => {
          offs.forEach((off) => off());
          resolve(m);
        }),
        this.once("auth-lost", (e) => {
          offs.forEach((off) => off());
          reject(e);
        })
      ];
      this.link.start();
    });
  }
  /** Closes the connection (no reconnect); unacknowledged chats fail. */
  close() {
    this.link.stop();
    this.auth.close();
    for (const o of this.unacked.values()) o.reject(new ClosedError());
    this.unacked.clear();
  }
  /** Closes, revokes the tokens and forgets the conversation's id. */
  async logout() {
    this.close();
    this.setSession(null);
    await this.auth.logout();
  }
  /**
   * Sends a chat. It is resent after every reconnect until the server
   * acknowledges it (the server drops a repeated `clientMessageId`); the
   * promise resolves with the `ack`, or fails with a `ProtocolError` when
   * the server refused it (`rate_limited`, `generation_in_progress`, …).
   * Not awaiting it is fine: a refusal also comes as an `error` event.
   */
  send(content, options = {}) {
    const chat = { type: "chat", content, clientMessageId: options.clientMessageId ?? newId() };
    const promise = new Promise((resolve, reject) => {
      const o = { chat, resolve, reject, sentOn: null };
      this.unacked.set(chat.clientMessageId, o);
      this.transmit(o);
    });
    promise.catch(() => {
    });
    return promise;
  }
  /** Chats sent and not acknowledged yet (resent after a reconnect). */
  get pending() {
    return [...this.unacked.keys()];
  }
  /** Cancels the running answer (whichever tab started it). */
  stop() {
    return this.link.send({ type: "stop" });
  }
  /** Asks for a human agent. */
  escalate(message) {
    return this.link.send({ type: "human-escalation", ...message ? { message } : {} });
  }
  /** No longer waits for a human (while queued). */
  cancelHandoff() {
    return this.link.send({ type: "handoff-cancel" });
  }
  /** Asks the AI again for the last user message. */
  regenerate() {
    return this.link.send({ type: "regenerate" });
  }
  /** Rates an answer. */
  feedback(messageId, rating, comment) {
    return this.link.send({ type: "feedback", messageId, rating, ...comment ? { comment } : {} });
  }
  /** Says how the conversation with the agent went (after `csat-request`). */
  csat(rating, comment) {
    return this.link.send({ type: "csat", rating, ...comment ? { comment } : {} });
  }
  /** Tells the agent holding the conversation that the user is (not) typing. */
  typing(state) {
    return this.link.send({ type: "typing", state });
  }
  /** `GET /api/sessions`: this user's live sessions. */
  sessions() {
    return this.request("/api/sessions");
  }
  /** `GET /api/sessions/{id}/events`: the events after `afterSeq`, as a resuming socket would get them. */
  events(sessionId, afterSeq = 0, limit) {
    const q = new URLSearchParams({ afterSeq: String(afterSeq) });
    if (limit) q.set("limit", String(limit));
    return this.request(`/api/sessions/${encodeURIComponent(sessionId)}/events?${q}`);
  }
  /** `DELETE /api/sessions/{id}`: erases a conversation for good. */
  async deleteSession(sessionId) {
    await this.request(`/api/sessions/${encodeURIComponent(sessionId)}`, { method: "DELETE" });
  }
  /** `GET /api/usage`: this user's token usage. */
  usage() {
    return this.request("/api/usage");
  }
  onTokens(t) {
    this.link.send({ type: "auth", token: t.token });
  }
  authLost(e) {
    this.link.stop();
    for (const o of this.unacked.values()) o.reject(e);
    this.unacked.clear();
    this.emit("auth-lost", e);
  }
  setSession(id) {
    this.session = id;
    this.sessionStore?.set(id);
  }
  transmit(o) {
    if (this.link.send(o.chat)) o.sentOn = this.link.connection;
  }
  onMessage(m) {
    this.emit("message", m);
    switch (m.type) {
      case "connected":
        return this.onConnected(m);
      case "ack":
        return this.onAck(m);
      case "error":
        if (isConversationEvent(m)) return this.accept(m);
        return this.onError(m);
      case "history-lost":
        return this.onHistoryLost(m);
      case "session-lost":
        this.setSession(null);
        this.conversation.reset(0);
        this.emit("session-lost", m);
        this.emit("reset", { reason: "session-lost" });
        return;
      case "quota": {
        const { type: _t, timestamp: _ts, ...quota } = m;
        this.emit("quota", quota);
        return;
      }
      case "typing":
        this.emit("typing", m);
        return;
      default:
        if (isConversationEvent(m)) this.accept(m);
    }
  }
  onConnected(m) {
    const fresh = !m.resumed || m.sessionId !== this.session;
    if (fresh) this.conversation.reset(0);
    this.setSession(m.sessionId);
    if (fresh) this.emit("reset", { reason: "new-session" });
    this.link.healthy();
    this.conversation.mode = { mode: m.mode, agent: m.agent ?? null };
    this.emit("connected", m);
    this.emit("handoff", { ...this.conversation.mode, event: m });
    if (m.quota) this.emit("quota", m.quota);
    for (const o of this.unacked.values()) this.transmit(o);
  }
  onAck(m) {
    const o = m.clientMessageId ? this.unacked.get(m.clientMessageId) : void 0;
    if (o) {
      this.unacked.delete(o.chat.clientMessageId);
      o.resolve(m);
    }
    this.emit("ack", m);
  }
  onError(m) {
    if (m.code === "last_seq_ahead") {
      this.conversation.reset(0);
      this.emit("reset", { reason: "last-seq-ahead" });
      this.link.restart();
    } else if (CHAT_REFUSALS.has(m.code)) {
      const refused = [...this.unacked.values()].find((o) => o.sentOn === this.link.connection);
      if (refused) {
        this.unacked.delete(refused.chat.clientMessageId);
        refused.reject(new ProtocolError(m));
      }
    }
    this.emit("error", m);
  }
  onHistoryLost(m) {
    const applied = this.conversation.skipTo(m.oldestSeq);
    this.emit("history-lost", m);
    for (const e of applied) this.announce(e);
    const session = this.session;
    if (!this.fillEarlier || !session) return;
    this.earlierThan(session, m.oldestSeq).then((found) => {
      if (this.session !== session) return;
      const added = this.conversation.addEarlier(found);
      if (added.length) this.emit("earlier", added);
    }).catch(() => {
    });
  }
  accept(m) {
    for (const e of this.conversation.accept(m)) this.announce(e);
  }
  /** The typed events of one applied conversation event. */
  announce(e) {
    this.emit("event", e);
    const conv = this.conversation;
    switch (e.type) {
      case "user-message":
        this.emit("user-message", conv.messages.at(-1));
        break;
      case "stream-start":
        this.emit("answer-start", conv.answers.get(e.messageId));
        break;
      case "stream-token": {
        const answer = conv.answers.get(e.messageId);
        if (answer) this.emit("token", { answer, token: e.token, seq: e.seq });
        break;
      }
      case "stream-reasoning":
      case "stream-status":
      case "tool-activity": {
        const answer = conv.answers.get(e.messageId);
        if (answer) this.emit("answer-part", { answer, event: e });
        break;
      }
      case "stream-end": {
        const answer = conv.answers.get(e.messageId);
        if (answer) this.emit("answer", answer);
        break;
      }
      case "error":
        this.emit("error", e);
        break;
      case "agent-message":
        this.emit("agent-message", conv.messages.at(-1));
        break;
      case "feedback":
        this.emit("feedback", e);
        break;
      case "csat-request":
        this.emit("csat-request", e);
        break;
      case "csat":
        this.emit("csat", e);
        break;
      case "human-escalation-response":
      case "handoff-unavailable":
        this.emit("handoff", { ...conv.mode, event: e });
        break;
      default:
        if (e.type.startsWith("handoff-") || e.type.startsWith("agent-") || e.type === "queue-position") {
          this.emit("handoff", { ...conv.mode, event: e });
        }
    }
  }
};

// src/agent-client.ts
var AgentClient = class extends BaseClient {
  /** The conversations this agent holds, by session id. */
  held = /* @__PURE__ */ new Map();
  /** The queue as last told. */
  queue = [];
  /** This agent, once connected. */
  agent = null;
  status = "available";
  /** The desk as last told. */
  agents = [];
  link;
  waiting = /* @__PURE__ */ new Map();
  /** Conversations asked to `watch` on the current connection. */
  watched = /* @__PURE__ */ new Set();
  state = "closed";
  /** The agent REST routes (`/api/agent/...`). */
  rest = {
    queue: () => this.request("/api/agent/queue"),
    conversations: () => this.request("/api/agent/conversations"),
    claim: (sessionId) => this.request(`/api/agent/conversations/${enc(sessionId)}/claim`, { method: "POST" }),
    release: (sessionId) => this.request(`/api/agent/conversations/${enc(sessionId)}/release`, { method: "POST" }),
    resolve: (sessionId) => this.request(`/api/agent/conversations/${enc(sessionId)}/resolve`, { method: "POST" }),
    sendMessage: (sessionId, content, clientMessageId) => this.request(`/api/agent/conversations/${enc(sessionId)}/messages`, {
      method: "POST",
      body: { content, ...clientMessageId ? { clientMessageId } : {} }
    }),
    replies: () => this.request("/api/agent/replies"),
    saveReply: (shortcut, content) => this.request("/api/agent/replies", { method: "POST", body: { shortcut, content } }),
    deleteReply: async (shortcut) => {
      await this.request(`/api/agent/replies/${enc(shortcut)}`, { method: "DELETE" });
    },
    userUsage: (userId) => this.request(`/api/agent/users/${enc(userId)}/usage`)
  };
  constructor(options = {}) {
    super(options);
    this.link = new Link({
      auth: this.auth,
      path: "/agent/ws",
      ...options.WebSocket ? { WebSocket: options.WebSocket } : {},
      ...options.backoff ? { backoff: options.backoff } : {},
      ...options.heartbeatMs !== void 0 ? { heartbeatMs: options.heartbeatMs } : {},
      onMessage: (m) => this.onMessage(m),
      onState: (state, detail) => {
        this.state = state;
        this.emit("state", { state, ...detail });
      },
      onAuthLost: (e) => this.authLost(e),
      onDrop: () => this.dropped(new ClosedError("The connection dropped before the server answered"))
    });
  }
  get connectionState() {
    return this.state;
  }
  get connected() {
    return this.link.open;
  }
  /** Opens the agent socket; resolves with the first `connected` (fails with
   * `agent_only` for an account that is not an agent). */
  connect() {
    return new Promise((resolve, reject) => {
      const offs = [
        this.once("connected", (m) => {
          offs.forEach((off) => off());
          resolve(m);
        }),
        this.once("auth-lost", (e) => {
          offs.forEach((off) => off());
          reject(e);
        })
      ];
      this.link.start();
    });
  }
  close() {
    this.link.stop();
    this.auth.close();
    this.dropped(new ClosedError());
  }
  async logout() {
    this.close();
    await this.auth.logout();
  }
  /** Takes a queued conversation. */
  claim(sessionId) {
    return this.command({ type: "claim", sessionId });
  }
  /** Answers the customer; the ack carries the `agent-message`'s id and seq. */
  reply(sessionId, content, clientMessageId = newId("a")) {
    return this.command({ type: "agent-message", sessionId, content, clientMessageId });
  }
  /** Gives the conversation back to the queue. */
  release(sessionId) {
    return this.command({ type: "release", sessionId });
  }
  /** Gives the conversation back to the bot. */
  resolve(sessionId) {
    return this.command({ type: "resolve", sessionId });
  }
  /** `available` or `away` (whether auto-assignment may give this agent conversations). */
  setStatus(status) {
    return this.link.send({ type: "status", status });
  }
  /** Tells the customer the agent is (not) typing. */
  typing(sessionId, state) {
    return this.link.send({ type: "typing", sessionId, state });
  }
  onTokens(t) {
    this.link.send({ type: "auth", token: t.token });
  }
  authLost(e) {
    this.link.stop();
    this.dropped(e);
    this.emit("auth-lost", e);
  }
  command(message) {
    const requestId = newId("r");
    const promise = new Promise((resolve, reject) => {
      if (!this.link.send({ ...message, requestId })) {
        reject(new ClosedError("Not connected"));
        return;
      }
      this.waiting.set(requestId, { resolve, reject });
    });
    promise.catch(() => {
    });
    return promise;
  }
  dropped(e) {
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }
  /** Follows a conversation from the last seq this client has of it. */
  follow(sessionId, info) {
    let held = this.held.get(sessionId);
    const isNew = !held;
    if (!held) {
      held = { sessionId, info, conversation: new Conversation(), summary: null };
      this.held.set(sessionId, held);
    }
    if (info) held.info = info;
    if (info?.summary) held.summary = info.summary;
    held.conversation.mode = { mode: "assigned", agent: this.agent };
    if (!this.watched.has(sessionId)) {
      this.watched.add(sessionId);
      const requestId = newId("w");
      this.link.send({ type: "watch", sessionId, lastSeq: held.conversation.lastSeq, requestId });
    }
    if (isNew) this.emit("assigned", held);
    return held;
  }
  unfollow(sessionId, reason, mode = null) {
    this.watched.delete(sessionId);
    if (this.held.delete(sessionId)) this.emit("removed", { sessionId, reason, mode });
  }
  onMessage(m) {
    this.emit("message", m);
    switch (m.type) {
      case "connected":
        return this.onConnected(m);
      case "queue":
        this.queue = m.items;
        this.emit("queue", m.items);
        return;
      case "conversation-assigned":
        this.follow(m.conversation.sessionId, m.conversation);
        return;
      case "conversation-removed":
        return this.unfollow(m.sessionId, "removed", m.mode);
      case "status":
        this.status = m.status;
        this.emit("status", m.status);
        return;
      case "agents":
        this.agents = m.agents;
        this.emit("agents", m.agents);
        return;
      case "ack":
        return this.onAck(m);
      case "error":
        if (isConversationEvent(m) && m.sessionId) return this.accept(m.sessionId, m);
        return this.onError(m);
      case "history-lost":
        return this.onHistoryLost(m);
      case "handoff-summary": {
        const held = this.held.get(m.sessionId);
        if (held) held.summary = m.summary;
        this.emit("summary", m);
        return;
      }
      case "csat":
        if (typeof m.seq === "number") return this.accept(m.sessionId, m);
        this.emit("csat", m);
        return;
      case "typing":
        this.emit("typing", { sessionId: m.sessionId, state: m.state });
        return;
      default: {
        const e = m;
        if (e.sessionId && isConversationEvent(e)) this.accept(e.sessionId, e);
      }
    }
  }
  onConnected(m) {
    this.agent = m.agent;
    this.status = m.status;
    this.watched.clear();
    this.link.healthy();
    const now = new Set(m.conversations.map((c) => c.sessionId));
    for (const sessionId of [...this.held.keys()]) if (!now.has(sessionId)) this.unfollow(sessionId, "not-held");
    this.emit("connected", m);
    for (const c of m.conversations) this.follow(c.sessionId, c);
  }
  onAck(m) {
    const w = m.requestId ? this.waiting.get(m.requestId) : void 0;
    if (w && m.requestId) this.waiting.delete(m.requestId);
    if (m.action === "claim") {
      const item = this.queue.find((q) => q.sessionId === m.sessionId);
      this.follow(m.sessionId, item ? { ...item, assignedAt: m.timestamp } : null);
    } else if (m.action === "release" || m.action === "resolve") {
      if (m.action === "resolve") this.unfollow(m.sessionId, "resolved", "bot");
      else this.unfollow(m.sessionId, "released", "queued");
    }
    this.emit("ack", m);
    w?.resolve(m);
  }
  onError(m) {
    const w = m.requestId ? this.waiting.get(m.requestId) : void 0;
    if (w && m.requestId) {
      this.waiting.delete(m.requestId);
      w.reject(new ProtocolError(m));
    }
    if (m.code === "not_assigned" && m.sessionId && this.held.has(m.sessionId)) this.unfollow(m.sessionId, "not-assigned");
    this.emit("error", m);
  }
  onHistoryLost(m) {
    const held = this.held.get(m.sessionId);
    if (!held) return;
    const applied = held.conversation.skipTo(m.oldestSeq);
    this.emit("history-lost", m);
    for (const e of applied) this.announce(m.sessionId, held, e);
    this.earlierThan(m.sessionId, m.oldestSeq).then((found) => {
      if (this.held.get(m.sessionId) !== held) return;
      const messages = held.conversation.addEarlier(found);
      if (messages.length) this.emit("earlier", { sessionId: m.sessionId, messages });
    }).catch(() => {
    });
  }
  accept(sessionId, e) {
    const held = this.held.get(sessionId);
    if (!held) return;
    for (const applied of held.conversation.accept(e)) this.announce(sessionId, held, applied);
  }
  announce(sessionId, held, e) {
    this.emit("event", { sessionId, event: e });
    const conv = held.conversation;
    switch (e.type) {
      case "user-message":
        this.emit("user-message", { sessionId, message: conv.messages.at(-1) });
        break;
      case "agent-message":
        this.emit("agent-message", { sessionId, message: conv.messages.at(-1) });
        break;
      case "stream-token": {
        const answer = conv.answers.get(e.messageId);
        if (answer) this.emit("token", { sessionId, answer, token: e.token, seq: e.seq });
        break;
      }
      case "stream-end": {
        const answer = conv.answers.get(e.messageId);
        if (answer) this.emit("answer", { sessionId, answer });
        break;
      }
      default:
        if (e.type.startsWith("handoff-") || e.type === "agent-joined" || e.type === "agent-left") {
          this.emit("handoff", { sessionId, mode: conv.mode, event: e });
        }
    }
  }
};
function enc(s) {
  return encodeURIComponent(s);
}
export {
  AgentClient,
  ApiError,
  Auth,
  ChatClient,
  ClosedError,
  Conversation,
  Emitter,
  MemoryTokenStore,
  ProtocolError,
  StorageTokenStore,
  isConversationEvent,
  jwtClaims,
  modeAfter,
  newId,
  storageSessionStore,
  tokensFrom
};
