// The customer's client: a login, one conversation over `/ws` that resumes by
// itself (`sessionId` + `lastSeq` after every reconnect, `history-lost`
// filled from the transcript), chats that are resent until acknowledged
// (`clientMessageId`, de-duplicated by the server), and typed events.

import { Auth, type AuthBody, type AuthOptions, type StorageLike, type Tokens, type UserView } from "./auth.js";
import {
  Conversation,
  isConversationEvent,
  type AgentEntry,
  type Answer,
  type ConversationEvent,
  type Entry,
  type ModeState,
  type TranscriptMessage,
  type UserEntry,
} from "./conversation.js";
import { Emitter } from "./emitter.js";
import { ApiError, ClosedError, ProtocolError } from "./errors.js";
import type {
  AckPayload,
  ConnectedPayload,
  CsatPayload,
  CsatRequestPayload,
  CustomerServerMessage,
  ErrorPayload,
  FeedbackPayload,
  HistoryLostPayload,
  Quota,
  SessionLostPayload,
  StreamReasoningPayload,
  StreamStatusPayload,
  ToolActivityPayload,
  TypingPayload,
} from "./generated/asyncapi.js";
import type { components } from "./generated/openapi.js";
import { newId } from "./ids.js";
import { Link, type BackoffOptions, type ConnectionState, type WebSocketConstructor } from "./link.js";

type Schemas = components["schemas"];

/** Where the conversation's id is kept, so a reload resumes it. */
export interface SessionStore {
  get(): string | null;
  set(sessionId: string | null): void;
}

/** The session id in `localStorage` (or another `Storage`) under `key`. */
export function storageSessionStore(key: string, storage?: StorageLike): SessionStore {
  const s = storage ?? (globalThis as { localStorage?: StorageLike }).localStorage;
  if (!s) throw new Error("storageSessionStore needs a Storage (localStorage)");
  return {
    get: () => s.getItem(key),
    set: (id) => (id ? s.setItem(key, id) : s.removeItem(key)),
  };
}

export interface ClientOptions extends AuthOptions {
  /** A WebSocket implementation where there is no global one (Node 20: the `ws` package). */
  WebSocket?: WebSocketConstructor;
  backoff?: BackoffOptions;
  /** Application-level ping interval (default 20 s; 0: none). */
  heartbeatMs?: number;
}

export interface ChatClientOptions extends ClientOptions {
  /** Resume this conversation (else the one `sessionStore` holds, else a new one). */
  sessionId?: string | null;
  sessionStore?: SessionStore;
  /** Fill `history-lost` from the transcript (default true). */
  loadEarlier?: boolean;
}

export interface ChatEvents {
  /** The connection's state: `connecting`, `open`, `reconnecting` (with the close code) or `closed`. */
  state: { state: ConnectionState; code?: number; reason?: string };
  /** A connection opened (the first message of each). */
  connected: ConnectedPayload;
  /** Every message from the server, as it came. */
  message: CustomerServerMessage;
  /** Every conversation event, exactly once, in seq order. */
  event: ConversationEvent;
  /** A user message (this tab's or another's). */
  "user-message": UserEntry;
  /** An answer started streaming. */
  "answer-start": Answer;
  /** A piece of an answer's text, with the answer so far. */
  token: { answer: Answer; token: string; seq: number };
  /** Reasoning, thinking or a tool call of an answer. */
  "answer-part": { answer: Answer; event: StreamReasoningPayload | StreamStatusPayload | ToolActivityPayload };
  /** An answer ended: `status` is completed, failed or cancelled. */
  answer: Answer;
  /** A human agent wrote. */
  "agent-message": AgentEntry;
  /** Who answers changed (or was told on connect): bot, queued (with the place in line) or assigned. */
  handoff: ModeState & { event: ConversationEvent | ConnectedPayload };
  feedback: FeedbackPayload;
  "csat-request": CsatRequestPayload;
  csat: CsatPayload;
  /** Every `error` message (one that ended an answer has `seq` and `messageId`). */
  error: ErrorPayload;
  /** A chat's acknowledgement (also a duplicate's). */
  ack: AckPayload;
  /** The user's token usage. */
  quota: Quota;
  /** The agent started or stopped typing. */
  typing: TypingPayload;
  /** The log no longer holds events after the seq this client had; `earlier` follows. */
  "history-lost": HistoryLostPayload;
  /** Messages filled in from the transcript after `history-lost`, oldest first. */
  earlier: Entry[];
  /** The session is gone; a new one starts on the next connection. */
  "session-lost": SessionLostPayload;
  /** The conversation model was emptied (a new session, a lost one, or a
   * `lastSeq` the server did not know): what was shown is no longer it. */
  reset: { reason: "new-session" | "session-lost" | "last-seq-ahead" };
  /** The login is over: log in again. */
  "auth-lost": ApiError;
  /** New tokens (login or refresh). */
  tokens: Tokens;
}

