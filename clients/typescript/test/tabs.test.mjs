// Two clients of one user on one conversation (two tabs, or a phone and a
// laptop): each sees every event of the other, and both build the same
// conversation. A third that comes after the log was trimmed gets
// `history-lost` and fills the start from the transcript.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChatClient } from "../dist/index.js";
import { PASSWORD, WebSocket, next, snapshot, startServer, until, username } from "./helpers.mjs";

const done = (client, n) => () =>
  client.conversation.messages.filter((m) => m.role === "assistant" && m.status === "completed").length === n;

test("two clients of one user see the same conversation", { timeout: 90_000 }, async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const name = username("tabs");
  const a = new ChatClient({ baseUrl: server.base, WebSocket });
  t.after(() => a.close());
  await a.register(name, `${name}@example.com`, PASSWORD);
  await a.connect();
  const b = new ChatClient({ baseUrl: server.base, WebSocket, sessionId: a.sessionId });
  t.after(() => b.close());
  await b.login(name, PASSWORD);
  const connected = await b.connect();
  assert.equal(connected.resumed, true);

  await a.send("first from the laptop");
  await until("both see the first answer", () => done(a, 1)() && done(b, 1)());
  await b.send("second from the phone");
  await until("both see the second answer", () => done(a, 2)() && done(b, 2)());

  assert.deepEqual(snapshot(a.conversation), snapshot(b.conversation));
  assert.deepEqual(snapshot(a.conversation).map((m) => m.role), ["user", "assistant", "user", "assistant"]);
  assert.equal(a.conversation.messages[2].content, "second from the phone");
  assert.equal(b.conversation.messages[0].content, "first from the laptop");
});

test("history-lost is filled from the transcript", { timeout: 90_000 }, async (t) => {
  const server = await startServer({ EVENT_LOG_LIMIT: "4" });
  t.after(() => server.stop());
  const name = username("lost");
  const a = new ChatClient({ baseUrl: server.base, WebSocket });
  t.after(() => a.close());
  await a.register(name, `${name}@example.com`, PASSWORD);
  await a.connect();
  for (const [i, text] of ["one two three four", "five six seven eight", "nine ten"].entries()) {
    await a.send(text);
    await until(`answer ${i + 1}`, done(a, i + 1));
  }

  const late = new ChatClient({ baseUrl: server.base, WebSocket, sessionId: a.sessionId });
  t.after(() => late.close());
  await late.login(name, PASSWORD);
  const lost = next(late, "history-lost");
  const earlier = next(late, "earlier");
  await late.connect();
  const h = await lost;
  assert.ok(h.oldestSeq > 1, `nothing was trimmed: ${JSON.stringify(h)}`);
  const filled = await earlier;
  assert.ok(filled.length > 0);
  assert.ok(filled.every((m) => m.earlier && m.seq < h.oldestSeq));
  // The whole conversation again, each message once, in seq order.
  const seqs = late.conversation.messages.map((m) => m.seq);
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
  assert.equal(new Set(late.conversation.messages.map((m) => m.messageId)).size, seqs.length);
  assert.equal(late.conversation.messages[0].content, "one two three four");
  assert.deepEqual(
    late.conversation.messages.map((m) => m.role),
    ["user", "assistant", "user", "assistant", "user", "assistant"],
  );
});
