// A WebSocket that heals itself: each attempt buys a single-use ticket
// (`POST /api/auth/ws-ticket`, so no token sits in a URL and a lapsed login
// shows up as a JSON 401), reconnects with exponential backoff and jitter,
// refreshes the token on close 4001, and notices a connection that went
// silent (a cut network sends no close) with an application-level ping.

import type { Auth } from "./auth.js";
import { ApiError } from "./errors.js";

/** What the SDK needs of a WebSocket: the browser's, Node 22's global one, or
 * the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface BackoffOptions {
  /** The first retry's delay (default 500 ms). */
  initialMs?: number;
  /** The longest delay (default 15 s). */
  maxMs?: number;
}

export interface LinkOptions {
  auth: Auth;
  /** `/ws` or `/agent/ws`. */
  path: string;
  /** Query parameters besides the ticket, read at each attempt. */
  query?: () => Record<string, string>;
  WebSocket?: WebSocketConstructor;
  backoff?: BackoffOptions;
  /** How often to ping an idle connection (default 20 s); silent for twice
   * as long plus 5 s, it is taken for dead and replaced. 0 turns it off. */
  heartbeatMs?: number;
  onMessage: (m: Record<string, unknown> & { type: string }) => void;
  onState: (state: ConnectionState, detail?: { code?: number; reason?: string }) => void;
  /** The login is over (or the account may not use this socket). */
  onAuthLost: (e: ApiError) => void;
  /** The connection dropped (commands waiting for its answers fail). */
  onDrop?: () => void;
}

const OPEN = 1;

export class Link {
  private readonly opts: LinkOptions;
  private readonly WS: WebSocketConstructor;
  private ws: WebSocketLike | null = null;
  private attempt = 0;
  private stopped = true;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private beat: ReturnType<typeof setInterval> | null = null;
  private lastFrame = 0;
  /** Counts connections, so late events of an old one are ignored. */
  private generation = 0;

  constructor(opts: LinkOptions) {
    this.opts = opts;
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error("No WebSocket here: pass one (e.g. the `ws` package) as the `WebSocket` option");
    this.WS = WS;
  }

  get open(): boolean {
    return Boolean(this.ws && this.ws.readyState === OPEN);
  }

  /** Which connection is current (changes at every attempt). */
  get connection(): number {
    return this.generation;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimers();
    this.drop(1000);
    this.opts.onState("closed");
  }

  /** Drops the current connection and connects again at once (e.g. to
   * resume from another `lastSeq`). */
  restart(): void {
    if (this.stopped) return;
    this.drop(1000);
    this.retry(0);
  }

  /** The server said `connected`: the next failure starts the backoff anew. */
  healthy(): void {
    this.attempt = 0;
  }

  /** Sends one JSON message; false when not connected. */
  send(message: object): boolean {
    if (!this.ws || this.ws.readyState !== OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const generation = ++this.generation;
    this.opts.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ticket: string;
    try {
      ticket = await this.opts.auth.ticket();
    } catch (e) {
      if (generation !== this.generation || this.stopped) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return this.lost(e);
      return this.retry();
    }
    if (generation !== this.generation || this.stopped) return;
    const q = new URLSearchParams({ ticket, ...(this.opts.query?.() ?? {}) });
    const url = `${this.opts.auth.baseUrl.replace(/^http/, "ws")}${this.opts.path}?${q}`;
    let ws: WebSocketLike;
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
      let m: unknown;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (m && typeof m === "object" && typeof (m as { type?: unknown }).type === "string") {
        this.opts.onMessage(m as Record<string, unknown> & { type: string });
      }
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      void this.closed(ev.code, ev.reason);
    };
  }

  private async closed(code: number, reason: string): Promise<void> {
    this.ws = null;
    this.stopBeat();
    this.opts.onDrop?.();
    if (this.stopped) return;
    this.opts.onState("reconnecting", { code, reason });
    if (code === 4003) {
      return this.lost(new ApiError(403, "agent_only", "This account may not use the agent socket"));
    }
    if (code === 4001) {
      // The token expired or was revoked: a refresh tells which.
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

  private lost(e: ApiError): void {
    this.stopped = true;
    this.clearTimers();
    this.drop(1000);
    this.opts.onState("closed");
    this.opts.onAuthLost(e);
  }

  /** Plans the next attempt: exponential backoff with "equal jitter" (half
   * the delay fixed, half random), so tabs that dropped together do not
   * come back together. */
  private retry(delay?: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const initial = this.opts.backoff?.initialMs ?? 500;
    const max = this.opts.backoff?.maxMs ?? 15_000;
    const base = Math.min(max, initial * 2 ** this.attempt);
    const wait = delay ?? base / 2 + Math.random() * (base / 2);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, wait);
  }

  private startHeartbeat(ws: WebSocketLike): void {
    this.stopBeat();
    const every = this.opts.heartbeatMs ?? 20_000;
    if (!every) return;
    this.beat = setInterval(() => {
      if (this.ws !== ws) return this.stopBeat();
      if (Date.now() - this.lastFrame > 2 * every + 5000) {
        // Nothing for too long: the network is gone without a close.
        this.drop(4000);
        this.opts.onDrop?.();
        this.opts.onState("reconnecting", { code: 4000, reason: "silent connection" });
        return this.retry();
      }
      this.send({ type: "ping" });
    }, every);
  }

  private stopBeat(): void {
    if (this.beat) clearInterval(this.beat);
    this.beat = null;
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.stopBeat();
  }

  /** Forgets the current socket (its late events are ignored) and closes it. */
  private drop(code: number): void {
    const ws = this.ws;
    this.ws = null;
    this.stopBeat();
    this.generation += 1;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(code);
    } catch {
      // Closing a socket that never opened may throw; it is gone either way.
    }
  }
}