/** Codes of an `error` (without seq) that refuse a chat. */
const CHAT_REFUSALS = new Set([
  "generation_in_progress", "rate_limited", "budget_exhausted", "invalid_content", "content_too_long",
  "server_shutting_down", "invalid_message",
]);

interface Outgoing {
  chat: { type: "chat"; content: string; clientMessageId: string };
  resolve: (ack: AckPayload) => void;
  reject: (e: Error) => void;
  /** The connection it was last sent on. */
  sentOn: number | null;
}

/** The part of a client both kinds share: the login and the REST calls. */
abstract class BaseClient<E extends { "auth-lost": ApiError; tokens: Tokens }> extends Emitter<E> {
  readonly auth: Auth;

  constructor(options: ClientOptions) {
    super();
    this.auth = new Auth(options);
    this.auth.on("tokens", (t) => {
      this.emit("tokens", t as E["tokens"]);
      this.onTokens(t);
    });
    this.auth.on("lost", (e) => this.authLost(e));
  }

  get user(): UserView | null {
    return this.auth.user;
  }

  login(username: string, password: string): Promise<AuthBody> {
    return this.auth.login(username, password);
  }

  register(username: string, email: string, password: string): Promise<AuthBody> {
    return this.auth.register(username, email, password);
  }

  /** An authenticated REST call (refreshed once when the token lapsed). */
  request<T>(path: string, options?: { method?: string; body?: unknown }): Promise<T> {
    return this.auth.request<T>(path, options);
  }

  /** `GET /api/sessions/{id}/messages`: a page of the transcript (newest page first, oldest first within it). */
  transcript(sessionId: string, options: { before?: string; limit?: number } = {}): Promise<Schemas["TranscriptBody"]> {
    const q = new URLSearchParams();
    if (options.before) q.set("before", options.before);
    if (options.limit) q.set("limit", String(options.limit));
    return this.request(`/api/sessions/${encodeURIComponent(sessionId)}/messages${q.size ? `?${q}` : ""}`);
  }

  /** The transcript's messages before `beforeSeq` (paging back, at most 10 pages). */
  protected async earlierThan(sessionId: string, beforeSeq: number): Promise<TranscriptMessage[]> {
    const found: TranscriptMessage[] = [];
    let before: string | undefined;
    for (let page = 0; page < 10; page += 1) {
      const body = await this.transcript(sessionId, { limit: 200, ...(before ? { before } : {}) });
      found.push(...body.messages.filter((t) => t.seq < beforeSeq));
      const oldest = body.messages[0];
      if (!body.next || !oldest || oldest.seq <= 1) break;
      before = body.next;
    }
    return found;
  }

  protected abstract onTokens(t: Tokens): void;
  protected abstract authLost(e: ApiError): void;
}

export { BaseClient };

/**
 * A customer's conversation. `connect()` opens it (resuming `sessionId` when
 * there is one); then `send`, `stop`, `escalate`, … and the events.
 */
export class ChatClient extends BaseClient<ChatEvents> {
  /** The conversation as the events built it. */
  readonly conversation = new Conversation();
  private readonly link: Link;
  private readonly sessionStore: SessionStore | null;
  private readonly fillEarlier: boolean;
  private session: string | null;
  private unacked = new Map<string, Outgoing>();
  private state: ConnectionState = "closed";

