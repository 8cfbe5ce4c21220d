// Logging in, the REST calls with their bearer token, and keeping that token
// fresh: the access token is refreshed a little before it expires (so an
// open socket is re-authorized with `auth` and never closed with 4001), and
// again whenever a call finds it lapsed. Tokens live in a `TokenStore`; the
// browser one (`StorageTokenStore`) shares them between the tabs of an origin.

import { Emitter } from "./emitter.js";
import { ApiError } from "./errors.js";
import type { components } from "./generated/openapi.js";

export type UserView = components["schemas"]["UserView"];
export type AuthBody = components["schemas"]["AuthBody"];

/** What the SDK keeps of a login. */
export interface Tokens {
  token: string;
  refreshToken: string;
  user: UserView;
  /** When the access token expires, in this machine's clock (ms since the epoch). */
  expiresAt: number;
  /** When it was issued, in this machine's clock (ms since the epoch). */
  issuedAt: number;
}

/** Where tokens are kept between calls (and, in a browser, between tabs). */
export interface TokenStore {
  get(): Tokens | null;
  set(tokens: Tokens | null): void;
}

/** Tokens for this client object only. */
export class MemoryTokenStore implements TokenStore {
  private tokens: Tokens | null;

  constructor(tokens: Tokens | null = null) {
    this.tokens = tokens;
  }

  get(): Tokens | null {
    return this.tokens;
  }

  set(tokens: Tokens | null): void {
    this.tokens = tokens;
  }
}

/** Minimal `Storage` (`localStorage`, `sessionStorage`). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Tokens in `localStorage` (or another `Storage`) under `key`: every tab of
 * the origin shares them, and a reload stays logged in. */
export class StorageTokenStore implements TokenStore {
  readonly key: string;
  private readonly storage: StorageLike;

  constructor(key: string, storage?: StorageLike) {
    this.key = key;
    const s = storage ?? (globalThis as { localStorage?: StorageLike }).localStorage;
    if (!s) throw new Error("StorageTokenStore needs a Storage (localStorage)");
    this.storage = s;
  }

  get(): Tokens | null {
    try {
      const saved = JSON.parse(this.storage.getItem(this.key) ?? "null");
      if (!saved || typeof saved.token !== "string" || typeof saved.refreshToken !== "string") return null;
      // An entry saved without its expiry reads it from the token itself.
      if (typeof saved.expiresAt !== "number") {
        const claims = jwtClaims(saved.token);
        saved.expiresAt = claims.exp ? claims.exp * 1000 : 0;
        saved.issuedAt = claims.iat ? claims.iat * 1000 : saved.expiresAt;
      }
      return saved as Tokens;
    } catch {
      return null;
    }
  }

  set(tokens: Tokens | null): void {
    if (tokens) this.storage.setItem(this.key, JSON.stringify(tokens));
    else this.storage.removeItem(this.key);
  }
}

/** The `exp` and `iat` claims of a JWT (seconds), without checking it. */
export function jwtClaims(token: string): { exp?: number; iat?: number } {
  try {
    const part = token.split(".")[1] ?? "";
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    return JSON.parse(atob(b64));
  } catch {
    return {};
  }
}

/** What a login, registration or refresh answers, as the SDK keeps it. */
export function tokensFrom(body: AuthBody, now = Date.now()): Tokens {
  const seconds = typeof body.expiresInSeconds === "number" ? body.expiresInSeconds : null;
  const exp = jwtClaims(body.token).exp;
  const expiresAt = seconds !== null ? now + seconds * 1000 : exp ? exp * 1000 : now + 3600_000;
  return { token: body.token, refreshToken: body.refreshToken, user: body.user, expiresAt, issuedAt: now };
}

export interface AuthOptions {
  /** The server, e.g. `https://chat.example.com`; in a browser, the page's origin by default. */
  baseUrl?: string;
  /** Where tokens are kept; by default in this object's memory. */
  tokens?: TokenStore;
  /** `fetch`, when not the global one. */
  fetch?: typeof fetch;
  /** Refresh at most this long before expiry (default 60 s; never more than a quarter of the token's life). */
  refreshLeadMs?: number;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** Send the access token (and refresh it once when it lapsed). Default true. */
  auth?: boolean;
}

export interface AuthEvents {
  /** New tokens: after a login, registration or refresh (from this client). */
  tokens: Tokens;
  /** The login is over (the refresh token was refused): log in again. */
  lost: ApiError;
}

/** Codes of a 401 that a refreshed access token may cure. */
const LAPSED = new Set(["token_expired", "invalid_token", "missing_token"]);

/** The REST side of a client: login, tokens, and authenticated calls. */
export class Auth extends Emitter<AuthEvents> {
  readonly baseUrl: string;
  readonly store: TokenStore;
  private readonly fetchFn: typeof fetch;
  private readonly leadMs: number;
  private refreshing: Promise<boolean> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  /** The access token last announced with `tokens`. */
  private known: string | null = null;

  constructor(options: AuthOptions = {}) {
    super();
    const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
    const base = options.baseUrl ?? origin;
    if (!base) throw new Error("baseUrl is required outside a browser");
    this.baseUrl = base.replace(/\/+$/, "");
    this.store = options.tokens ?? new MemoryTokenStore();
    const f = options.fetch ?? globalThis.fetch;
    if (!f) throw new Error("fetch is required");
    this.fetchFn = f.bind(globalThis);
    this.leadMs = options.refreshLeadMs ?? 60_000;
    this.known = this.store.get()?.token ?? null;
    this.schedule();
  }

