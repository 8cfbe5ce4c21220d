// Generated from openapi/openapi.json by scripts/generate-types.mjs; do not edit.
// Regenerate with `npm run generate` in clients/typescript.

export interface paths {
    "/api/auth/register": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Register a new account. */
        post: operations["register"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/auth/login": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Log in with a username (or email) and password. */
        post: operations["login"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/auth/verify": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Check a token, sent as `Authorization: Bearer <token>` or as `{"token": ...}`. */
        post: operations["verify"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Dependency health, as the background probes last found it (every
         *     `HEALTH_PROBE_INTERVAL`): answers at once, however slow a dependency.
         */
        get: operations["health"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health/live": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Liveness: the process answers. Checks nothing else, so a slow
         *     dependency never gets the process restarted.
         */
        get: operations["healthLive"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/health/ready": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Readiness: the user and session stores answer and the server is not
         *     shutting down (503 otherwise). An AI that does not answer, or an open
         *     circuit breaker, makes it `degraded` but still 200: chats fail fast
         *     with `ai_unavailable` (or go to the fallback), everything else works.
         *     Reports the background probes' last answers without waiting.
         */
        get: operations["healthReady"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/stats": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Server statistics. */
        get: operations["stats"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/websocket/info": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * How to connect to and talk over the WebSocket endpoints: `/ws` for
         *     customers, and `/agent/ws` for human agents (`agentSocket`).
         */
        get: operations["websocketInfo"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/sessions": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The caller's live sessions, with the latest seq of each. */
        get: operations["listSessions"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/sessions/{id}/events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * A session's events after `afterSeq` (default 0: from the start), at
         *     most `limit` (default 100, at most 1000): the same events, with the same
         *     JSON, as a WebSocket resuming with `lastSeq` would get, so a client can
         *     rebuild a conversation without a socket.
         */
        get: operations["sessionEvents"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/auth/refresh": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Exchange a refresh token for a new access token and a new refresh token. */
        post: operations["refresh"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/auth/logout": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Log out: revoke the Bearer access token, and the refresh token if given. */
        post: operations["logout"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/auth/logout-all": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Log out everywhere: revoke every token of the Bearer token's user
         *     issued before now.
         */
        post: operations["logoutAll"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/auth/ws-ticket": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Buy a single-use WebSocket ticket with the Bearer token, so a browser
         *     sees a bad login here, as JSON, and no token appears in a URL.
         */
        post: operations["createWsTicket"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/queue": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The conversations waiting for an agent, longest waiting first (agents only). */
        get: operations["agentQueue"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/conversations": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The conversations the caller holds (agents only). */
        get: operations["agentConversations"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/conversations/{id}/claim": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Claim a queued conversation: exactly one claim wins, over all
         *     instances; the bot stays muted while the caller holds it.
         */
        post: operations["claimConversation"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/conversations/{id}/release": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Give a conversation the caller holds back to the queue. */
        post: operations["releaseConversation"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/conversations/{id}/resolve": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Resolve a conversation the caller holds: the bot answers the
         *     customer's next chat.
         */
        post: operations["resolveConversation"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/conversations/{id}/messages": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Answer the customer of a conversation the caller holds; every tab of
         *     the customer gets it as `agent-message` with its `seq`.
         */
        post: operations["sendAgentMessage"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/replies": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The caller's canned replies, by shortcut (agents only). */
        get: operations["listReplies"];
        put?: never;
        /**
         * Add a canned reply, or replace the caller's reply with the same
         *     shortcut (agents only; at most 100 per agent).
         */
        post: operations["saveReply"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/replies/{shortcut}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post?: never;
        /** Delete one of the caller's canned replies (agents only). */
        delete: operations["deleteReply"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/sessions/{id}/messages": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * A page of the conversation's transcript: every message, with role
         *     `user`, `assistant` or `agent`, kept beyond the AI's context and the
         *     event log's retention (and after the session itself expired). Pages
         *     go back in time: the first holds the newest `limit` messages
         *     (default 50, at most 200), oldest first; pass its `next` as `before`
         *     for the page before it. The conversation's owner and agents may read
         *     it. Once the customer rated the conversation after an agent resolved
         *     it, `csat` holds that rating on every page.
         */
        get: operations["sessionMessages"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/sessions/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post?: never;
        /**
         * Erase one of the caller's conversations for good: its transcript,
         *     its event log and its session (a running answer is stopped first).
         */
        delete: operations["deleteSession"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/usage": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The caller's token usage in the current budget window (counted also
         *     when no budget is set).
         */
        get: operations["usage"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/agent/users/{id}/usage": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * A user's token usage in the current budget window (agents only); a
         *     user never counted reads as `0`.
         */
        get: operations["userUsage"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "username_taken",
         *       "message": "That username is already taken"
         *     }
         */
        AccountTakenError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "username_taken" | "email_taken";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * AgentMessageBody
         * @description The reply as logged: its id and its `seq` in the conversation.
         * @example {
         *       "messageId": "msg_8f2a",
         *       "seq": 14,
         *       "clientMessageId": "a-17"
         *     }
         */
        AgentMessageBody: {
            messageId: string;
            /** Format: uint64 */
            seq: number;
            clientMessageId?: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "invalid_request",
         *       "message": "The request body must be a JSON object with the documented fields"
         *     }
         */
        AgentMessageInvalidError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "invalid_request" | "invalid_content" | "content_too_long";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * AgentMessageRequest
         * @description An agent's reply to the customer.
         * @example {
         *       "content": "I have sent a courier; it arrives today.",
         *       "clientMessageId": "a-17"
         *     }
         */
        AgentMessageRequest: {
            content: string;
            clientMessageId?: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "agent_only",
         *       "message": "This requires an agent account"
         *     }
         */
        AgentOnlyError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "agent_only";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * AgentSocketInfo
         * @description The human agents' socket. Its authentication, limits, keep-alive, error
         *     codes and close codes are those of the customers' socket above.
         */
        AgentSocketInfo: {
            /** @description The path of the agent socket. */
            endpoint: string;
            /**
             * @description The role the user store must hold for the account; anyone else is
             *     refused before the upgrade with 403 `agent_only`.
             */
            role: string;
            /**
             * @description How a console resumes one conversation: a `watch` message with the
             *     conversation's `sessionId` and the last `lastSeq` it has shown.
             */
            resume: string[];
            messageTypes: components["schemas"]["WsMessageTypes"];
            handoff: components["schemas"]["HandoffInfo"];
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "service_unavailable",
         *       "message": "Authentication is unavailable right now; try again shortly"
         *     }
         */
        AgentUnavailableError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "service_unavailable" | "session_store_unavailable";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "service_unavailable",
         *       "message": "Authentication is unavailable right now; try again shortly"
         *     }
         */
        AgentUsageUnavailableError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "service_unavailable" | "session_store_unavailable" | "usage_unavailable";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * AnswerInfo
         * @description What answers show beside their text, and the token budget.
         */
        AnswerInfo: {
            /**
             * @description `RELAY_REASONING`: `stream-reasoning` carries the model's reasoning;
             *     otherwise only `stream-status: thinking` says it reasons.
             */
            relayReasoning: boolean;
            /** @description `RELAY_TOOL_ARGUMENTS`: a finished `tool-activity` carries its arguments. */
            relayToolArguments: boolean;
            /**
             * Format: uint64
             * @description `USER_TOKEN_BUDGET`: tokens a user's answers may cost per window (0:
             *     no budget). Past it a chat gets an `error` with code
             *     `budget_exhausted` and `resetsAt`.
             */
            tokenBudget: number;
            /** @description `USER_TOKEN_BUDGET_WINDOW`, fixed from the Unix epoch (`1d`, `12h`, ...). */
            tokenBudgetWindow: string;
        };
        /**
         * @description How an assistant's answer ended.
         * @enum {string}
         */
        AnswerStatus: "completed" | "cancelled" | "failed";
        /**
         * AuthBody
         * @description A token and the user it belongs to.
         * @example {
         *       "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VySWQiOiI2NWExYjJjM2Q0ZTVmNmE3YjhjOWQwZTEiLCJ1c2VybmFtZSI6ImFsaWNlIn0.c2lnbmF0dXJl",
         *       "expiresIn": "24h",
         *       "expiresInSeconds": 86400,
         *       "refreshToken": "rt_8Jc2b0kq3yPZr6x1sWdNq4vT9aLm",
         *       "user": {
         *         "id": "65a1b2c3d4e5f6a7b8c9d0e1",
         *         "username": "alice",
         *         "email": "alice@example.com",
         *         "createdAt": "2025-09-12T10:30:00.000Z",
         *         "lastLogin": "2025-09-14T08:02:11.418Z",
         *         "isActive": true
         *       }
         *     }
         */
        AuthBody: {
            /**
             * @description An HS256 JWT; send it as `Authorization: Bearer <token>`. For the
             *     WebSocket, browsers buy a ticket with it (`POST /api/auth/ws-ticket`).
             */
            token: string;
            /** @description The token lifetime as configured in `JWT_EXPIRES_IN` (e.g. `24h`). */
            expiresIn: string;
            /**
             * Format: uint64
             * @description The token lifetime in seconds.
             */
            expiresInSeconds: number;
            /**
             * @description Opaque and single-use: `POST /api/auth/refresh` exchanges it for a new
             *     `token` and a new `refreshToken` (lifetime `REFRESH_TOKEN_TTL`).
             */
            refreshToken: string;
            user: components["schemas"]["UserView"];
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "missing_token",
         *       "message": "Send the token as 'Authorization: Bearer <token>'"
         *     }
         */
        BearerTokenError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "missing_token" | "invalid_token" | "token_expired" | "token_revoked";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "already_claimed",
         *       "message": "Another agent already claimed this conversation"
         *     }
         */
        ClaimConflictError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "already_claimed" | "not_queued" | "agent_at_capacity";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * ConversationBody
         * @description A conversation the agent holds.
         */
        ConversationBody: {
            sessionId: string;
            user: components["schemas"]["CustomerBody"];
            /** @description ISO-8601 UTC, milliseconds: when this agent claimed it. */
            assignedAt: string;
            waitingSince: string;
            lastMessage?: string;
        };
        /**
         * ConversationsBody
         * @description The conversations the caller holds.
         * @example {
         *       "items": [
         *         {
         *           "sessionId": "sess_6bc5d1e2",
         *           "user": {
         *             "id": "65a1b2c3d4e5f6a7b8c9d0e1",
         *             "username": "carol"
         *           },
         *           "assignedAt": "2025-09-12T10:31:12.000Z",
         *           "waitingSince": "2025-09-12T10:30:00.000Z",
         *           "lastMessage": "My order has not arrived"
         *         }
         *       ]
         *     }
         */
        ConversationsBody: {
            items: components["schemas"]["ConversationBody"][];
        };
        /**
         * CustomerBody
         * @description A customer as the queue shows them.
         */
        CustomerBody: {
            id: string;
            username: string;
        };
        /**
         * @description A stable, machine-readable error code. Codes never change meaning;
         *     messages are for people and may be reworded.
         * @enum {string}
         */
        ErrorCode: "invalid_request" | "invalid_username" | "invalid_email" | "invalid_password" | "payload_too_large" | "request_timeout" | "uri_too_long" | "headers_too_large" | "unsupported_media_type" | "not_found" | "method_not_allowed" | "session_not_found" | "origin_not_allowed" | "username_taken" | "email_taken" | "invalid_credentials" | "missing_token" | "invalid_token" | "token_expired" | "token_revoked" | "invalid_refresh_token" | "invalid_ticket" | "registration_closed" | "agent_only" | "websocket_upgrade_required" | "shutting_down" | "service_unavailable" | "invalid_json" | "invalid_message" | "unknown_type" | "invalid_content" | "content_too_long" | "unsupported_frame" | "generation_in_progress" | "no_active_generation" | "server_shutting_down" | "session_expired" | "last_seq_ahead" | "invalid_feedback" | "comment_too_long" | "message_not_found" | "not_an_answer" | "handoff_active" | "nothing_to_regenerate" | "invalid_reply" | "too_many_replies" | "reply_not_found" | "invalid_csat" | "csat_not_requested" | "already_claimed" | "not_queued" | "not_assigned" | "agent_at_capacity" | "rate_limited" | "budget_exhausted" | "usage_unavailable" | "ai_unavailable" | "ai_timeout" | "ai_stream_error" | "generation_interrupted" | "session_store_unavailable" | "internal_error";
        /**
         * EventsBody
         * @description A stretch of a session's conversation.
         * @example {
         *       "sessionId": "sess_f7f9e9c417614dafbc0bedbd5cbad1f4",
         *       "events": [
         *         {
         *           "type": "user-message",
         *           "seq": 1,
         *           "messageId": "msg_673cc3b82d794ad493e6da1274079e7e",
         *           "content": "Hello there",
         *           "timestamp": "2026-11-25T02:03:19.292Z"
         *         },
         *         {
         *           "type": "stream-start",
         *           "seq": 2,
         *           "messageId": "msg_c732374bc98d446684b4d9772e045fd5",
         *           "replyTo": "msg_673cc3b82d794ad493e6da1274079e7e",
         *           "timestamp": "2026-11-25T02:03:19.292Z"
         *         }
         *       ],
         *       "seq": 14,
         *       "oldestSeq": 1,
         *       "historyLost": false,
         *       "nextAfterSeq": 2
         *     }
         */
        EventsBody: {
            sessionId: string;
            /**
             * @description The events after `afterSeq`, oldest first: exactly the JSON messages
             *     the WebSocket sends (`user-message`, `stream-start`, `stream-token`,
             *     `error`, `stream-end`, `human-escalation-response`), each with its `seq`.
             */
            events: unknown[];
            /**
             * Format: uint64
             * @description The session's latest seq.
             */
            seq: number;
            /**
             * Format: uint64
             * @description The oldest seq the server still holds.
             */
            oldestSeq: number;
            /**
             * @description True when events after `afterSeq` were trimmed and are missing from
             *     `events` (a socket would say `history-lost`).
             */
            historyLost: boolean;
            /**
             * Format: uint64
             * @description Pass as `afterSeq` to read on; absent when `events` reaches `seq`.
             */
            nextAfterSeq?: number;
        };
        /**
         * @description Thumbs up or down.
         * @enum {string}
         */
        FeedbackRating: "up" | "down";
        /**
         * HandoffInfo
         * @description How conversations reach agents.
         */
        HandoffInfo: {
            /**
             * @description `HANDOFF_ASSIGN`: `manual` (agents claim) or `auto` (the longest
             *     waiting goes to the available agent with the fewest conversations).
             */
            assign: string;
            /**
             * Format: uint64
             * @description `AGENT_MAX_CONVERSATIONS`: past it a claim gets `agent_at_capacity`.
             */
            maxConversations: number;
            /** @description `HANDOFF_HOURS`, as configured; absent: people answer at any hour. */
            officeHours?: string;
            /**
             * @description `HANDOFF_TIMEZONE`, the IANA zone of `officeHours`; absent with it
             *     (without hours the zone changes nothing).
             */
            timeZone?: string;
        };
        /**
         * HealthBody
         * @description Server health.
         * @example {
         *       "status": "ok",
         *       "uptimeSeconds": 3600,
         *       "checks": {
         *         "database": "ok",
         *         "ai": "ok",
         *         "upstreams": [
         *           {
         *             "role": "primary",
         *             "provider": "fastapi",
         *             "circuit": "closed"
         *           }
         *         ]
         *       }
         *     }
         */
        HealthBody: {
            /** @description `ok`, or `unavailable` when the user store does not answer. */
            status: string;
            /** Format: uint64 */
            uptimeSeconds: number;
            checks: components["schemas"]["HealthChecks"];
        };
        /** HealthChecks */
        HealthChecks: {
            /** @description `ok` or `unavailable`: whether the user store answers. */
            database: string;
            /** @description `ok` (upstream answers), `unreachable`, or `echo` (built-in model, no upstream). */
            ai: string;
            /**
             * @description The configured AI upstreams, primary first, with their circuit
             *     breakers (empty with the echo model).
             */
            upstreams: components["schemas"]["UpstreamHealth"][];
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "internal_error",
         *       "message": "Something went wrong on our side; please try again"
         *     }
         */
        InternalServerError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "internal_error";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "invalid_credentials",
         *       "message": "Invalid username or password"
         *     }
         */
        InvalidCredentialsError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "invalid_credentials";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "invalid_refresh_token",
         *       "message": "The refresh token is invalid, expired or already used; log in again"
         *     }
         */
        InvalidRefreshTokenError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "invalid_refresh_token";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "invalid_request",
         *       "message": "The request body must be a JSON object with the documented fields"
         *     }
         */
        InvalidRequestError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "invalid_request";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * LiveBody
         * @description The process answers.
         * @example {
         *       "status": "ok"
         *     }
         */
        LiveBody: {
            /** @description Always `ok`. */
            status: string;
        };
        /**
         * LoginRequest
         * @description A login request. Neither field has a format rule: a login that breaks
         *     one is only an `invalid_credentials`.
         * @example {
         *       "username": "alice",
         *       "password": "correct horse battery"
         *     }
         */
        LoginRequest: {
            /** @description The username, or the email address. */
            username: string;
            password: string;
        };
        /**
         * LogoutRequest
         * @description A logout request; the body is optional.
         * @example {
         *       "refreshToken": "rt_8Jc2b0kq3yPZr6x1sWdNq4vT9aLm"
         *     }
         */
        LogoutRequest: {
            /** @description The refresh token to revoke with the access token (its whole chain). */
            refreshToken?: string | null;
        };
        /**
         * MessageAgent
         * @description The agent who wrote a message.
         */
        MessageAgent: {
            id: string;
            username: string;
        };
        /**
         * MessageFeedback
         * @description The user's latest rating of an answer.
         */
        MessageFeedback: {
            rating: components["schemas"]["FeedbackRating"];
            /** @description What the user said about the answer, when they said something. */
            comment?: string;
        };
        /**
         * @description Who said a message.
         * @enum {string}
         */
        MessageRole: "user" | "assistant" | "agent";
        /**
         * ModeBody
         * @description Who answers the conversation after the change: `bot`, `queued` or `assigned`.
         * @example {
         *       "sessionId": "sess_6bc5d1e2",
         *       "mode": "assigned"
         *     }
         */
        ModeBody: {
            sessionId: string;
            mode: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "not_assigned",
         *       "message": "This conversation is not assigned to you"
         *     }
         */
        NotAssignedError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "not_assigned";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "payload_too_large",
         *       "message": "The request body is larger than 64 KiB"
         *     }
         */
        PayloadTooLargeError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "payload_too_large";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * QueueBody
         * @description The queue, longest waiting first.
         * @example {
         *       "items": [
         *         {
         *           "sessionId": "sess_6bc5d1e2",
         *           "user": {
         *             "id": "65a1b2c3d4e5f6a7b8c9d0e1",
         *             "username": "carol"
         *           },
         *           "position": 1,
         *           "waitingSince": "2025-09-12T10:30:00.000Z",
         *           "lastMessage": "My order has not arrived"
         *         }
         *       ]
         *     }
         */
        QueueBody: {
            items: components["schemas"]["QueueItemBody"][];
        };
        /**
         * QueueItemBody
         * @description A conversation waiting for an agent.
         */
        QueueItemBody: {
            sessionId: string;
            user: components["schemas"]["CustomerBody"];
            /**
             * Format: uint64
             * @description Its place in line, 1 = next (as its customer is told).
             */
            position: number;
            /** @description ISO-8601 UTC, milliseconds: when it (last) entered the queue. */
            waitingSince: string;
            /** @description The customer's latest chat while waiting (at most 200 characters). */
            lastMessage?: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "rate_limited",
         *       "message": "Too many requests; wait before trying again"
         *     }
         */
        RateLimitedError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "rate_limited";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * ReadyBody
         * @description Whether this instance should get traffic.
         * @example {
         *       "status": "ready",
         *       "checks": {
         *         "users": "ok",
         *         "sessions": "ok",
         *         "ai": "ok",
         *         "upstreams": [
         *           {
         *             "role": "primary",
         *             "provider": "fastapi",
         *             "circuit": "closed"
         *           }
         *         ]
         *       }
         *     }
         */
        ReadyBody: {
            /**
             * @description `ready`; `degraded` (serving, but the AI does not answer or a
             *     circuit breaker is open: chats may fail with `ai_unavailable`);
             *     `unavailable` (a store does not answer); or `shutting_down`.
             */
            status: string;
            checks: components["schemas"]["ReadyChecks"];
        };
        /**
         * ReadyChecks
         * @description What readiness depends on, as the background probes last found it.
         */
        ReadyChecks: {
            /** @description `ok`, `unavailable` or `pending` (not answered yet): the user store. */
            users: string;
            /** @description `ok`, `unavailable` or `pending`: the session store. */
            sessions: string;
            /** @description `ok`, `unreachable`, `echo` or `pending`: the AI service. */
            ai: string;
            /** @description The configured AI upstreams with their circuit breakers. */
            upstreams: components["schemas"]["UpstreamHealth"][];
        };
        /**
         * RefreshRequest
         * @description A refresh request.
         * @example {
         *       "refreshToken": "rt_8Jc2b0kq3yPZr6x1sWdNq4vT9aLm"
         *     }
         */
        RefreshRequest: {
            /** @description The `refreshToken` from login, register or the last refresh. */
            refreshToken: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "invalid_request",
         *       "message": "The request body must be a JSON object with the documented fields"
         *     }
         */
        RegisterInvalidError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "invalid_request" | "invalid_username" | "invalid_email" | "invalid_password";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * RegisterRequest
         * @description A registration request.
         * @example {
         *       "username": "alice",
         *       "email": "alice@example.com",
         *       "password": "correct horse battery"
         *     }
         */
        RegisterRequest: {
            /** @description 3-32 characters of letters, digits, `_`, `.` and `-`. */
            username: string;
            /**
             * Format: email
             * @description A valid email address (at most 254 characters; surrounding spaces are
             *     trimmed); stored lower-cased.
             */
            email: string;
            /** @description 8-128 characters. */
            password: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "registration_closed",
         *       "message": "Registration is closed on this server"
         *     }
         */
        RegistrationClosedError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "registration_closed";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * RepliesBody
         * @description The caller's canned replies, by shortcut (at most 100).
         * @example {
         *       "replies": [
         *         {
         *           "shortcut": "refund",
         *           "content": "Your refund is on its way: it reaches your account within 5 working days."
         *         }
         *       ]
         *     }
         */
        RepliesBody: {
            replies: components["schemas"]["ReplyBody"][];
        };
        /**
         * ReplyBody
         * @description A canned reply: what the console inserts when the agent types `/` and
         *     its shortcut.
         * @example {
         *       "shortcut": "refund",
         *       "content": "Your refund is on its way: it reaches your account within 5 working days."
         *     }
         */
        ReplyBody: {
            /**
             * @description 1-32 characters: lowercase letters, digits, `_`, `-` (a leading `/`
             *     is dropped).
             */
            shortcut: string;
            /** @description 1-2000 characters, not blank. */
            content: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "invalid_request",
         *       "message": "The request body must be a JSON object with the documented fields"
         *     }
         */
        ReplyInvalidError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "invalid_request" | "invalid_reply";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "reply_not_found",
         *       "message": "You have no canned reply with that shortcut"
         *     }
         */
        ReplyNotFoundError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "reply_not_found";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "service_unavailable",
         *       "message": "Authentication is unavailable right now; try again shortly"
         *     }
         */
        ServiceUnavailableError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "service_unavailable";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "session_not_found",
         *       "message": "There is no such session"
         *     }
         */
        SessionNotFoundError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "session_not_found";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * SessionView
         * @description One of the caller's sessions.
         */
        SessionView: {
            id: string;
            /**
             * Format: date-time
             * @description ISO-8601 UTC, milliseconds.
             */
            createdAt: string;
            /**
             * Format: date-time
             * @description ISO-8601 UTC, milliseconds.
             */
            lastActivity: string;
            /** @description Whether a human was asked for. */
            escalated: boolean;
            /**
             * Format: uint64
             * @description The seq of the session's latest event (0 before the first).
             */
            seq: number;
        };
        /**
         * SessionsBody
         * @description The caller's live sessions, most recently active first (at most 100).
         * @example {
         *       "sessions": [
         *         {
         *           "id": "sess_f7f9e9c417614dafbc0bedbd5cbad1f4",
         *           "createdAt": "2026-11-25T02:03:19.292Z",
         *           "lastActivity": "2026-11-25T02:05:41.007Z",
         *           "escalated": false,
         *           "seq": 14
         *         }
         *       ]
         *     }
         */
        SessionsBody: {
            sessions: components["schemas"]["SessionView"][];
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "service_unavailable",
         *       "message": "Authentication is unavailable right now; try again shortly"
         *     }
         */
        SessionsUnavailableError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "service_unavailable" | "session_store_unavailable";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * StatsBody
         * @description Counters since start-up.
         * @example {
         *       "activeConnections": 12,
         *       "activeSessions": 15,
         *       "totalConnections": 340,
         *       "totalMessages": 2210,
         *       "escalatedSessions": 1,
         *       "uptimeSeconds": 3600
         *     }
         */
        StatsBody: {
            /**
             * Format: uint64
             * @description Open WebSocket connections on this instance.
             */
            activeConnections: number;
            /**
             * Format: uint64
             * @description Sessions in the session store (including ones waiting to be resumed).
             */
            activeSessions: number;
            /**
             * Format: uint64
             * @description WebSocket connections accepted since start-up.
             */
            totalConnections: number;
            /**
             * Format: uint64
             * @description Chat messages received since start-up.
             */
            totalMessages: number;
            /**
             * Format: uint64
             * @description Sessions in the store that asked for a human.
             */
            escalatedSessions: number;
            /** Format: uint64 */
            uptimeSeconds: number;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "session_store_unavailable",
         *       "message": "Sessions are unavailable right now; please try again shortly"
         *     }
         */
        StatsUnavailableError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "session_store_unavailable";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * TicketBody
         * @description A WebSocket ticket.
         * @example {
         *       "ticket": "wst_Qm3x8ZbV1pL0sK7dT2rN5yHc",
         *       "expiresInSeconds": 30
         *     }
         */
        TicketBody: {
            /** @description Opaque and single-use: open `/ws?ticket=<ticket>` with it, on any instance. */
            ticket: string;
            /**
             * Format: uint64
             * @description Seconds the ticket can be redeemed (`WS_TICKET_TTL`, default 30).
             */
            expiresInSeconds: number;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "too_many_replies",
         *       "message": "You already keep 100 canned replies; delete one first"
         *     }
         */
        TooManyRepliesError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "too_many_replies";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * TranscriptBody
         * @description A page of a conversation's transcript: every message of the
         *     conversation, kept beyond the AI's context and the event log.
         * @example {
         *       "sessionId": "sess_f7f9e9c417614dafbc0bedbd5cbad1f4",
         *       "messages": [
         *         {
         *           "messageId": "msg_673cc3b82d794ad493e6da1274079e7e",
         *           "role": "user",
         *           "content": "Where is my order?",
         *           "seq": 41,
         *           "timestamp": "2026-11-25T02:03:19.292Z"
         *         },
         *         {
         *           "messageId": "msg_c732374bc98d446684b4d9772e045fd5",
         *           "role": "assistant",
         *           "content": "Let me check that for you.",
         *           "seq": 42,
         *           "timestamp": "2026-11-25T02:03:21.007Z",
         *           "status": "completed",
         *           "feedback": {
         *             "rating": "up",
         *             "comment": "Quick and clear"
         *           }
         *         },
         *         {
         *           "messageId": "msg_8f2a0c51d7e94f0b9a3c2e61b4d7a915",
         *           "role": "agent",
         *           "content": "I have sent a courier; it arrives today.",
         *           "seq": 51,
         *           "timestamp": "2026-11-25T02:05:02.118Z",
         *           "agent": {
         *             "id": "65a1b2c3d4e5f6a7b8c9d0e2",
         *             "username": "agent_bob"
         *           }
         *         }
         *       ],
         *       "next": "1795572199292-41",
         *       "csat": {
         *         "rating": 5,
         *         "comment": "Sorted in five minutes",
         *         "agent": {
         *           "id": "65a1b2c3d4e5f6a7b8c9d0e2",
         *           "username": "agent_bob"
         *         },
         *         "requestedAt": "2026-11-25T02:06:40.500Z",
         *         "answeredAt": "2026-11-25T02:07:02.931Z"
         *       }
         *     }
         */
        TranscriptBody: {
            sessionId: string;
            /**
             * @description Oldest first: the newest `limit` messages before `before` (the newest
             *     of all on the first page).
             */
            messages: components["schemas"]["TranscriptMessage"][];
            /** @description Pass as `before` for the page of older messages; absent on the oldest page. */
            next?: string;
            /**
             * @description The customer's satisfaction rating of the conversation, on every
             *     page once they gave one; absent before.
             */
            csat?: components["schemas"]["TranscriptCsat"] & unknown;
        };
        /**
         * TranscriptCsat
         * @description How the customer rated the conversation after an agent resolved it
         *     (`csat`; a second answer replaced the first).
         */
        TranscriptCsat: {
            /**
             * Format: uint8
             * @description 1 (very unhappy) to 5 (very happy).
             */
            rating: number;
            comment?: string;
            /** @description The agent who resolved the conversation. */
            agent: components["schemas"]["MessageAgent"] & unknown;
            /**
             * Format: date-time
             * @description When the customer was asked (`csat-request`), ISO-8601 UTC, milliseconds.
             */
            requestedAt: string;
            /**
             * Format: date-time
             * @description When the customer answered, ISO-8601 UTC, milliseconds.
             */
            answeredAt: string;
        };
        /**
         * TranscriptMessage
         * @description One message of the transcript.
         */
        TranscriptMessage: {
            /**
             * @description The id its event carried on the socket (`user-message`, the answer's
             *     `stream-start`, or `agent-message`).
             */
            messageId: string;
            role: components["schemas"]["MessageRole"];
            content: string;
            /**
             * Format: uint64
             * @description Its event's seq in the conversation (an answer's: its `stream-start`).
             */
            seq: number;
            /**
             * Format: date-time
             * @description ISO-8601 UTC, milliseconds.
             */
            timestamp: string;
            /** @description Agent messages only. */
            agent?: components["schemas"]["MessageAgent"] & unknown;
            /** @description Assistant messages only. */
            status?: components["schemas"]["AnswerStatus"] & unknown;
            /** @description Assistant messages the user rated: the latest rating. */
            feedback?: components["schemas"]["MessageFeedback"] & unknown;
            /**
             * @description Assistant messages only, `true` once the user asked for another
             *     answer to the same message (`regenerate`): kept here, but no longer
             *     in the AI's context. Absent otherwise.
             */
            superseded?: boolean;
        };
        /**
         * UpstreamHealth
         * @description One AI upstream and its circuit breaker.
         */
        UpstreamHealth: {
            /** @description `primary` or `fallback`. */
            role: string;
            /** @description `fastapi` or `openai`. */
            provider: string;
            /**
             * @description `closed` (chats go to it), `open` (chats skip it: `ai_unavailable` at
             *     once, or the fallback) or `half_open` (the next chat probes it).
             */
            circuit: string;
        };
        /**
         * UsageBody
         * @description A user's token usage in the current budget window.
         * @example {
         *       "used": 1834,
         *       "limit": 50000,
         *       "resetsAt": "2025-09-13T00:00:00.000Z",
         *       "window": "1d"
         *     }
         */
        UsageBody: {
            /**
             * Format: uint64
             * @description Tokens (prompt, completion and reasoning) the user's answers cost in
             *     the current window.
             */
            used: number;
            /**
             * Format: uint64
             * @description `USER_TOKEN_BUDGET`; `null` when no budget is set.
             */
            limit?: number | null;
            /**
             * @description ISO-8601 UTC, milliseconds: when the window turns over; `null` when
             *     no budget is set.
             */
            resetsAt?: string | null;
            /** @description `USER_TOKEN_BUDGET_WINDOW`, as `1d`, `12h`, `30m` or `45s`. */
            window: string;
        };
        /**
         * @description `{"error": code, "message": text}`
         * @example {
         *       "error": "service_unavailable",
         *       "message": "Authentication is unavailable right now; try again shortly"
         *     }
         */
        UsageUnavailableError: {
            /**
             * @description A stable, machine-readable code; codes never change meaning.
             * @enum {string}
             */
            error: "service_unavailable" | "usage_unavailable";
            /** @description A description for people; wording may change, codes do not. */
            message: string;
        };
        /**
         * UserView
         * @description A user as clients see it; the password hash never leaves the server.
         * @example {
         *       "id": "65a1b2c3d4e5f6a7b8c9d0e1",
         *       "username": "alice",
         *       "email": "alice@example.com",
         *       "createdAt": "2025-09-12T10:30:00.000Z",
         *       "lastLogin": "2025-09-14T08:02:11.418Z",
         *       "isActive": true
         *     }
         */
        UserView: {
            id: string;
            username: string;
            /**
             * Format: email
             * @description Lower-cased.
             */
            email: string;
            /**
             * Format: date-time
             * @description ISO-8601 UTC, milliseconds.
             */
            createdAt: string;
            /**
             * Format: date-time
             * @description ISO-8601 UTC, milliseconds; `null` before the first login.
             */
            lastLogin?: string | null;
            isActive: boolean;
        };
        /**
         * VerifyBody
         * @description The result of a successful token verification.
         * @example {
         *       "valid": true,
         *       "user": {
         *         "id": "65a1b2c3d4e5f6a7b8c9d0e1",
         *         "username": "alice",
         *         "email": "alice@example.com",
         *         "createdAt": "2025-09-12T10:30:00.000Z",
         *         "lastLogin": "2025-09-14T08:02:11.418Z",
         *         "isActive": true
         *       }
         *     }
         */
        VerifyBody: {
            /** @description Always `true` (an invalid token gets a 401). */
            valid: boolean;
            user: components["schemas"]["UserView"];
        };
        /**
         * VerifyRequest
         * @description A token verification request (alternatively send `Authorization: Bearer`).
         * @example {
         *       "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VySWQiOiI2NWExYjJjM2Q0ZTVmNmE3YjhjOWQwZTEiLCJ1c2VybmFtZSI6ImFsaWNlIn0.c2lnbmF0dXJl"
         *     }
         */
        VerifyRequest: {
            token: string;
        };
        /** WsCloseCode */
        WsCloseCode: {
            /** Format: uint16 */
            code: number;
            reason: string;
        };
        /** WsErrorCodes */
        WsErrorCodes: {
            /** @description Codes that refuse the upgrade, as an HTTP error with the JSON error body. */
            upgrade: components["schemas"]["ErrorCode"][];
            /** @description Codes of the `error` messages sent on an open connection. */
            messages: components["schemas"]["ErrorCode"][];
        };
        /**
         * WsInfoBody
         * @description How to use the WebSocket endpoint.
         * @example {
         *       "endpoint": "/ws",
         *       "authentication": [
         *         "query:ticket (browsers: buy one with POST /api/auth/ws-ticket; single-use, valid WS_TICKET_TTL)",
         *         "header:Sec-WebSocket-Protocol: chatbot.v1, bearer.<token> (answered with chatbot.v1)",
         *         "query:token (non-browser clients and compatibility; puts the token in URLs and logs)",
         *         "header:Authorization: Bearer <token> (non-browser clients)"
         *       ],
         *       "resume": [
         *         "query:sessionId",
         *         "query:lastSeq"
         *       ],
         *       "messageTypes": {
         *         "client": [
         *           "chat",
         *           "stop",
         *           "human-escalation",
         *           "handoff-cancel",
         *           "ping",
         *           "auth",
         *           "feedback",
         *           "regenerate",
         *           "typing",
         *           "csat"
         *         ],
         *         "server": [
         *           "connected",
         *           "user-message",
         *           "ack",
         *           "stream-start",
         *           "stream-token",
         *           "stream-end",
         *           "error",
         *           "history-lost",
         *           "session-lost",
         *           "human-escalation-response",
         *           "handoff-queued",
         *           "agent-joined",
         *           "agent-message",
         *           "agent-left",
         *           "handoff-resolved",
         *           "handoff-timeout",
         *           "handoff-cancelled",
         *           "handoff-unavailable",
         *           "handoff-waiting",
         *           "queue-position",
         *           "pong",
         *           "authenticated",
         *           "feedback",
         *           "stream-reasoning",
         *           "stream-status",
         *           "tool-activity",
         *           "quota",
         *           "typing",
         *           "csat-request",
         *           "csat"
         *         ]
         *       },
         *       "limits": {
         *         "maxMessageChars": 10000,
         *         "maxFeedbackCommentChars": 1000,
         *         "maxFrameBytes": 65536,
         *         "pingIntervalSeconds": 20,
         *         "pongTimeoutSeconds": 60,
         *         "concurrentGenerations": 1,
         *         "concurrentGenerationsPerUser": 3,
         *         "chatsPerWindow": 20,
         *         "chatWindowSeconds": 60,
         *         "maxConnectionsPerUser": 20,
         *         "maxConnectionsPerIp": 100
         *       },
         *       "errorCodes": {
         *         "upgrade": [
         *           "invalid_request",
         *           "missing_token",
         *           "invalid_token",
         *           "token_expired",
         *           "token_revoked",
         *           "invalid_ticket",
         *           "websocket_upgrade_required",
         *           "shutting_down",
         *           "service_unavailable",
         *           "session_store_unavailable",
         *           "rate_limited"
         *         ],
         *         "messages": [
         *           "session_not_found",
         *           "invalid_token",
         *           "token_expired",
         *           "token_revoked",
         *           "agent_only",
         *           "service_unavailable",
         *           "invalid_json",
         *           "invalid_message",
         *           "unknown_type",
         *           "invalid_content",
         *           "content_too_long",
         *           "unsupported_frame",
         *           "generation_in_progress",
         *           "no_active_generation",
         *           "server_shutting_down",
         *           "session_expired",
         *           "last_seq_ahead",
         *           "invalid_feedback",
         *           "comment_too_long",
         *           "message_not_found",
         *           "not_an_answer",
         *           "handoff_active",
         *           "nothing_to_regenerate",
         *           "invalid_csat",
         *           "csat_not_requested",
         *           "already_claimed",
         *           "not_queued",
         *           "not_assigned",
         *           "agent_at_capacity",
         *           "rate_limited",
         *           "budget_exhausted",
         *           "ai_unavailable",
         *           "ai_timeout",
         *           "ai_stream_error",
         *           "generation_interrupted",
         *           "session_store_unavailable"
         *         ]
         *       },
         *       "closeCodes": [
         *         {
         *           "code": 1001,
         *           "reason": "server shutting down"
         *         },
         *         {
         *           "code": 1001,
         *           "reason": "ping timeout"
         *         },
         *         {
         *           "code": 1009,
         *           "reason": "message too big"
         *         },
         *         {
         *           "code": 1007,
         *           "reason": "invalid UTF-8 in a text frame"
         *         },
         *         {
         *           "code": 1002,
         *           "reason": "protocol violation"
         *         },
         *         {
         *           "code": 4008,
         *           "reason": "fell behind; reconnect with lastSeq"
         *         },
         *         {
         *           "code": 4004,
         *           "reason": "session lost; reconnect for a new session"
         *         },
         *         {
         *           "code": 4503,
         *           "reason": "session store unavailable; reconnect with lastSeq shortly"
         *         },
         *         {
         *           "code": 4001,
         *           "reason": "token_expired"
         *         },
         *         {
         *           "code": 4001,
         *           "reason": "token_revoked"
         *         },
         *         {
         *           "code": 4001,
         *           "reason": "invalid_token"
         *         },
         *         {
         *           "code": 4003,
         *           "reason": "agent_only"
         *         }
         *       ],
         *       "activeConnections": 12,
         *       "agentSocket": {
         *         "endpoint": "/agent/ws",
         *         "role": "agent",
         *         "resume": [
         *           "message:watch.sessionId",
         *           "message:watch.lastSeq"
         *         ],
         *         "messageTypes": {
         *           "client": [
         *             "claim",
         *             "agent-message",
         *             "release",
         *             "resolve",
         *             "watch",
         *             "status",
         *             "ping",
         *             "auth",
         *             "typing"
         *           ],
         *           "server": [
         *             "connected",
         *             "queue",
         *             "conversation-assigned",
         *             "conversation-removed",
         *             "status",
         *             "ack",
         *             "error",
         *             "history-lost",
         *             "pong",
         *             "authenticated",
         *             "user-message",
         *             "stream-start",
         *             "stream-token",
         *             "stream-end",
         *             "human-escalation-response",
         *             "handoff-queued",
         *             "agent-joined",
         *             "agent-message",
         *             "agent-left",
         *             "handoff-resolved",
         *             "handoff-timeout",
         *             "handoff-cancelled",
         *             "handoff-unavailable",
         *             "handoff-waiting",
         *             "queue-position",
         *             "feedback",
         *             "stream-reasoning",
         *             "stream-status",
         *             "tool-activity",
         *             "typing",
         *             "handoff-summary",
         *             "csat-request",
         *             "csat",
         *             "agents"
         *           ]
         *         },
         *         "handoff": {
         *           "assign": "manual",
         *           "maxConversations": 5
         *         }
         *       },
         *       "answers": {
         *         "relayReasoning": false,
         *         "relayToolArguments": false,
         *         "tokenBudget": 0,
         *         "tokenBudgetWindow": "1d"
         *       }
         *     }
         */
        WsInfoBody: {
            /** @description The path of the WebSocket endpoint. */
            endpoint: string;
            /** @description Accepted ways to present the JWT. */
            authentication: string[];
            /**
             * @description Query parameters that resume a session (`sessionId`) and replay what
             *     came after a seq (`lastSeq`).
             */
            resume: string[];
            messageTypes: components["schemas"]["WsMessageTypes"];
            limits: components["schemas"]["WsLimits"];
            errorCodes: components["schemas"]["WsErrorCodes"];
            /** @description Close codes the server uses, besides the standard ones. */
            closeCodes: components["schemas"]["WsCloseCode"][];
            /** Format: uint64 */
            activeConnections: number;
            agentSocket: components["schemas"]["AgentSocketInfo"];
            answers: components["schemas"]["AnswerInfo"];
        };
        /** WsLimits */
        WsLimits: {
            /**
             * Format: uint64
             * @description Maximum characters of a chat message's `content`.
             */
            maxMessageChars: number;
            /**
             * Format: uint64
             * @description Maximum characters of a `feedback` message's `comment`; longer is
             *     refused with `comment_too_long`.
             */
            maxFeedbackCommentChars: number;
            /**
             * Format: uint64
             * @description Maximum bytes of one frame or message; larger closes the connection with 1009.
             */
            maxFrameBytes: number;
            /**
             * Format: uint64
             * @description Seconds between the server's WebSocket pings.
             */
            pingIntervalSeconds: number;
            /**
             * Format: uint64
             * @description Seconds without a pong after which the server closes the connection.
             */
            pongTimeoutSeconds: number;
            /**
             * Format: uint64
             * @description Generations that may run at once per session (over all its tabs).
             */
            concurrentGenerations: number;
            /**
             * Format: uint64
             * @description Generations one user may run at once over all sessions and instances
             *     (`CHAT_MAX_CONCURRENT_PER_USER`; 0: no limit). Past it a chat gets an
             *     `error` with code `rate_limited` and `retryAfterMs`.
             */
            concurrentGenerationsPerUser: number;
            /**
             * Format: uint64
             * @description Chats one user may send per `chatWindowSeconds`, all at once if they
             *     like (`CHAT_MESSAGES_PER_MINUTE`; 0: no limit).
             */
            chatsPerWindow: number;
            /** Format: uint64 */
            chatWindowSeconds: number;
            /**
             * Format: uint64
             * @description Open connections per user and per client address, over all instances
             *     (`WS_MAX_CONNECTIONS_PER_USER`, `WS_MAX_CONNECTIONS_PER_IP`; 0: no
             *     limit). Past either, the upgrade is refused with 429 `rate_limited`.
             */
            maxConnectionsPerUser: number;
            /** Format: uint64 */
            maxConnectionsPerIp: number;
        };
        /** WsMessageTypes */
        WsMessageTypes: {
            /** @description Messages a client may send. */
            client: string[];
            /** @description Messages the server sends. */
            server: string[];
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    register: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["RegisterRequest"];
            };
        };
        responses: {
            /** @description The account was created; here is a token for it. */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AuthBody"];
                };
            };
            /**
             * @description Malformed JSON, or a field breaks its rule (`invalid_request`,
             *     `invalid_username`, `invalid_email`, `invalid_password`).
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RegisterInvalidError"];
                };
            };
            /** @description Registration is turned off (`ALLOW_REGISTRATION=false`): `registration_closed`. */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RegistrationClosedError"];
                };
            };
            /**
             * @description The username (`username_taken`, also for another capitalisation of a
             *     taken name) or email (`email_taken`) is already registered.
             */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AccountTakenError"];
                };
            };
            /** @description The body is over 64 KiB (`payload_too_large`). */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PayloadTooLargeError"];
                };
            };
            /**
             * @description Too many registrations from this address (`rate_limited`,
             *     `REGISTER_PER_IP_PER_HOUR`); `Retry-After` says when to try again.
             */
            429: {
                headers: {
                    "RETRY-AFTER": number;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RateLimitedError"];
                };
            };
            /** @description A dependency failed (`internal_error`). */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InternalServerError"];
                };
            };
            /** @description Password hashing is at capacity (`service_unavailable`); try again shortly. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ServiceUnavailableError"];
                };
            };
        };
    };
    login: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["LoginRequest"];
            };
        };
        responses: {
            /** @description Logged in; `lastLogin` is updated. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AuthBody"];
                };
            };
            /** @description Malformed JSON or missing fields (`invalid_request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRequestError"];
                };
            };
            /**
             * @description Unknown user, wrong password or inactive account, indistinguishably
             *     (`invalid_credentials`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidCredentialsError"];
                };
            };
            /** @description The body is over 64 KiB (`payload_too_large`). */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PayloadTooLargeError"];
                };
            };
            /**
             * @description Too many failed logins (`rate_limited`): for this account from this
             *     address (`LOGIN_MAX_FAILURES_PER_ACCOUNT`), from this address
             *     (`LOGIN_MAX_FAILURES_PER_IP`) or for this account
             *     (`LOGIN_MAX_FAILURES_PER_ACCOUNT_HOURLY`). Answered without checking
             *     the password, even a right one; `Retry-After` says when to try again.
             *     Unknown accounts are throttled the same way.
             */
            429: {
                headers: {
                    "RETRY-AFTER": number;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RateLimitedError"];
                };
            };
            /** @description A dependency failed (`internal_error`). */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InternalServerError"];
                };
            };
            /** @description Password hashing is at capacity (`service_unavailable`); try again shortly. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ServiceUnavailableError"];
                };
            };
        };
    };
    verify: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: {
            content: {
                "application/json": components["schemas"]["VerifyRequest"];
            };
        };
        responses: {
            /** @description The token is valid and its user exists and is active. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["VerifyBody"];
                };
            };
            /** @description The body is not valid JSON (`invalid_request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRequestError"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The body is over 64 KiB (`payload_too_large`). */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PayloadTooLargeError"];
                };
            };
            /**
             * @description Too many verifications from this address (`rate_limited`,
             *     `VERIFY_PER_IP_PER_MINUTE`); `Retry-After` says when to try again.
             */
            429: {
                headers: {
                    "RETRY-AFTER": number;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RateLimitedError"];
                };
            };
            /** @description A dependency failed (`internal_error`). */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InternalServerError"];
                };
            };
        };
    };
    health: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The server and its user store answer. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["HealthBody"];
                };
            };
            /** @description The user store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["HealthBody"];
                };
            };
        };
    };
    healthLive: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The process answers (nothing else is checked). */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["LiveBody"];
                };
            };
        };
    };
    healthReady: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Ready, or degraded: the stores answer and the server is not stopping. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ReadyBody"];
                };
            };
            /** @description A store does not answer, or the server is shutting down. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ReadyBody"];
                };
            };
        };
    };
    stats: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StatsBody"];
                };
            };
            /** @description The session store does not answer (`session_store_unavailable`). */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StatsUnavailableError"];
                };
            };
        };
    };
    websocketInfo: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["WsInfoBody"];
                };
            };
        };
    };
    listSessions: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionsBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description A store does not answer (`service_unavailable`, `session_store_unavailable`). */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionsUnavailableError"];
                };
            };
        };
    };
    sessionEvents: {
        parameters: {
            query?: {
                afterSeq?: number;
                limit?: number;
            };
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["EventsBody"];
                };
            };
            /**
             * @description `afterSeq` or `limit` is not a whole number, or `limit` is 0 or over
             *     1000 (`invalid_request`).
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRequestError"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description No such session, or not the caller's (`session_not_found`). */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionNotFoundError"];
                };
            };
            /** @description A store does not answer (`service_unavailable`, `session_store_unavailable`). */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionsUnavailableError"];
                };
            };
        };
    };
    refresh: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["RefreshRequest"];
            };
        };
        responses: {
            /**
             * @description A new access token and the refresh token's successor (the same body
             *     as login). Within `REFRESH_REUSE_GRACE` of a rotation, the same
             *     refresh token again gets the same successor.
             */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AuthBody"];
                };
            };
            /** @description Malformed JSON or a missing `refreshToken` (`invalid_request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRequestError"];
                };
            };
            /**
             * @description Unknown, expired, revoked or reused refresh token
             *     (`invalid_refresh_token`); a reuse after the grace also revokes every
             *     refresh token descended from the same login.
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRefreshTokenError"];
                };
            };
            /** @description The body is over 64 KiB (`payload_too_large`). */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PayloadTooLargeError"];
                };
            };
            /** @description A dependency failed (`internal_error`). */
            500: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InternalServerError"];
                };
            };
        };
    };
    logout: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: {
            content: {
                "application/json": components["schemas"]["LogoutRequest"];
            };
        };
        responses: {
            /**
             * @description The access token is revoked until it expires (refused everywhere;
             *     sockets opened with it close with 4001), and so is the given refresh
             *     token with its chain.
             */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description The body is not valid JSON (`invalid_request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRequestError"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or already revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The body is over 64 KiB (`payload_too_large`). */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PayloadTooLargeError"];
                };
            };
            /** @description A store does not answer (`service_unavailable`). */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ServiceUnavailableError"];
                };
            };
        };
    };
    logoutAll: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /**
             * @description Every token of the user issued before now is revoked: access tokens
             *     (including ones without `jti`, from the Node server) and refresh tokens.
             */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description A store does not answer (`service_unavailable`). */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ServiceUnavailableError"];
                };
            };
        };
    };
    createWsTicket: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /**
             * @description A single-use ticket for `/ws?ticket=`, bound to the caller and to the
             *     token it was bought with (the socket ends when that token does).
             */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["TicketBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /**
             * @description Too many tickets for this user (`WS_TICKETS_PER_USER_PER_MINUTE`), or
             *     the user or this address already holds as many WebSockets as allowed
             *     (`WS_MAX_CONNECTIONS_PER_USER`, `WS_MAX_CONNECTIONS_PER_IP`):
             *     `rate_limited`; `Retry-After` says when to try again.
             */
            429: {
                headers: {
                    "RETRY-AFTER": number;
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RateLimitedError"];
                };
            };
            /**
             * @description A store does not answer: `session_store_unavailable` while the
             *     session store (with Redis, where tickets live too) is down, else
             *     `service_unavailable`.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionsUnavailableError"];
                };
            };
        };
    };
    agentQueue: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["QueueBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    agentConversations: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ConversationsBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    claimConversation: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ModeBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description No such session (`session_not_found`). */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionNotFoundError"];
                };
            };
            /**
             * @description Another agent won (`already_claimed`), nobody waits (`not_queued`),
             *     or the caller holds `AGENT_MAX_CONVERSATIONS` (`agent_at_capacity`).
             */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ClaimConflictError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    releaseConversation: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ModeBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description No such session (`session_not_found`). */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionNotFoundError"];
                };
            };
            /** @description The caller does not hold the conversation (`not_assigned`). */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["NotAssignedError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    resolveConversation: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ModeBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description No such session (`session_not_found`). */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionNotFoundError"];
                };
            };
            /** @description The caller does not hold the conversation (`not_assigned`). */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["NotAssignedError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    sendAgentMessage: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["AgentMessageRequest"];
            };
        };
        responses: {
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentMessageBody"];
                };
            };
            /**
             * @description Not the JSON this takes (`invalid_request`), or blank
             *     (`invalid_content`) or too long (`content_too_long`) content.
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentMessageInvalidError"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description No such session (`session_not_found`). */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionNotFoundError"];
                };
            };
            /** @description The caller does not hold the conversation (`not_assigned`). */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["NotAssignedError"];
                };
            };
            /** @description The body is larger than 64 KiB (`payload_too_large`). */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PayloadTooLargeError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    listReplies: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RepliesBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    saveReply: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["ReplyBody"];
            };
        };
        responses: {
            /** @description Replaced the reply with that shortcut. */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ReplyBody"];
                };
            };
            /** @description Added. */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ReplyBody"];
                };
            };
            /**
             * @description Not the JSON this takes (`invalid_request`), or a `shortcut` or
             *     `content` that breaks its rule (`invalid_reply`).
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ReplyInvalidError"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description The caller already keeps 100 replies (`too_many_replies`). */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["TooManyRepliesError"];
                };
            };
            /** @description The body is larger than 64 KiB (`payload_too_large`). */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PayloadTooLargeError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    deleteReply: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                shortcut: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description Deleted. */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description No reply of the caller has that shortcut (`reply_not_found`). */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ReplyNotFoundError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUnavailableError"];
                };
            };
        };
    };
    sessionMessages: {
        parameters: {
            query?: {
                /** @description A `next` from an earlier page. */
                before?: string;
                limit?: number;
            };
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["TranscriptBody"];
                };
            };
            /**
             * @description `limit` is not a whole number from 1 to 200, or `before` is not a
             *     cursor this server returned (`invalid_request`).
             */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRequestError"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /**
             * @description No such conversation, or neither the caller's nor the caller an
             *     agent (`session_not_found`).
             */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionNotFoundError"];
                };
            };
            /** @description A store does not answer (`service_unavailable`, `session_store_unavailable`). */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionsUnavailableError"];
                };
            };
        };
    };
    deleteSession: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description The conversation is gone: its transcript, its event log and its session. */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description No such conversation, or not the caller's (`session_not_found`). */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionNotFoundError"];
                };
            };
            /**
             * @description A store does not answer (`service_unavailable`,
             *     `session_store_unavailable`); send it again, what is left is erased then.
             */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SessionsUnavailableError"];
                };
            };
        };
    };
    usage: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["UsageBody"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["UsageUnavailableError"];
                };
            };
        };
    };
    userUsage: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["UsageBody"];
                };
            };
            /** @description The id is not a user id (`invalid_request`). */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["InvalidRequestError"];
                };
            };
            /**
             * @description No token (`missing_token`), an invalid (`invalid_token`), expired
             *     (`token_expired`) or revoked one (`token_revoked`).
             */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["BearerTokenError"];
                };
            };
            /** @description The caller is not an agent (`agent_only`). */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentOnlyError"];
                };
            };
            /** @description A store does not answer. */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AgentUsageUnavailableError"];
                };
            };
        };
    };
}
