// Generated from asyncapi/asyncapi.yaml by scripts/generate-types.mjs; do not edit.
// Regenerate with `npm run generate` in clients/typescript.

/**
 * An identifier; safe in a URL, a log line or a key as is.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Id".
 */
export type Id = string;
/**
 * Chosen by the client; identifies a message for acknowledgement and safe resend.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ClientMessageId".
 */
export type ClientMessageId = string;
/**
 * ISO-8601 UTC with milliseconds, e.g. `2025-09-12T10:30:00.000Z`.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Timestamp".
 */
export type Timestamp = string;
/**
 * The event's place in its session's log (1, 2, 3, ...; never reused).
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Seq".
 */
export type Seq = number;
/**
 * A session's latest `seq` (0 for a session with no event yet).
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeadSeq".
 */
export type HeadSeq = number;
/**
 * A non-blank text of at most `MAX_MESSAGE_CHARS` (default 10000) characters.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Content".
 */
export type Content = string;
/**
 * Thumbs up or down.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Rating".
 */
export type Rating = "up" | "down";
/**
 * What the user said about an answer; at most 1000 characters.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "FeedbackComment".
 */
export type FeedbackComment = string;
/**
 * Who answers the conversation - the bot, nobody yet (waiting for a human), or an agent.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Mode".
 */
export type Mode = "bot" | "queued" | "assigned";
/**
 * The conversation's place in the queue; 1 is next in line.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "QueuePosition".
 */
export type QueuePosition = number;
/**
 * 1 (very unhappy) to 5 (very happy).
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "CsatRating".
 */
export type CsatRating = 1 | 2 | 3 | 4 | 5;
/**
 * A stable, machine-readable code from the server's catalogue (every
 * code that can arrive as a WebSocket `error` message); codes never
 * change meaning, messages may be reworded.
 *
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ErrorCode".
 */
export type ErrorCode =
  | "session_not_found"
  | "invalid_token"
  | "token_expired"
  | "token_revoked"
  | "agent_only"
  | "service_unavailable"
  | "invalid_json"
  | "invalid_message"
  | "unknown_type"
  | "invalid_content"
  | "content_too_long"
  | "unsupported_frame"
  | "generation_in_progress"
  | "no_active_generation"
  | "server_shutting_down"
  | "session_expired"
  | "last_seq_ahead"
  | "invalid_feedback"
  | "comment_too_long"
  | "message_not_found"
  | "not_an_answer"
  | "handoff_active"
  | "nothing_to_regenerate"
  | "invalid_csat"
  | "csat_not_requested"
  | "already_claimed"
  | "not_queued"
  | "not_assigned"
  | "agent_at_capacity"
  | "rate_limited"
  | "budget_exhausted"
  | "ai_unavailable"
  | "ai_timeout"
  | "ai_stream_error"
  | "generation_interrupted"
  | "session_store_unavailable";
/**
 * Chosen by the console; echoed in the action's `ack` or `error`.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "RequestId".
 */
export type RequestId = string;
/**
 * The event's place in its session's log (1, 2, 3, ...; never reused).
 */
export type Seq1 = number;
/**
 * Chosen by the client; identifies a message for acknowledgement and safe resend.
 */
export type ClientMessageId1 = string;
/**
 * An identifier; safe in a URL, a log line or a key as is.
 */
export type Id1 = string;
/**
 * ISO-8601 UTC with milliseconds, e.g. `2025-09-12T10:30:00.000Z`.
 */
export type Timestamp1 = string;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "QuotaPayload".
 */
export type QuotaPayload = Quota1 & {
  type: "quota";
  timestamp: Timestamp;
};
/**
 * Seconds the customer may still wait: `position` times the median of recent waits per place in line (each claimed conversation's wait divided by the place it entered the line at, over the last 50 claims, on every instance); `null` until a conversation has been claimed.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "EstimatedWait".
 */
export type EstimatedWait = number | null;
/**
 * ISO-8601 UTC with milliseconds, e.g. `2025-09-12T10:30:00.000Z`.
 */
