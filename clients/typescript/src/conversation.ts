// One conversation as the server's event log tells it: every event is taken
// exactly once and in `seq` order, whichever tab caused it and however often
// a replay and the live feed overlap (a duplicate is dropped, an early event
// waits for the ones before it), and answers are assembled from their
// tokens, parts and end. `accept` returns the events it applied, in order,
// so a client can render them once each.

import type {
  Agent,
  AgentJoinedPayload,
  AgentLeftPayload,
  AgentMessagePayload,
  CsatPayload,
  CsatRequestPayload,
  ErrorPayload,
  FeedbackPayload,
  HandoffCancelledPayload,
  HandoffQueuedPayload,
  HandoffResolvedPayload,
  HandoffTimeoutPayload,
  HandoffUnavailablePayload,
  HandoffWaitingPayload,
  HumanEscalationResponsePayload,
  Mode,
  QueuePositionPayload,
  StreamEndPayload,
  StreamReasoningPayload,
  StreamStartPayload,
  StreamStatusPayload,
  StreamTokenPayload,
  ToolActivityPayload,
  Usage,
  UserMessagePayload,
} from "./generated/asyncapi.js";
import type { components } from "./generated/openapi.js";

export type TranscriptMessage = components["schemas"]["TranscriptMessage"];

/** An event of a conversation's log: it has a `seq` and reaches every tab. */
export type ConversationEvent =
  | UserMessagePayload
  | StreamStartPayload
  | StreamTokenPayload
  | StreamEndPayload
  | StreamReasoningPayload
  | StreamStatusPayload
  | ToolActivityPayload
  | (ErrorPayload & { seq: number })
  | HumanEscalationResponsePayload
  | HandoffQueuedPayload
  | AgentJoinedPayload
  | AgentMessagePayload
  | AgentLeftPayload
  | HandoffResolvedPayload
  | HandoffTimeoutPayload
  | HandoffCancelledPayload
  | HandoffUnavailablePayload
  | HandoffWaitingPayload
  | QueuePositionPayload
  | FeedbackPayload
  | CsatRequestPayload
  | CsatPayload;

const EVENT_TYPES = new Set<string>([
  "user-message", "stream-start", "stream-token", "stream-end", "stream-reasoning", "stream-status",
  "tool-activity", "error", "human-escalation-response", "handoff-queued", "agent-joined", "agent-message",
  "agent-left", "handoff-resolved", "handoff-timeout", "handoff-cancelled", "handoff-unavailable",
  "handoff-waiting", "queue-position", "feedback", "csat-request", "csat",
]);

/** Whether a server message is an event of the conversation's log (and not a
 * reply to one connection: `connected`, `ack`, `history-lost`, an `error`
 * without `seq`, …). */
export function isConversationEvent(m: { type: string; seq?: unknown }): m is ConversationEvent {
  return EVENT_TYPES.has(m.type) && typeof m.seq === "number" && m.seq >= 1;
}

export interface ToolCall {
  toolCallId: string;
  name: string;
  state: "started" | "finished";
  /** The call's arguments, when the server relays them (on `finished`). */
  arguments?: string;
}

/** One answer of the assistant, as its events built it. */
export interface Answer {
  role: "assistant";
  messageId: string;
  /** The user message it answers (a regenerated answer shares it). */
  replyTo: string | null;
  /** Its `stream-start`'s seq (the transcript's seq of the answer). */
  seq: number;
  timestamp: string;
  /** The text so far: the tokens, concatenated once each in seq order. */
  text: string;
  status: "streaming" | "completed" | "failed" | "cancelled";
  /** The model's reasoning, when the server relays it. */
  reasoning: string;
  /** The model is thinking and no text came yet. */
  thinking: boolean;
  tools: ToolCall[];
  usage: Usage | null;
  error: { code: string; message: string; retryable?: boolean } | null;
  feedback: { rating: "up" | "down"; comment?: string } | null;
  /** A regenerated answer replaced it. */
  superseded: boolean;
  /** It came from the transcript (`history-lost`), not from events. */
  earlier?: boolean;
}

