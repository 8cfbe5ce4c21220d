// Access tokens that live 2 s: the client refreshes before expiry and hands
// the socket the new token (`auth`), so the socket is never closed with
// 4001; and a REST call or a ticket refused as expired is refreshed and retried.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChatClient, MemoryTokenStore } from "../dist/index.js";
import { PASSWORD, WebSocket, next, sleep, startServer, username } from "./helpers.mjs";

test("tokens are refreshed before they expire, and the socket keeps its authority", { timeout: 90_000 }, async (t) => {
  const server = await startServer({ JWT_EXPIRES_IN: "2s" });
  t.after(() => server.stop());
  const client = new ChatClient({ baseUrl: server.base, WebSocket });
  t.after(() => client.close());
  const name = username("fresh");
  await client.register(name, `${name}@example.com`, PASSWORD);
  const first = client.auth.store.get().token;
  const closes = [];
  let authenticated = 0;
  client.on("state", ({ state, code }) => state === "reconnecting" && closes.push(code));
  client.on("message", (m) => m.type === "authenticated" && (authenticated += 1));
  await client.connect();

  await sleep(5000);
  assert.deepEqual(closes, [], "the socket was closed (4001: its token lapsed)");
  assert.ok(authenticated >= 2, `the socket was re-authorized ${authenticated} times`);
  assert.notEqual(client.auth.store.get().token, first);
  // Still usable: REST and a chat.
  assert.ok(Array.isArray((await client.sessions()).sessions));
  const answered = next(client, "answer");
  await client.send("still here?");
  assert.equal((await answered).status, "completed");
});

test("an expired token is refreshed when a call or a ticket is refused with token_expired", { timeout: 90_000 }, async (t) => {
  const server = await startServer({ JWT_EXPIRES_IN: "1s" });
  t.after(() => server.stop());
  const name = username("stale");
  const first = new ChatClient({ baseUrl: server.base, WebSocket });
  await first.register(name, `${name}@example.com`, PASSWORD);
  first.close();
  // `exp` is in whole seconds and holds through its last second.
  await sleep(2100);
  // This machine's clock believes the tokens are good for an hour (a skewed
  // clock): only the server's refusal can tell.
  const skewed = (tokens) =>
    new MemoryTokenStore({ ...tokens, expiresAt: Date.now() + 3600_000, issuedAt: Date.now() });

  const saved = first.auth.store.get();
  const rest = new ChatClient({ baseUrl: server.base, WebSocket, tokens: skewed(saved) });
  const { sessions } = await rest.sessions();
  assert.ok(Array.isArray(sessions));
  const renewed = rest.auth.store.get();
  assert.notEqual(renewed.token, saved.token);
  assert.notEqual(renewed.refreshToken, saved.refreshToken);
  rest.close();

  // The socket's ticket: its first call is refused, refreshed, bought again.
  await sleep(2100);
  const store = skewed(renewed);
  const client = new ChatClient({ baseUrl: server.base, WebSocket, tokens: store });
  t.after(() => client.close());
  const connected = await client.connect();
  assert.equal(connected.type, "connected");
  assert.notEqual(store.get().token, renewed.token);
});