export type Timestamp2 = string;
/**
 * An identifier; safe in a URL, a log line or a key as is.
 */
export type Id2 = string;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentStatusWord".
 */
export type AgentStatusWord = "available" | "away";
/**
 * An identifier; safe in a URL, a log line or a key as is.
 */
export type Id3 = string;
/**
 * The event's place in its session's log (1, 2, 3, ...; never reused).
 */
export type Seq2 = number;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldUserMessagePayload".
 */
export type HeldUserMessagePayload = UserMessagePayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldStreamStartPayload".
 */
export type HeldStreamStartPayload = StreamStartPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldStreamTokenPayload".
 */
export type HeldStreamTokenPayload = StreamTokenPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldStreamEndPayload".
 */
export type HeldStreamEndPayload = StreamEndPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldStreamReasoningPayload".
 */
export type HeldStreamReasoningPayload = StreamReasoningPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldStreamStatusPayload".
 */
export type HeldStreamStatusPayload = StreamStatusPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldToolActivityPayload".
 */
export type HeldToolActivityPayload = ToolActivityPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldHumanEscalationResponsePayload".
 */
export type HeldHumanEscalationResponsePayload = HumanEscalationResponsePayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldHandoffQueuedPayload".
 */
export type HeldHandoffQueuedPayload = HandoffQueuedPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldAgentJoinedPayload".
 */
export type HeldAgentJoinedPayload = AgentJoinedPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldAgentMessagePayload".
 */
export type HeldAgentMessagePayload = AgentMessagePayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldAgentLeftPayload".
 */
export type HeldAgentLeftPayload = AgentLeftPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldHandoffResolvedPayload".
 */
export type HeldHandoffResolvedPayload = HandoffResolvedPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldHandoffTimeoutPayload".
 */
export type HeldHandoffTimeoutPayload = HandoffTimeoutPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldHandoffCancelledPayload".
 */
export type HeldHandoffCancelledPayload = HandoffCancelledPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldHandoffUnavailablePayload".
 */
export type HeldHandoffUnavailablePayload = HandoffUnavailablePayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldHandoffWaitingPayload".
 */
export type HeldHandoffWaitingPayload = HandoffWaitingPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldQueuePositionPayload".
 */
export type HeldQueuePositionPayload = QueuePositionPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldFeedbackPayload".
 */
export type HeldFeedbackPayload = FeedbackPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldTypingPayload".
 */
export type HeldTypingPayload = TypingPayload & InConversation;
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldCsatRequestPayload".
 */
export type HeldCsatRequestPayload = CsatRequestPayload & InConversation;

/**
 * The user the socket belongs to.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "User".
 */
export interface User {
  id: Id;
  username: string;
  email: string;
  createdAt: Timestamp;
  /**
   * `null` before the first login.
   */
  lastLogin: Timestamp | null;
  isActive: boolean;
}
/**
 * An agent as handoff messages name them.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Agent".
 */
export interface Agent {
  id: Id;
  username: string;
}
/**
 * A customer as the queue and the held conversations name them.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Customer".
 */
export interface Customer {
  id: Id;
  username: string;
}
/**
 * A conversation waiting for an agent.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "QueueItem".
 */
export interface QueueItem {
  sessionId: Id;
  user: Customer;
  position: QueuePosition;
  waitingSince: Timestamp;
  /**
   * The customer's latest chat, if any.
   */
  lastMessage: string | null;
}
/**
 * A conversation an agent holds.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HeldConversation".
 */
export interface HeldConversation {
  sessionId: Id;
  user: Customer;
  assignedAt: Timestamp;
  waitingSince: Timestamp;
  lastMessage: string | null;
  /**
   * The AI's `handoff-summary` of the conversation, kept while this agent holds it; absent until it came (or with `HANDOFF_SUMMARY=false`).
   */
  summary?: string;
}
/**
 * An agent as the desk shows them.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "DeskAgent".
 */
