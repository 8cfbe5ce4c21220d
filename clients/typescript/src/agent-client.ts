// The human agent's client: `/agent/ws` (the queue, the conversations this
// agent holds, each followed with `watch {sessionId, lastSeq}` after every
// reconnect so nothing is missed or shown twice), its commands answered by
// `ack` or `error` (matched by `requestId`), and the agent REST routes.

import type { Tokens } from "./auth.js";
import { BaseClient, type ClientOptions } from "./chat-client.js";
import {
  Conversation,
  isConversationEvent,
  type AgentEntry,
  type Answer,
  type ConversationEvent,
  type Entry,
  type ModeState,
  type UserEntry,
} from "./conversation.js";
import { ApiError, ClosedError, ProtocolError } from "./errors.js";
import type {
  Agent,
  AgentAckPayload,
  AgentConnectedPayload,
  AgentCsatPayload,
  AgentErrorPayload,
  AgentHistoryLostPayload,
  AgentServerMessage,
  AgentsPayload,
  ConversationRemovedPayload,
  HandoffSummaryPayload,
  HeldConversation,
  QueueItem,
} from "./generated/asyncapi.js";
import type { components, operations } from "./generated/openapi.js";
import { newId } from "./ids.js";
import { Link, type ConnectionState } from "./link.js";

type Schemas = components["schemas"];
type Ok<Op extends keyof operations, S extends number> = operations[Op]["responses"] extends Record<
  S,
  { content: { "application/json": infer B } }
>
  ? B
  : never;

/** A conversation this agent holds. */
export interface HeldState {
  sessionId: string;
  /** Who and since when, as the server said (null fields until it did). */
  info: HeldConversation | null;
  conversation: Conversation;
  /** The AI's summary for the agent, once it came. */
  summary: string | null;
}

export interface AgentEvents {
  state: { state: ConnectionState; code?: number; reason?: string };
  connected: AgentConnectedPayload;
  /** Every message from the server, as it came. */
  message: AgentServerMessage;
  /** The queue, longest waiting first (on connect and on every change). */
  queue: QueueItem[];
  /** This agent now holds a conversation (claimed, auto-assigned, or held on connect). */
  assigned: HeldState;
  /** This agent no longer holds it: `reason` says why (`released` and
   * `resolved`: this agent's own action; `removed`: the server took it away,
   * `mode` says where it went; `not-held`: a reconnect found it no longer
   * held; `not-assigned`: a command found it taken from under this agent). */
  removed: {
    sessionId: string;
    reason: "released" | "resolved" | "removed" | "not-held" | "not-assigned";
    mode: ConversationRemovedPayload["mode"] | null;
  };
  /** Every event of a held conversation, exactly once, in seq order. */
  event: { sessionId: string; event: ConversationEvent };
  "user-message": { sessionId: string; message: UserEntry };
  "agent-message": { sessionId: string; message: AgentEntry };
  token: { sessionId: string; answer: Answer; token: string; seq: number };
  answer: { sessionId: string; answer: Answer };
  handoff: { sessionId: string; mode: ModeState; event: ConversationEvent };
  /** The agent's presence: available or away. */
  status: "available" | "away";
  /** The desk: every agent seen lately, with their presence and load. */
  agents: AgentsPayload["agents"];
  summary: HandoffSummaryPayload;
  /** A customer rated a conversation this agent resolved (live). */
  csat: AgentCsatPayload;
  typing: { sessionId: string; state: boolean };
  error: AgentErrorPayload;
  ack: AgentAckPayload;
  "history-lost": AgentHistoryLostPayload;
  earlier: { sessionId: string; messages: Entry[] };
  "auth-lost": ApiError;
  tokens: Tokens;
}

interface Waiting {
  resolve: (ack: AgentAckPayload) => void;
  reject: (e: Error) => void;
}

export class AgentClient extends BaseClient<AgentEvents> {
  /** The conversations this agent holds, by session id. */
  readonly held = new Map<string, HeldState>();
  /** The queue as last told. */
  queue: QueueItem[] = [];
  /** This agent, once connected. */
  agent: Agent | null = null;
  status: "available" | "away" = "available";
  /** The desk as last told. */
  agents: AgentsPayload["agents"] = [];
  private readonly link: Link;
  private waiting = new Map<string, Waiting>();
  /** Conversations asked to `watch` on the current connection. */
  private watched = new Set<string>();
  private state: ConnectionState = "closed";