  constructor(options: ChatClientOptions = {}) {
    super(options);
    this.sessionStore = options.sessionStore ?? null;
    this.session = options.sessionId ?? this.sessionStore?.get() ?? null;
    this.fillEarlier = options.loadEarlier ?? true;
    this.link = new Link({
      auth: this.auth,
      path: "/ws",
      query: (): Record<string, string> =>
        this.session ? { sessionId: this.session, lastSeq: String(this.conversation.lastSeq) } : {},
      ...(options.WebSocket ? { WebSocket: options.WebSocket } : {}),
      ...(options.backoff ? { backoff: options.backoff } : {}),
      ...(options.heartbeatMs !== undefined ? { heartbeatMs: options.heartbeatMs } : {}),
      onMessage: (m) => this.onMessage(m as unknown as CustomerServerMessage),
      onState: (state, detail) => {
        this.state = state;
        this.emit("state", { state, ...detail });
      },
      onAuthLost: (e) => this.authLost(e),
    });
  }

  /** The conversation's id (null before the first `connected`). */
  get sessionId(): string | null {
    return this.session;
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  /** Whether a connection is open now. */
  get connected(): boolean {
    return this.link.open;
  }

  /** Opens the conversation; resolves with the first `connected`. From then
   * on the client reconnects by itself until `close()` or `logout()`. */
  connect(): Promise<ConnectedPayload> {
    return new Promise((resolve, reject) => {
      const offs = [
        this.once("connected", (m) => {
          offs.forEach((off) => off());
          resolve(m);
        }),
        this.once("auth-lost", (e) => {
          offs.forEach((off) => off());
          reject(e);
        }),
      ];
      this.link.start();
    });
  }

  /** Closes the connection (no reconnect); unacknowledged chats fail. */
  close(): void {
    this.link.stop();
    this.auth.close();
    for (const o of this.unacked.values()) o.reject(new ClosedError());
    this.unacked.clear();
  }

  /** Closes, revokes the tokens and forgets the conversation's id. */
  async logout(): Promise<void> {
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
  send(content: string, options: { clientMessageId?: string } = {}): Promise<AckPayload> {
    const chat = { type: "chat" as const, content, clientMessageId: options.clientMessageId ?? newId() };
    const promise = new Promise<AckPayload>((resolve, reject) => {
      const o: Outgoing = { chat, resolve, reject, sentOn: null };
      this.unacked.set(chat.clientMessageId, o);
      this.transmit(o);
    });
    promise.catch(() => {});
    return promise;
  }

  /** Chats sent and not acknowledged yet (resent after a reconnect). */
  get pending(): string[] {
    return [...this.unacked.keys()];
  }

  /** Cancels the running answer (whichever tab started it). */
  stop(): boolean {
    return this.link.send({ type: "stop" });
  }

  /** Asks for a human agent. */
  escalate(message?: string): boolean {
    return this.link.send({ type: "human-escalation", ...(message ? { message } : {}) });
  }

  /** No longer waits for a human (while queued). */
  cancelHandoff(): boolean {
    return this.link.send({ type: "handoff-cancel" });
  }

  /** Asks the AI again for the last user message. */
  regenerate(): boolean {
    return this.link.send({ type: "regenerate" });
  }

  /** Rates an answer. */
  feedback(messageId: string, rating: "up" | "down", comment?: string | null): boolean {
    return this.link.send({ type: "feedback", messageId, rating, ...(comment ? { comment } : {}) });
  }

  /** Says how the conversation with the agent went (after `csat-request`). */
  csat(rating: number, comment?: string | null): boolean {
    return this.link.send({ type: "csat", rating, ...(comment ? { comment } : {}) });
  }

  /** Tells the agent holding the conversation that the user is (not) typing. */
  typing(state: boolean): boolean {
    return this.link.send({ type: "typing", state });
  }

  /** `GET /api/sessions`: this user's live sessions. */
  sessions(): Promise<Schemas["SessionsBody"]> {
    return this.request("/api/sessions");
  }

  /** `GET /api/sessions/{id}/events`: the events after `afterSeq`, as a resuming socket would get them. */
  events(sessionId: string, afterSeq = 0, limit?: number): Promise<Schemas["EventsBody"]> {
    const q = new URLSearchParams({ afterSeq: String(afterSeq) });
    if (limit) q.set("limit", String(limit));
    return this.request(`/api/sessions/${encodeURIComponent(sessionId)}/events?${q}`);
  }

  /** `DELETE /api/sessions/{id}`: erases a conversation for good. */
  async deleteSession(sessionId: string): Promise<void> {
    await this.request(`/api/sessions/${encodeURIComponent(sessionId)}`, { method: "DELETE" });
  }

  /** `GET /api/usage`: this user's token usage. */
  usage(): Promise<Schemas["UsageBody"]> {
    return this.request("/api/usage");
  }

  protected onTokens(t: Tokens): void {
    // Extends the open socket's authority before its token expires.
    this.link.send({ type: "auth", token: t.token });
  }

  protected authLost(e: ApiError): void {
    this.link.stop();
    for (const o of this.unacked.values()) o.reject(e);
    this.unacked.clear();
    this.emit("auth-lost", e);
  }

  private setSession(id: string | null): void {
    this.session = id;
    this.sessionStore?.set(id);
  }

  private transmit(o: Outgoing): void {
    if (this.link.send(o.chat)) o.sentOn = this.link.connection;
  }

  private onMessage(m: CustomerServerMessage): void {
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
        this.emit("quota", quota as Quota);
        return;
      }
      case "typing":
        this.emit("typing", m);
        return;
      default:
        if (isConversationEvent(m)) this.accept(m);
    }
  }

