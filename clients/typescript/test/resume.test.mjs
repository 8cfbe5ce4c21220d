// A socket cut mid-answer (every connection through the proxy destroyed,
// and the network down for a moment) resumes by itself with `lastSeq`: the
// answer completes, every event is taken once, in seq order, with no gap.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChatClient } from "../dist/index.js";
import { PASSWORD, WebSocket, next, sleep, startProxy, startServer, until, username } from "./helpers.mjs";

test("a socket cut mid-answer resumes with no gap and no duplicate", { timeout: 90_000 }, async (t) => {
  const server = await startServer({ ECHO_TOKEN_DELAY: "80ms" });
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.stop());
  const client = new ChatClient({ baseUrl: proxy.base, WebSocket, backoff: { initialMs: 100, maxMs: 400 } });
  t.after(() => client.close());
  const name = username("resume");
  await client.register(name, `${name}@example.com`, PASSWORD);

  const seqs = [];
  const tokens = [];
  const states = [];
  client.on("event", (e) => seqs.push(e.seq));
  client.on("token", ({ token, seq }) => tokens.push({ token, seq }));
  client.on("state", ({ state, code }) => states.push(code ? `${state}:${code}` : state));
  await client.connect();

  const question = Array.from({ length: 40 }, (_, i) => `word${i}`).join(" ");
  const answered = next(client, "answer", "the answer's end", 30000);
  await client.send(question);
  await until("a few tokens", () => tokens.length >= 5);
  // The network goes away mid-answer, for long enough that tokens are missed.
  proxy.refuse = true;
  proxy.cut();
  const atCut = tokens.length;
  await sleep(800);
  proxy.refuse = false;

  const answer = await answered;
  assert.equal(answer.status, "completed");
  assert.ok(states.some((s) => s.startsWith("reconnecting")), `no reconnect: ${states}`);
  assert.ok(proxy.connections >= 3, "the client never came back through the proxy");

  // Exactly the server's log: every seq once, in order, no gap.
  const log = await client.events(client.sessionId, 0, 1000);
  assert.deepEqual(seqs, log.events.map((e) => e.seq));
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
  const logged = log.events.filter((e) => e.type === "stream-token");
  assert.ok(atCut < logged.length, `the cut came after the answer (${atCut} of ${logged.length} tokens)`);
  assert.deepEqual(tokens.map((x) => x.seq), logged.map((e) => e.seq));
  assert.equal(answer.text, logged.map((e) => e.token).join(""));
  assert.ok(answer.text.includes("word39"), answer.text);
  // One answer, one user message.
  assert.deepEqual(client.conversation.messages.map((m) => m.role), ["user", "assistant"]);
});