  /** The agent REST routes (`/api/agent/...`). */
  readonly rest = {
    queue: () => this.request<Schemas["QueueBody"]>("/api/agent/queue"),
    conversations: () => this.request<Schemas["ConversationsBody"]>("/api/agent/conversations"),
    claim: (sessionId: string) =>
      this.request<Ok<"claimConversation", 200>>(`/api/agent/conversations/${enc(sessionId)}/claim`, { method: "POST" }),
    release: (sessionId: string) =>
      this.request<Ok<"releaseConversation", 200>>(`/api/agent/conversations/${enc(sessionId)}/release`, { method: "POST" }),
    resolve: (sessionId: string) =>
      this.request<Ok<"resolveConversation", 200>>(`/api/agent/conversations/${enc(sessionId)}/resolve`, { method: "POST" }),
    sendMessage: (sessionId: string, content: string, clientMessageId?: string) =>
      this.request<Schemas["AgentMessageBody"]>(`/api/agent/conversations/${enc(sessionId)}/messages`, {
        method: "POST",
        body: { content, ...(clientMessageId ? { clientMessageId } : {}) },
      }),
    replies: () => this.request<Schemas["RepliesBody"]>("/api/agent/replies"),
    saveReply: (shortcut: string, content: string) =>
      this.request<Schemas["ReplyBody"]>("/api/agent/replies", { method: "POST", body: { shortcut, content } }),
    deleteReply: async (shortcut: string) => {
      await this.request(`/api/agent/replies/${enc(shortcut)}`, { method: "DELETE" });
    },
    userUsage: (userId: string) => this.request<Schemas["UsageBody"]>(`/api/agent/users/${enc(userId)}/usage`),
  };