  private onConnected(m: ConnectedPayload): void {
    const fresh = !m.resumed || m.sessionId !== this.session;
    if (fresh) this.conversation.reset(0);
    this.setSession(m.sessionId);
    if (fresh) this.emit("reset", { reason: "new-session" });
    this.link.healthy();
    this.conversation.mode = { mode: m.mode, agent: m.agent ?? null };
    this.emit("connected", m);
    this.emit("handoff", { ...this.conversation.mode, event: m });
    if (m.quota) this.emit("quota", m.quota);
    // Safe: the server drops a clientMessageId it accepted already.
    for (const o of this.unacked.values()) this.transmit(o);
  }

  private onAck(m: AckPayload): void {
    const o = m.clientMessageId ? this.unacked.get(m.clientMessageId) : undefined;
    if (o) {
      this.unacked.delete(o.chat.clientMessageId);
      o.resolve(m);
    }
    this.emit("ack", m);
  }

  private onError(m: ErrorPayload): void {
    if (m.code === "last_seq_ahead") {
      // This client saw more than the session holds (another life of it):
      // start over from its beginning.
      this.conversation.reset(0);
      this.emit("reset", { reason: "last-seq-ahead" });
      this.link.restart();
    } else if (CHAT_REFUSALS.has(m.code)) {
      // Replies come in the order the frames were read: the oldest chat of
      // this connection without a verdict is the one refused.
      const refused = [...this.unacked.values()].find((o) => o.sentOn === this.link.connection);
      if (refused) {
        this.unacked.delete(refused.chat.clientMessageId);
        refused.reject(new ProtocolError(m as unknown as { code: string; message: string }));
      }
    }
    this.emit("error", m);
  }

  private onHistoryLost(m: HistoryLostPayload): void {
    const applied = this.conversation.skipTo(m.oldestSeq);
    this.emit("history-lost", m);
    for (const e of applied) this.announce(e);
    const session = this.session;
    if (!this.fillEarlier || !session) return;
    this.earlierThan(session, m.oldestSeq)
      .then((found) => {
        if (this.session !== session) return;
        const added = this.conversation.addEarlier(found);
        if (added.length) this.emit("earlier", added);
      })
      .catch(() => {
        // Best effort: the conversation goes on without them.
      });
  }

  private accept(m: ConversationEvent): void {
    for (const e of this.conversation.accept(m)) this.announce(e);
  }

  /** The typed events of one applied conversation event. */
  private announce(e: ConversationEvent): void {
    this.emit("event", e);
    const conv = this.conversation;
    switch (e.type) {
      case "user-message":
        this.emit("user-message", conv.messages.at(-1) as UserEntry);
        break;
      case "stream-start":
        this.emit("answer-start", conv.answers.get(e.messageId)!);
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
        this.emit("agent-message", conv.messages.at(-1) as AgentEntry);
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
}
