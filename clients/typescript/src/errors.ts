// The SDK's errors: a refused REST call or socket command, with the server's
// stable `code` (`{"error": code, "message": text}`), and a client that is
// closed.

/** A REST call the server refused (or could not be reached: `network_error`). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** The whole error body, for fields beside `error` and `message`. */
  readonly body: Record<string, unknown> | null;

  constructor(status: number, code: string | undefined, message: string | undefined, body: Record<string, unknown> | null = null) {
    super(message || code || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code || "network_error";
    this.body = body;
  }
}

/** A socket command the server refused with an `error` message. */
export class ProtocolError extends Error {
  readonly code: string;
  /** The `error` message as it came. */
  readonly payload: Record<string, unknown>;

  constructor(payload: { code: string; message: string } & Record<string, unknown>) {
    super(payload.message || payload.code);
    this.name = "ProtocolError";
    this.code = payload.code;
    this.payload = payload;
  }
}

/** The client was closed (or logged out) before the command got its answer. */
export class ClosedError extends Error {
  readonly code = "client_closed";

  constructor(message = "The client was closed") {
    super(message);
    this.name = "ClosedError";
  }
}
