// The conversation model on its own: events out of order, repeated by an
// overlapping replay, a regenerated answer, a gap the log no longer holds.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Conversation } from "../dist/index.js";

const ts = "2026-01-01T00:00:00.000Z";
const events = [
  { type: "user-message", seq: 1, messageId: "u1", content: "hi", timestamp: ts },
  { type: "stream-start", seq: 2, messageId: "a1", replyTo: "u1", timestamp: ts },
  { type: "stream-token", seq: 3, messageId: "a1", token: "Hel", timestamp: ts },
  { type: "stream-token", seq: 4, messageId: "a1", token: "lo", timestamp: ts },
  { type: "stream-end", seq: 5, messageId: "a1", status: "completed", timestamp: ts },
  { type: "stream-start", seq: 6, messageId: "a2", replyTo: "u1", timestamp: ts },
  { type: "stream-token", seq: 7, messageId: "a2", token: "Hey", timestamp: ts },
  { type: "stream-end", seq: 8, messageId: "a2", status: "cancelled", timestamp: ts },
];

test("events are applied once each, in seq order, whatever order they come in", { timeout: 10_000 }, () => {
  const c = new Conversation();
  const applied = [];
  // Live events first (4, 5), then a replay from the start that overlaps them, twice.
  for (const i of [3, 4, 0, 1, 2, 3, 4, 0, 1, 5, 6, 7, 7]) applied.push(...c.accept(events[i]));
  assert.deepEqual(applied.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(c.lastSeq, 8);
  const [first, second] = [c.answers.get("a1"), c.answers.get("a2")];
  assert.equal(first.text, "Hello");
  assert.equal(first.superseded, true);
  assert.equal(second.text, "Hey");
  assert.equal(second.status, "cancelled");
  assert.equal(c.running, null);
  assert.equal(c.lastAnswer, "a2");
});

test("a gap the log no longer holds is skipped, and the transcript fills it", { timeout: 10_000 }, () => {
  const c = new Conversation();
  assert.deepEqual(c.accept(events[6]), []);
  assert.deepEqual(c.skipTo(6).map((e) => e.seq), []);
  assert.deepEqual(c.accept(events[5]).map((e) => e.seq), [6, 7]);
  const added = c.addEarlier([
    { messageId: "u1", role: "user", content: "hi", seq: 1, timestamp: ts },
    { messageId: "a1", role: "assistant", content: "Hello", seq: 2, timestamp: ts, status: "completed" },
    { messageId: "a2", role: "assistant", content: "Hey", seq: 6, timestamp: ts },
  ]);
  assert.deepEqual(added.map((e) => e.messageId), ["u1", "a1"]);
  assert.deepEqual(c.messages.map((e) => e.messageId), ["u1", "a1", "a2"]);
});