export interface DeskAgent {
  id: Id;
  username: string;
  /**
   * Online and available, online and away, or no console open.
   */
  status: "available" | "away" | "offline";
  /**
   * The conversations they hold now.
   */
  conversations: number;
}
/**
 * A customer's rating of a conversation this agent resolved.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentRating".
 */
export interface AgentRating {
  sessionId: Id;
  /**
   * The customer's username, while the user store knows them.
   */
  customer?: string;
  rating: CsatRating;
  comment?: string;
  answeredAt: Timestamp;
}
/**
 * What the agent socket adds to a conversation's event - the conversation it belongs to.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "InConversation".
 */
export interface InConversation {
  sessionId: Id;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ChatPayload".
 */
export interface ChatPayload {
  type: "chat";
  content: Content;
  /**
   * Optional; with it the sender gets an `ack`, and a resend is recognised.
   */
  clientMessageId?: ClientMessageId | null;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "StopPayload".
 */
export interface StopPayload {
  type: "stop";
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HumanEscalationPayload".
 */
export interface HumanEscalationPayload {
  type: "human-escalation";
  /**
   * Optional and not used (clients of the Node.js server send it).
   */
  message?: string;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffCancelPayload".
 */
export interface HandoffCancelPayload {
  type: "handoff-cancel";
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "PingPayload".
 */
export interface PingPayload {
  type: "ping";
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "FeedbackCommandPayload".
 */
export interface FeedbackCommandPayload {
  type: "feedback";
  messageId: Id;
  rating: Rating;
  /**
   * Optional; blank is no comment.
   */
  comment?: FeedbackComment | null;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "RegeneratePayload".
 */
export interface RegeneratePayload {
  type: "regenerate";
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "TypingCommandPayload".
 */
export interface TypingCommandPayload {
  type: "typing";
  state: boolean;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentTypingCommandPayload".
 */
export interface AgentTypingCommandPayload {
  type: "typing";
  sessionId: Id;
  state: boolean;
  requestId?: RequestId;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "CsatCommandPayload".
 */
export interface CsatCommandPayload {
  type: "csat";
  rating: CsatRating;
  comment?: string | null;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "CsatRequestPayload".
 */
export interface CsatRequestPayload {
  type: "csat-request";
  seq: Seq;
  sessionId: Id;
  agent: Agent;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "CsatPayload".
 */
export interface CsatPayload {
  type: "csat";
  seq: Seq;
  rating: CsatRating;
  comment?: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentCsatPayload".
 */
export interface AgentCsatPayload {
  type: "csat";
  sessionId: Id;
  seq?: Seq1;
  rating: CsatRating;
  comment?: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffSummaryPayload".
 */
export interface HandoffSummaryPayload {
  type: "handoff-summary";
  sessionId: Id;
  summary: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "TypingPayload".
 */
export interface TypingPayload {
  type: "typing";
  state: boolean;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AuthPayload".
 */
export interface AuthPayload {
  type: "auth";
  /**
   * A fresh access token (JWT) of the same user.
   */
  token: string;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ConnectedPayload".
 */
export interface ConnectedPayload {
  type: "connected";
  sessionId: Id;
  user: User;
  /**
   * True when `?sessionId=` resumed that session; false when a new one started.
   */
  resumed: boolean;
  seq: HeadSeq;
  mode: Mode;
  /**
   * The agent holding the conversation when `mode` is `assigned`, else `null`.
   */
  agent: Agent | null;
  quota?: Quota;
  timestamp: Timestamp;
}
/**
 * The user's token usage in the current budget window (absent when it cannot be read).
 */
export interface Quota {
  /**
   * Tokens the user's answers cost in the current budget window (counted also without a budget).
   */
  used: number;
  /**
   * `USER_TOKEN_BUDGET`; `null` without a budget.
   */
  limit: number | null;
  /**
   * When the window turns over; `null` without a budget.
   */
  resetsAt: Timestamp | null;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AckPayload".
 */
export interface AckPayload {
  type: "ack";
  clientMessageId?: ClientMessageId1;
  messageId?: Id1;
  seq: Seq;
  /**
   * Present (true) when the chat had been accepted before; nothing new started.
   */
  duplicate?: boolean;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ErrorPayload".
 */
export interface ErrorPayload {
  type: "error";
  code: ErrorCode;
  /**
   * For people; says exactly what was wrong.
   */
  message: string;
  seq?: Seq;
  messageId?: Id;
  /**
   * With `ai_unavailable`, `ai_timeout` and `session_store_unavailable` ending a generation - whether sending the chat again later may help; with `session_store_unavailable` before close 4503 - true (reconnecting later may help).
   */
  retryable?: boolean;
  /**
   * With `rate_limited` - how long to wait before sending again.
   */
  retryAfterMs?: number;
  resetsAt?: Timestamp1;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HistoryLostPayload".
 */
export interface HistoryLostPayload {
  type: "history-lost";
  fromSeq: HeadSeq;
  oldestSeq: HeadSeq;
  seq: HeadSeq;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "SessionLostPayload".
 */
export interface SessionLostPayload {
  type: "session-lost";
  sessionId: Id;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "PongPayload".
 */
export interface PongPayload {
  type: "pong";
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AuthenticatedPayload".
 */
export interface AuthenticatedPayload {
  type: "authenticated";
  expiresAt: Timestamp;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "UserMessagePayload".
 */
export interface UserMessagePayload {
  type: "user-message";
  seq: Seq;
  messageId: Id;
  clientMessageId?: ClientMessageId;
  content: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "StreamStartPayload".
 */
export interface StreamStartPayload {
  type: "stream-start";
  seq: Seq;
  messageId: Id;
  replyTo: Id;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "StreamTokenPayload".
 */
export interface StreamTokenPayload {
  type: "stream-token";
  seq: Seq;
  messageId: Id;
  token: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "StreamEndPayload".
 */
export interface StreamEndPayload {
  type: "stream-end";
  seq: Seq;
  messageId: Id;
  /**
   * `failed` comes just after an `error` with the reason.
   */
  status: "completed" | "failed" | "cancelled";
  usage?: Usage;
  timestamp: Timestamp;
}
/**
 * What the answer cost, on every answer that reached the AI. `completionTokens` includes `reasoningTokens`; a budget counts `totalTokens`.
 *
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Usage".
 */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  totalTokens: number;
  /**
   * True when the upstream did not say and the server counted with a tokenizer (o200k_base).
   */
  estimated: boolean;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "StreamReasoningPayload".
 */
export interface StreamReasoningPayload {
  type: "stream-reasoning";
  seq: Seq;
  messageId: Id;
  token: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "StreamStatusPayload".
 */
export interface StreamStatusPayload {
  type: "stream-status";
  seq: Seq;
  messageId: Id;
  status: "thinking";
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ToolActivityPayload".
 */
export interface ToolActivityPayload {
  type: "tool-activity";
  seq: Seq;
  messageId: Id;
  toolCallId: string;
  name: string;
  state: "started" | "finished";
  /**
   * The call's whole arguments (as the model wrote them), on `finished`, only with `RELAY_TOOL_ARGUMENTS=true`.
   */
  arguments?: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "Quota".
 */
export interface Quota1 {
  /**
   * Tokens the user's answers cost in the current budget window (counted also without a budget).
   */
  used: number;
  /**
   * `USER_TOKEN_BUDGET`; `null` without a budget.
   */
  limit: number | null;
  /**
   * When the window turns over; `null` without a budget.
   */
  resetsAt: Timestamp | null;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HumanEscalationResponsePayload".
 */
export interface HumanEscalationResponsePayload {
  type: "human-escalation-response";
  seq: Seq;
  message: string;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffQueuedPayload".
 */
export interface HandoffQueuedPayload {
  type: "handoff-queued";
  seq: Seq;
  /**
   * Agents with an agent socket open when the conversation was queued.
   */
  agentsOnline: number;
  position: QueuePosition;
  estimatedWaitSeconds: EstimatedWait;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "QueuePositionPayload".
 */
export interface QueuePositionPayload {
  type: "queue-position";
  seq: Seq;
  position: QueuePosition;
  estimatedWaitSeconds: EstimatedWait;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentJoinedPayload".
 */
export interface AgentJoinedPayload {
  type: "agent-joined";
  seq: Seq;
  agent: Agent;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentMessagePayload".
 */
export interface AgentMessagePayload {
  type: "agent-message";
  seq: Seq;
  messageId: Id;
  content: string;
  agent: Agent;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentLeftPayload".
 */
export interface AgentLeftPayload {
  type: "agent-left";
  seq: Seq;
  agent: Agent;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffResolvedPayload".
 */
export interface HandoffResolvedPayload {
  type: "handoff-resolved";
  seq: Seq;
  agent: Agent;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffTimeoutPayload".
 */
export interface HandoffTimeoutPayload {
  type: "handoff-timeout";
  seq: Seq;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffCancelledPayload".
 */
export interface HandoffCancelledPayload {
  type: "handoff-cancelled";
  seq: Seq;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffUnavailablePayload".
 */
export interface HandoffUnavailablePayload {
  type: "handoff-unavailable";
  seq: Seq;
  /**
   * Why the request did not reach the queue: nobody had an agent socket open, or it came outside the office hours (HANDOFF_HOURS in HANDOFF_TIMEZONE).
   */
  reason: "no_agent_online" | "closed";
  opensAt?: Timestamp2;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "FeedbackPayload".
 */
export interface FeedbackPayload {
  type: "feedback";
  seq: Seq;
  messageId: Id2;
  rating: Rating;
  comment?: FeedbackComment;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "HandoffWaitingPayload".
 */
export interface HandoffWaitingPayload {
  type: "handoff-waiting";
  seq: Seq;
  /**
   * The conversation's place in the queue; 1 is next in line.
   */
  position: number;
  /**
   * Agents with an agent socket open now.
   */
  agentsOnline: number;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ClaimPayload".
 */
export interface ClaimPayload {
  type: "claim";
  sessionId: Id;
  requestId?: RequestId;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentMessageCommandPayload".
 */
export interface AgentMessageCommandPayload {
  type: "agent-message";
  sessionId: Id;
  content: Content;
  clientMessageId?: ClientMessageId;
  requestId?: RequestId;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ReleasePayload".
 */
export interface ReleasePayload {
  type: "release";
  sessionId: Id;
  requestId?: RequestId;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ResolvePayload".
 */
export interface ResolvePayload {
  type: "resolve";
  sessionId: Id;
  requestId?: RequestId;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "WatchPayload".
 */
export interface WatchPayload {
  type: "watch";
  sessionId: Id;
  /**
   * The seq of the last event the console saw (default 0 - everything the log holds).
   */
  lastSeq?: number;
  requestId?: RequestId;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "StatusCommandPayload".
 */
export interface StatusCommandPayload {
  type: "status";
  status: AgentStatusWord;
  requestId?: RequestId;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentStatusPayload".
 */
export interface AgentStatusPayload {
  type: "status";
  status: AgentStatusWord;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentsPayload".
 */
export interface AgentsPayload {
  type: "agents";
  /**
   * At most 200.
   */
  agents: DeskAgent[];
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentConnectedPayload".
 */
export interface AgentConnectedPayload {
  type: "connected";
  agent: Agent;
  /**
   * The conversations this agent holds; their events follow live from now.
   */
  conversations: HeldConversation[];
  status: AgentStatusWord;
  /**
   * HANDOFF_ASSIGN - agents claim, or the server assigns.
   */
  assign: "manual" | "auto";
  /**
   * AGENT_MAX_CONVERSATIONS - a claim beyond it gets agent_at_capacity.
   */
  maxConversations: number;
  /**
   * At most 20. The latest ratings of conversations this agent resolved, newest first, as kept with the transcripts.
   */
  ratings: AgentRating[];
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "QueuePayload".
 */
export interface QueuePayload {
  type: "queue";
  items: QueueItem[];
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ConversationAssignedPayload".
 */
export interface ConversationAssignedPayload {
  type: "conversation-assigned";
  conversation: HeldConversation;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "ConversationRemovedPayload".
 */
export interface ConversationRemovedPayload {
  type: "conversation-removed";
  sessionId: Id;
  mode: Mode;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentAckPayload".
 */
export interface AgentAckPayload {
  type: "ack";
  action: "claim" | "agent-message" | "release" | "resolve" | "watch";
  sessionId: Id;
  requestId?: RequestId;
  messageId?: Id3;
  clientMessageId?: ClientMessageId;
  seq?: Seq2;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentErrorPayload".
 */
export interface AgentErrorPayload {
  type: "error";
  code: ErrorCode;
  message: string;
  sessionId?: Id;
  requestId?: RequestId;
  seq?: Seq;
  messageId?: Id;
  retryable?: boolean;
  timestamp: Timestamp;
}
/**
 * This interface was referenced by `ProtocolSchemas`'s JSON-Schema
 * via the `definition` "AgentHistoryLostPayload".
 */
export interface AgentHistoryLostPayload {
  type: "history-lost";
  sessionId: Id;
  fromSeq: HeadSeq;
  oldestSeq: HeadSeq;
  seq: HeadSeq;
  timestamp: Timestamp;
}

/** What a customer's client may send on /ws. */
export type CustomerClientMessage =
  | ChatPayload
  | StopPayload
  | HumanEscalationPayload
  | HandoffCancelPayload
  | PingPayload
  | AuthPayload
  | FeedbackCommandPayload
  | RegeneratePayload
  | TypingCommandPayload
  | CsatCommandPayload;

/** What the server sends on /ws. */
export type CustomerServerMessage =
  | ConnectedPayload
  | UserMessagePayload
  | AckPayload
  | StreamStartPayload
  | StreamTokenPayload
  | StreamEndPayload
  | ErrorPayload
  | HistoryLostPayload
  | SessionLostPayload
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
  | PongPayload
  | AuthenticatedPayload
  | FeedbackPayload
  | StreamReasoningPayload
  | StreamStatusPayload
  | ToolActivityPayload
  | QuotaPayload
  | TypingPayload
  | CsatRequestPayload
  | CsatPayload;

/** What an agent's console may send on /agent/ws. */
export type AgentClientMessage =
  | ClaimPayload
  | AgentMessageCommandPayload
  | ReleasePayload
  | ResolvePayload
  | WatchPayload
  | StatusCommandPayload
  | PingPayload
  | AuthPayload
  | AgentTypingCommandPayload;

/** What the server sends on /agent/ws. */
export type AgentServerMessage =
  | AgentConnectedPayload
  | QueuePayload
  | ConversationAssignedPayload
  | ConversationRemovedPayload
  | AgentStatusPayload
  | AgentAckPayload
  | AgentErrorPayload
  | AgentHistoryLostPayload
  | PongPayload
  | AuthenticatedPayload
  | HeldUserMessagePayload
  | HeldStreamStartPayload
  | HeldStreamTokenPayload
  | HeldStreamEndPayload
  | HeldHumanEscalationResponsePayload
  | HeldHandoffQueuedPayload
  | HeldAgentJoinedPayload
  | HeldAgentMessagePayload
  | HeldAgentLeftPayload
  | HeldHandoffResolvedPayload
  | HeldHandoffTimeoutPayload
  | HeldHandoffCancelledPayload
  | HeldHandoffUnavailablePayload
  | HeldHandoffWaitingPayload
  | HeldQueuePositionPayload
  | HeldFeedbackPayload
  | HeldStreamReasoningPayload
  | HeldStreamStatusPayload
  | HeldToolActivityPayload
  | HeldTypingPayload
  | HandoffSummaryPayload
  | HeldCsatRequestPayload
  | AgentCsatPayload
  | AgentsPayload;