export interface UserEntry {
  role: "user";
  messageId: string;
  clientMessageId?: string;
  content: string;
  seq: number;
  timestamp: string;
  earlier?: boolean;
}

export interface AgentEntry {
  role: "agent";
  messageId: string;
  content: string;
  agent: Agent | null;
  seq: number;
  timestamp: string;
  earlier?: boolean;
}

/** A message of the conversation, in order. */
export type Entry = UserEntry | Answer | AgentEntry;

/** Who answers the conversation, and while queued where it stands. */
export interface ModeState {
  mode: Mode;
  agent: Agent | null;
  /** Place in line (1 = next), once the server said it. */
  position?: number | null;
  agentsOnline?: number;
  estimatedWaitSeconds?: number | null;
}

/** Who answers after `m`, given who answered before. */
export function modeAfter(m: { type: string } & Record<string, unknown>, current: ModeState): ModeState {
  switch (m.type) {
    case "agent-left":
      return { mode: "queued", agent: null };
    case "handoff-queued":
      return {
        mode: "queued",
        agent: null,
        position: m.position as number,
        agentsOnline: m.agentsOnline as number,
        estimatedWaitSeconds: m.estimatedWaitSeconds as number | null,
      };
    case "handoff-waiting":
      return { ...current, mode: "queued", agent: null, position: m.position as number, agentsOnline: m.agentsOnline as number };
    case "queue-position":
      return {
        ...current,
        mode: "queued",
        position: m.position as number,
        estimatedWaitSeconds: m.estimatedWaitSeconds as number | null,
      };
    case "agent-joined":
      return { mode: "assigned", agent: m.agent as Agent };
    case "handoff-resolved":
    case "handoff-timeout":
    case "handoff-cancelled":
      return { mode: "bot", agent: null };
    default:
      return current;
  }
}

const MODE_EVENTS = new Set([
  "agent-left", "handoff-queued", "handoff-waiting", "queue-position", "agent-joined", "handoff-resolved",
  "handoff-timeout", "handoff-cancelled",
]);

/** Most events held back while waiting for a missing one. */
const MAX_PENDING = 2000;

export class Conversation {
  /** The seq of the last event applied; every event up to it was applied. */
  lastSeq = 0;
  /** The messages, oldest first. */
  messages: Entry[] = [];
  /** Every answer by its `messageId`. */
  readonly answers = new Map<string, Answer>();
  /** The answer streaming now, if any. */
  running: string | null = null;
  /** The latest answer that ended (what `regenerate` would replace). */
  lastAnswer: string | null = null;
  mode: ModeState = { mode: "bot", agent: null };
  /** Set by `history-lost`: events before this seq are gone from the log
   * (and are filled from the transcript where it still has them). */
  lostBefore: number | null = null;
  private pending = new Map<number, ConversationEvent>();
  /** The latest answer to each user message, by the user message's id. */
  private replies = new Map<string, Answer>();

