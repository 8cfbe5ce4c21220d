// A chat whose ack is lost (the proxy swallows what the server sends, then
// the connection is cut) is sent again after the reconnect with the same
// clientMessageId: the server acknowledges it as a duplicate and nothing is
// stored or answered twice.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChatClient } from "../dist/index.js";
import { PASSWORD, WebSocket, next, startProxy, startServer, until, username, within } from "./helpers.mjs";

test("a chat resent after a cut is de-duplicated", { timeout: 90_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.stop());
  const client = new ChatClient({ baseUrl: proxy.base, WebSocket, backoff: { initialMs: 100, maxMs: 400 } });
  t.after(() => client.close());
  const name = username("resend");
  await client.register(name, `${name}@example.com`, PASSWORD);
  await client.connect();

  // Read the log straight from the server, past the proxy.
  const log = async () => {
    const r = await fetch(`${server.base}/api/sessions/${client.sessionId}/events?limit=1000`, {
      headers: { Authorization: `Bearer ${client.auth.store.get().token}` },
    });
    return (await r.json()).events;
  };

  proxy.swallow = true;
  const acked = client.send("did this arrive?", { clientMessageId: "c-resend-1" });
  await until("the server stored the chat", async () =>
    (await log()).some((e) => e.type === "user-message" && e.clientMessageId === "c-resend-1"));
  assert.deepEqual(client.pending, ["c-resend-1"], "the ack got through the proxy");
  const answered = next(client, "answer", "the answer", 20000);
  proxy.swallow = false;
  proxy.cut();

  const ack = await within(acked, "the ack of the resent chat");
  assert.equal(ack.duplicate, true);
  assert.equal(ack.clientMessageId, "c-resend-1");
  assert.deepEqual(client.pending, []);
  await answered;

  const events = await log();
  assert.equal(events.filter((e) => e.type === "user-message").length, 1);
  assert.equal(events.filter((e) => e.type === "stream-start").length, 1);
  const users = client.conversation.messages.filter((m) => m.role === "user");
  assert.deepEqual(users.map((m) => m.clientMessageId), ["c-resend-1"]);
  assert.equal(client.conversation.messages.length, 2);
});