  /** The logged-in user, or null. */
  get user(): UserView | null {
    return this.store.get()?.user ?? null;
  }

  /** Stops the refresh timer (the tokens stay in the store). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** One REST call; errors are `ApiError`s with the server's code. */
  async request<T>(path: string, options: RequestOptions = {}): Promise<T> {
    if (options.auth === false) return this.send<T>(path, options, null);
    const before = this.store.get();
    if (!before) throw new ApiError(401, "missing_token", "Not logged in");
    // A token already past its expiry (a sleeping laptop) is refreshed first.
    if (before.expiresAt <= Date.now()) await this.refresh().catch(() => false);
    try {
      return await this.send<T>(path, options, this.store.get()?.token ?? null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && LAPSED.has(e.code) && (await this.refresh())) {
        return this.send<T>(path, options, this.store.get()?.token ?? null);
      }
      throw e;
    }
  }

  private async send<T>(path: string, options: RequestOptions, token: string | null): Promise<T> {
    const headers: Record<string, string> = {};
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp: Response;
    try {
      resp = await this.fetchFn(this.baseUrl + path, {
        method: options.method ?? "GET",
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
      });
    } catch {
      throw new ApiError(0, "network_error", "The server cannot be reached. Check your connection.");
    }
    const text = await resp.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!resp.ok) {
      const body = json && typeof json === "object" ? (json as Record<string, unknown>) : null;
      throw new ApiError(resp.status, body?.error as string | undefined, body?.message as string | undefined, body);
    }
    return json as T;
  }

  /** `POST /api/auth/login` with a username or email. */
  async login(username: string, password: string): Promise<AuthBody> {
    const body = await this.request<AuthBody>("/api/auth/login", { method: "POST", body: { username, password }, auth: false });
    this.save(body);
    return body;
  }

  /** `POST /api/auth/register`; logs the new user in. */
  async register(username: string, email: string, password: string): Promise<AuthBody> {
    const body = await this.request<AuthBody>("/api/auth/register", {
      method: "POST",
      body: { username, email, password },
      auth: false,
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
  refresh(): Promise<boolean> {
    if (!this.refreshing) {
      this.refreshing = this.refreshOnce().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async refreshOnce(): Promise<boolean> {
    const saved = this.store.get();
    if (!saved) return false;
    try {
      const body = await this.request<AuthBody>("/api/auth/refresh", {
        method: "POST",
        body: { refreshToken: saved.refreshToken },
        auth: false,
      });
      this.save(body);
      return true;
    } catch (e) {
      // Another tab may have rotated it a moment ago and saved the successor.
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
  async ticket(): Promise<string> {
    const { ticket } = await this.request<{ ticket: string }>("/api/auth/ws-ticket", { method: "POST" });
    return ticket;
  }

  /** `POST /api/auth/logout`: forgets the tokens here and revokes them there. */
  async logout(): Promise<void> {
    const saved = this.store.get();
    this.store.set(null);
    this.schedule();
    if (!saved) return;
    try {
      await this.send("/api/auth/logout", { method: "POST", body: { refreshToken: saved.refreshToken } }, saved.token);
    } catch {
      // The tokens are forgotten here either way.
    }
  }

  /** `POST /api/auth/logout-all`: every token of the user, on every device. */
  async logoutAll(): Promise<void> {
    await this.request("/api/auth/logout-all", { method: "POST" });
    this.store.set(null);
    this.schedule();
  }

  /** Keeps a login (or refresh) answer and plans the next refresh. */
  save(body: AuthBody): Tokens {
    const tokens = tokensFrom(body);
    this.store.set(tokens);
    this.schedule();
    this.known = tokens.token;
    this.emit("tokens", tokens);
    return tokens;
  }

  /** Tokens another tab saved: announced once (an open socket sends them
   * with `auth`), and the next refresh planned from them. */
  private adopt(t: Tokens): void {
    this.schedule();
    if (t.token !== this.known) {
      this.known = t.token;
      this.emit("tokens", t);
    }
  }

  /** How long before expiry these tokens are refreshed. */
  private lead(t: Tokens): number {
    return Math.min(this.leadMs, Math.max(0, (t.expiresAt - t.issuedAt) / 4));
  }

  /** Plans the refresh a little before the stored token expires. */
  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const t = this.store.get();
    if (this.closed || !t) return;
    const wait = Math.max(0, t.expiresAt - this.lead(t) - Date.now());
    this.timer = setTimeout(() => this.due(), Math.min(wait, 2 ** 31 - 1));
    // In Node, a planned refresh alone does not keep the process alive.
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async due(): Promise<void> {
    this.timer = null;
    const t = this.store.get();
    if (this.closed || !t) return;
    // Another tab refreshed already: take its token and plan from it.
    if (t.expiresAt - this.lead(t) > Date.now() + 1000) return this.adopt(t);
    try {
      await this.refresh();
    } catch {
      // Unreachable now: try again shortly while the token still lives
      // (after that, a call or the socket's 4001 refreshes it).
      if (!this.closed && this.store.get()?.expiresAt! > Date.now()) {
        this.timer = setTimeout(() => this.due(), 2000);
        (this.timer as { unref?: () => void }).unref?.();
      }
    }
  }
}