  /** Forgets everything; the next event expected is `after + 1`. */
  reset(after = 0): void {
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
  accept(m: ConversationEvent): ConversationEvent[] {
    if (typeof m.seq !== "number" || m.seq <= this.lastSeq) return [];
    if (m.seq > this.lastSeq + 1) {
      this.pending.set(m.seq, m);
      // Bounded: a gap that never fills is given up on.
      if (this.pending.size > MAX_PENDING) return this.skipTo(Math.min(...this.pending.keys()));
      return [];
    }
    this.apply(m);
    return [m, ...this.drain()];
  }

  /** The log no longer holds what came before `oldestSeq`: go on from there. */
  skipTo(oldestSeq: number): ConversationEvent[] {
    if (oldestSeq - 1 <= this.lastSeq) return [];
    this.lastSeq = oldestSeq - 1;
    this.lostBefore = oldestSeq;
    return this.drain();
  }

  /** Puts transcript messages (`GET /api/sessions/{id}/messages`) that the
   * log no longer held before everything else; returns those added. */
  addEarlier(messages: TranscriptMessage[]): Entry[] {
    const before = this.lostBefore ?? Infinity;
    const known = new Set(this.messages.map((e) => e.messageId));
    const added: Entry[] = messages
      .filter((t) => typeof t.seq === "number" && t.seq < before && !known.has(t.messageId))
      .sort((a, b) => a.seq - b.seq)
      .map((t) => fromTranscript(t));
    for (const e of added) if (e.role === "assistant") this.answers.set(e.messageId, e);
    this.messages = [...added, ...this.messages];
    return added;
  }

  private drain(): ConversationEvent[] {
    const done: ConversationEvent[] = [];
    for (let next = this.pending.get(this.lastSeq + 1); next; next = this.pending.get(this.lastSeq + 1)) {
      this.pending.delete(next.seq);
      this.apply(next);
      done.push(next);
    }
    for (const seq of this.pending.keys()) if (seq <= this.lastSeq) this.pending.delete(seq);
    return done;
  }

  private apply(m: ConversationEvent): void {
    this.lastSeq = m.seq;
    if (MODE_EVENTS.has(m.type)) this.mode = modeAfter(m as never, this.mode);
    switch (m.type) {
      case "user-message":
        this.messages.push({
          role: "user",
          messageId: m.messageId,
          ...(m.clientMessageId ? { clientMessageId: m.clientMessageId } : {}),
          content: m.content,
          seq: m.seq,
          timestamp: m.timestamp,
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
        const a = m.messageId ? this.answers.get(m.messageId) : undefined;
        if (a) a.error = { code: m.code, message: m.message, ...(m.retryable !== undefined ? { retryable: m.retryable } : {}) };
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
        if (a) a.feedback = { rating: m.rating, ...(m.comment ? { comment: m.comment } : {}) };
        break;
      }
      case "agent-message":
        this.messages.push({
          role: "agent",
          messageId: m.messageId,
          content: m.content,
          agent: m.agent ?? null,
          seq: m.seq,
          timestamp: m.timestamp,
        });
        break;
      case "handoff-queued":
        // A running answer was cancelled first; its end came before.
        this.running = null;
        break;
      default:
        break;
    }
  }

  private startAnswer(m: StreamStartPayload): void {
    const answer: Answer = {
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
      superseded: false,
    };
    // A regenerated answer replies to the same message as the one it replaces.
    const earlier = m.replyTo ? this.replies.get(m.replyTo) : undefined;
    if (earlier) earlier.superseded = true;
    if (m.replyTo) this.replies.set(m.replyTo, answer);
    this.answers.set(m.messageId, answer);
    this.messages.push(answer);
    this.running = m.messageId;
  }

  private toolActivity(m: ToolActivityPayload): void {
    const a = this.answers.get(m.messageId);
    if (!a) return;
    let call = a.tools.find((t) => t.toolCallId === m.toolCallId);
    if (!call) {
      call = { toolCallId: m.toolCallId, name: m.name, state: m.state };
      a.tools.push(call);
    }
    call.state = m.state;
    if (m.arguments !== undefined) call.arguments = m.arguments;
  }
}

function fromTranscript(t: TranscriptMessage): Entry {
  if (t.role === "user") {
    return { role: "user", messageId: t.messageId, content: t.content, seq: t.seq, timestamp: t.timestamp, earlier: true };
  }
  if (t.role === "agent") {
    return {
      role: "agent",
      messageId: t.messageId,
      content: t.content,
      agent: (t.agent as Agent | undefined) ?? null,
      seq: t.seq,
      timestamp: t.timestamp,
      earlier: true,
    };
  }
  return {
    role: "assistant",
    messageId: t.messageId,
    replyTo: null,
    seq: t.seq,
    timestamp: t.timestamp,
    text: t.content,
    status: (t.status as Answer["status"] | undefined) ?? "completed",
    reasoning: "",
    thinking: false,
    tools: [],
    usage: null,
    error: null,
    feedback: (t.feedback as Answer["feedback"] | undefined) ?? null,
    superseded: Boolean(t.superseded),
    earlier: true,
  };
}
