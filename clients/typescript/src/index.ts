// chatbot-server-client: the customer's `ChatClient`, the human agent's
// `AgentClient`, the conversation model they share, and the protocol's
// types generated from the server's OpenAPI and AsyncAPI documents.

export { ChatClient, storageSessionStore } from "./chat-client.js";
export type { ChatClientOptions, ChatEvents, ClientOptions, SessionStore } from "./chat-client.js";
export { AgentClient } from "./agent-client.js";
export type { AgentEvents, HeldState } from "./agent-client.js";
export { Auth, MemoryTokenStore, StorageTokenStore, jwtClaims, tokensFrom } from "./auth.js";
export type { AuthBody, AuthOptions, StorageLike, TokenStore, Tokens, UserView } from "./auth.js";
export { Conversation, isConversationEvent, modeAfter } from "./conversation.js";
export type { AgentEntry, Answer, ConversationEvent, Entry, ModeState, ToolCall, TranscriptMessage, UserEntry } from "./conversation.js";
export { Emitter } from "./emitter.js";
export { ApiError, ClosedError, ProtocolError } from "./errors.js";
export { newId } from "./ids.js";
export type { BackoffOptions, ConnectionState, WebSocketConstructor, WebSocketLike } from "./link.js";
export type * from "./generated/asyncapi.js";
export type { components, operations, paths } from "./generated/openapi.js";
