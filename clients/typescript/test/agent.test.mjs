// The agent's client and the customer's: a request for a human, a claim, a
// reply each way (the agent's socket cut in between and resumed with
// `watch`), and the resolve that gives the conversation back to the bot.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AgentClient, ChatClient } from "../dist/index.js";
import { PASSWORD, WebSocket, startProxy, startServer, until, username } from "./helpers.mjs";

test("an agent takes a conversation over and gives it back", { timeout: 90_000 }, async (t) => {
  const server = await startServer({ HANDOFF: "on" });
  t.after(() => server.stop());
  const proxy = await startProxy(server.port);
  t.after(() => proxy.stop());

  const agentName = username("agent");
  const agent = new AgentClient({ baseUrl: proxy.base, WebSocket, backoff: { initialMs: 100, maxMs: 400 } });
  t.after(() => agent.close());
  await agent.register(agentName, `${agentName}@example.com`, PASSWORD);
  const promoted = server.cli("users", "set-role", agentName, "agent");
  assert.equal(promoted.status, 0, promoted.stderr);
  await agent.connect();

  const customerName = username("cust");
  const customer = new ChatClient({ baseUrl: server.base, WebSocket });
  t.after(() => customer.close());
  await customer.register(customerName, `${customerName}@example.com`, PASSWORD);
  await customer.connect();
  const modes = [];
  customer.on("handoff", (h) => modes.push(h.mode));

  assert.ok(customer.escalate("a person, please"));
  await until("the customer is queued", () => customer.conversation.mode.mode === "queued");
  await until("the agent sees the queue", () => agent.queue.some((q) => q.sessionId === customer.sessionId));

  const ack = await agent.claim(customer.sessionId);
  assert.equal(ack.action, "claim");
  await until("the customer sees the agent", () => customer.conversation.mode.mode === "assigned");
  assert.equal(customer.conversation.mode.agent.username, agentName);

  await agent.reply(customer.sessionId, "Hello, I am here.");
  const fromAgent = await until("the agent's message", () =>
    customer.conversation.messages.find((m) => m.role === "agent"));
  assert.equal(fromAgent.content, "Hello, I am here.");

  // The agent's network drops; the customer writes meanwhile.
  proxy.refuse = true;
  proxy.cut();
  await customer.send("my parcel is late");
  proxy.refuse = false;
  const held = () => agent.held.get(customer.sessionId);
  await until("the agent got the message after resuming", () =>
    held()?.conversation.messages.some((m) => m.role === "user" && m.content === "my parcel is late"));
  const conv = held().conversation;
  assert.deepEqual(
    conv.messages.map((m) => `${m.role}:${m.content}`),
    ["agent:Hello, I am here.", "user:my parcel is late"],
  );
  await until("both are at the same seq", () => conv.lastSeq === customer.conversation.lastSeq);

  await until("the agent is connected", () => agent.connected);
  await agent.resolve(customer.sessionId);
  await until("the bot is back", () => customer.conversation.mode.mode === "bot");
  assert.equal(agent.held.size, 0);
  assert.deepEqual(modes.filter((m, i) => m !== modes[i - 1]), ["bot", "queued", "assigned", "bot"]);
  assert.ok((await agent.rest.queue()).items.length === 0);
});
