// A small client typed by openapi-typescript from openapi/openapi.json
// (generated into ./api.d.ts by .ci/ts-client.sh, then `tsc --noEmit`).
// It must stop compiling if the spec loses what clients rely on: the token,
// the refresh token, user.lastLogin (string or null) and the error codes.
import type { components, paths } from "./api";

type Json<P extends keyof paths, M extends keyof paths[P], S extends number> =
  paths[P][M] extends { responses: Record<S, { content: { "application/json": infer B } }> }
    ? B
    : never;

type RegisterBody = paths["/api/auth/register"]["post"]["requestBody"]["content"]["application/json"];
type LoginBody = paths["/api/auth/login"]["post"]["requestBody"]["content"]["application/json"];
type RefreshBody = paths["/api/auth/refresh"]["post"]["requestBody"]["content"]["application/json"];
type Registered = Json<"/api/auth/register", "post", 201>;
type LoggedIn = Json<"/api/auth/login", "post", 200>;
type LoginFailed = Json<"/api/auth/login", "post", 401>;
type RegisterInvalid = Json<"/api/auth/register", "post", 400>;
type Refreshed = Json<"/api/auth/refresh", "post", 200>;

async function post<T>(base: string, path: string, body: unknown, token?: string): Promise<T> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method: "POST", headers, body: JSON.stringify(body) });
  return (await res.json()) as T;
}

export async function register(base: string, body: RegisterBody): Promise<Registered> {
  return post<Registered>(base, "/api/auth/register", body);
}

export async function login(base: string, body: LoginBody): Promise<{ token: string; lastLogin: Date | null }> {
  const auth = await post<LoggedIn | LoginFailed>(base, "/api/auth/login", body);
  if ("error" in auth) {
    // The code is an enum: an unknown one is a compile error.
    const code: "invalid_credentials" = auth.error;
    throw new Error(`${code}: ${auth.message}`);
  }
  const token: string = auth.token;
  const last: string | null | undefined = auth.user.lastLogin;
  return { token, lastLogin: last == null ? null : new Date(last) };
}

export async function refresh(base: string, refreshToken: string): Promise<Refreshed> {
  const body: RefreshBody = { refreshToken };
  const next = await post<Refreshed>(base, "/api/auth/refresh", body);
  const rotated: string = next.refreshToken;
  void rotated;
  return next;
}

/** Which registration field to highlight, from the error code alone. */
export function fieldOf(err: RegisterInvalid): keyof RegisterBody | null {
  switch (err.error) {
    case "invalid_username":
      return "username";
    case "invalid_email":
      return "email";
    case "invalid_password":
      return "password";
    case "invalid_request":
      return null;
    default: {
      // Every code of the enum is handled above.
      const never: never = err.error;
      return never;
    }
  }
}

// The shared schemas are there by name too.
export type User = components["schemas"]["UserView"];
export const example: RegisterBody = { username: "alice", email: "alice@example.com", password: "correct horse battery" };