  constructor(options: ClientOptions = {}) {
    super(options);
    this.link = new Link({
      auth: this.auth,
      path: "/agent/ws",
      ...(options.WebSocket ? { WebSocket: options.WebSocket } : {}),
      ...(options.backoff ? { backoff: options.backoff } : {}),
      ...(options.heartbeatMs !== undefined ? { heartbeatMs: options.heartbeatMs } : {}),
      onMessage: (m) => this.onMessage(m as unknown as AgentServerMessage),
      onState: (state, detail) => {
        this.state = state;
        this.emit("state", { state, ...detail });
      },
      onAuthLost: (e) => this.authLost(e),
      onDrop: () => this.dropped(new ClosedError("The connection dropped before the server answered")),
    });
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  get connected(): boolean {
    return this.link.open;
  }

  /** Opens the agent socket; resolves with the first `connected` (fails with
   * `agent_only` for an account that is not an agent). */
  connect(): Promise<AgentConnectedPayload> {
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

  close(): void {
    this.link.stop();
    this.auth.close();
    this.dropped(new ClosedError());
  }

  async logout(): Promise<void> {
    this.close();
    await this.auth.logout();
  }

  /** Takes a queued conversation. */
  claim(sessionId: string): Promise<AgentAckPayload> {
    return this.command({ type: "claim", sessionId });
  }

  /** Answers the customer; the ack carries the `agent-message`'s id and seq. */
  reply(sessionId: string, content: string, clientMessageId = newId("a")): Promise<AgentAckPayload> {
    return this.command({ type: "agent-message", sessionId, content, clientMessageId });
  }

  /** Gives the conversation back to the queue. */
  release(sessionId: string): Promise<AgentAckPayload> {
    return this.command({ type: "release", sessionId });
  }

  /** Gives the conversation back to the bot. */
  resolve(sessionId: string): Promise<AgentAckPayload> {
    return this.command({ type: "resolve", sessionId });
  }

  /** `available` or `away` (whether auto-assignment may give this agent conversations). */
  setStatus(status: "available" | "away"): boolean {
    return this.link.send({ type: "status", status });
  }

  /** Tells the customer the agent is (not) typing. */
  typing(sessionId: string, state: boolean): boolean {
    return this.link.send({ type: "typing", sessionId, state });
  }

  protected onTokens(t: Tokens): void {
    this.link.send({ type: "auth", token: t.token });
  }

  protected authLost(e: ApiError): void {
    this.link.stop();
    this.dropped(e);
    this.emit("auth-lost", e);
  }

  private command(message: { type: string; sessionId: string } & Record<string, unknown>): Promise<AgentAckPayload> {
    const requestId = newId("r");
    const promise = new Promise<AgentAckPayload>((resolve, reject) => {
      if (!this.link.send({ ...message, requestId })) {
        reject(new ClosedError("Not connected"));
        return;
      }
      this.waiting.set(requestId, { resolve, reject });
    });
    promise.catch(() => {});
    return promise;
  }

  private dropped(e: Error): void {
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }

  /** Follows a conversation from the last seq this client has of it. */
  private follow(sessionId: string, info: HeldConversation | null): HeldState {
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

  private unfollow(
    sessionId: string,
    reason: AgentEvents["removed"]["reason"],
    mode: ConversationRemovedPayload["mode"] | null = null,
  ): void {
    this.watched.delete(sessionId);
    if (this.held.delete(sessionId)) this.emit("removed", { sessionId, reason, mode });
  }

  private onMessage(m: AgentServerMessage): void {
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
        if (typeof m.seq === "number") return this.accept(m.sessionId, m as unknown as ConversationEvent);
        this.emit("csat", m);
        return;
      case "typing":
        this.emit("typing", { sessionId: m.sessionId, state: m.state });
        return;
      default: {
        const e = m as unknown as ConversationEvent & { sessionId?: string };
        if (e.sessionId && isConversationEvent(e)) this.accept(e.sessionId, e);
      }
    }
  }

  private onConnected(m: AgentConnectedPayload): void {
    this.agent = m.agent;
    this.status = m.status;
    this.watched.clear();
    this.link.healthy();
    const now = new Set(m.conversations.map((c) => c.sessionId));
    for (const sessionId of [...this.held.keys()]) if (!now.has(sessionId)) this.unfollow(sessionId, "not-held");
    this.emit("connected", m);
    for (const c of m.conversations) this.follow(c.sessionId, c);
  }

  private onAck(m: AgentAckPayload): void {
    const w = m.requestId ? this.waiting.get(m.requestId) : undefined;
    if (w && m.requestId) this.waiting.delete(m.requestId);
    if (m.action === "claim") {
      const item = this.queue.find((q) => q.sessionId === m.sessionId);
      this.follow(m.sessionId, item ? { ...item, assignedAt: m.timestamp } as unknown as HeldConversation : null);
    } else if (m.action === "release" || m.action === "resolve") {
      if (m.action === "resolve") this.unfollow(m.sessionId, "resolved", "bot");
      else this.unfollow(m.sessionId, "released", "queued");
    }
    this.emit("ack", m);
    w?.resolve(m);
  }

  private onError(m: AgentErrorPayload): void {
    const w = m.requestId ? this.waiting.get(m.requestId) : undefined;
    if (w && m.requestId) {
      this.waiting.delete(m.requestId);
      w.reject(new ProtocolError(m as unknown as { code: string; message: string }));
    }
    // Taken from under this agent (another instance, a demotion).
    if (m.code === "not_assigned" && m.sessionId && this.held.has(m.sessionId)) this.unfollow(m.sessionId, "not-assigned");
    this.emit("error", m);
  }

  private onHistoryLost(m: AgentHistoryLostPayload): void {
    const held = this.held.get(m.sessionId);
    if (!held) return;
    const applied = held.conversation.skipTo(m.oldestSeq);
    this.emit("history-lost", m);
    for (const e of applied) this.announce(m.sessionId, held, e);
    this.earlierThan(m.sessionId, m.oldestSeq)
      .then((found) => {
        if (this.held.get(m.sessionId) !== held) return;
        const messages = held.conversation.addEarlier(found);
        if (messages.length) this.emit("earlier", { sessionId: m.sessionId, messages });
      })
      .catch(() => {});
  }

  private accept(sessionId: string, e: ConversationEvent): void {
    const held = this.held.get(sessionId);
    if (!held) return;
    for (const applied of held.conversation.accept(e)) this.announce(sessionId, held, applied);
  }

  private announce(sessionId: string, held: HeldState, e: ConversationEvent): void {
    this.emit("event", { sessionId, event: e });
    const conv = held.conversation;
    switch (e.type) {
      case "user-message":
        this.emit("user-message", { sessionId, message: conv.messages.at(-1) as UserEntry });
        break;
      case "agent-message":
        this.emit("agent-message", { sessionId, message: conv.messages.at(-1) as AgentEntry });
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
}

function enc(s: string): string {
  return encodeURIComponent(s);
}
