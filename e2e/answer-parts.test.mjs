// A reasoning model's whole answer on the customer page, in headless
// Chromium: "Thinking…" while it reasons, its two tool calls, the upstream's
// own usage, and the token budget that refuses the next chat. .ci/e2e.sh
// runs this against a second server whose AI is e2e/mock-openai.mjs, with
// RELAY_REASONING and RELAY_TOOL_ARGUMENTS on and a small USER_TOKEN_BUDGET:
//   BASE_URL        that server
//   MOCK_URL        the mock upstream (its /requests counts the AI's requests)
//   TOKEN_BUDGET    the server's USER_TOKEN_BUDGET, below the answer's usage
//   CHROMIUM, ARTIFACTS as for handoff.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { ANSWER } from "./mock-openai.mjs";
import { inChromium, open, registerCustomer, say, step, until, visible } from "./lib.mjs";

const BASE = process.env.BASE_URL;
const MOCK = process.env.MOCK_URL;
const BUDGET = Number(process.env.TOKEN_BUDGET);

const reasoning = ANSWER.reasoning.join("");
const text = ANSWER.text.join("");
const usage = ANSWER.usage;
/** The tool lines as the page shows them once finished, arguments as their title. */
const finishedTools = ANSWER.tools.map((t) => ({
  state: "finished", line: `✓ ${t.name}`, title: t.arguments.join(""),
}));

const completions = async () => (await (await fetch(`${MOCK}/requests`)).json()).completions;

/** The answer as the page shows it now: a snapshot of the last bot message. */
function lastAnswer(page) {
  return page.$eval("#messages", snapshotOf);
}

/** Runs in the page: what the last answer shows (also used by the recorder). */
function snapshotOf(list) {
  const li = [...list.querySelectorAll("li.msg.bot")].at(-1);
  if (!li) return null;
  return {
    status: li.dataset.status || "streaming",
    thinking: Boolean(li.querySelector(".thinking")),
    text: li.querySelector(".text").textContent,
    reasoning: li.querySelector("details.reasoning .reasoning-text")?.textContent ?? null,
    tools: [...li.querySelectorAll("li.tool")].map((t) => ({
      state: t.dataset.state, line: t.textContent, title: t.title,
    })),
    usage: li.querySelector(".usage")?.textContent ?? null,
  };
}

/** Records every change of the last answer as the page renders it (each
 * server message is its own task, so each gets its own snapshot): the order
 * of what was shown, which polling could miss. */
async function record(page) {
  await page.evaluate((source) => {
    // eslint-disable-next-line no-new-func
    const snapshot = new Function(`return (${source})`)();
    const list = document.getElementById("messages");
    window.timeline = [];
    let last = "";
    new MutationObserver(() => {
      const s = snapshot(list);
      const key = JSON.stringify(s);
      if (s && key !== last) window.timeline.push(s);
      last = key;
    }).observe(list, { childList: true, subtree: true, characterData: true, attributes: true });
  }, snapshotOf.toString());
}

/** The next UTC midnight, where a `1d` budget window ends. */
function nextUtcMidnight() {
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)).toISOString();
}

test("a reasoning model's answer: thinking, tools, upstream usage, then the budget refuses", { timeout: 120000 }, async () => {
  assert.ok(BASE && MOCK && BUDGET > 0, "BASE_URL, MOCK_URL and TOKEN_BUDGET are required");
  assert.ok(usage.total > BUDGET, "the mock's answer must use the budget up");
  await inChromium(scenario);
});

async function scenario(browser) {
  // A fixed locale and zone, so the budget line's reset time reads 00:00.
  const context = await browser.newContext({
    viewport: { width: 900, height: 820 }, locale: "en-GB", timezoneId: "UTC",
  });
  const dana = await open(context, "parts-customer", "/");
  const budget = BUDGET.toLocaleString("en-GB");

  await step("a customer registers and sees the whole budget left", async () => {
    await registerCustomer(dana, "dana");
    await visible(dana, "#quota", `Tokens: 0 of ${budget} (${budget} left) · resets 00:00`);
  });

  await step("'Thinking…' shows while the model reasons, its reasoning folded under it", async () => {
    await record(dana);
    await say(dana, "Where is my order A-1001, and do I get a refund?");
    await visible(dana, "#messages li.msg.bot .thinking", "Thinking…");
    // Seen mid-reasoning: part of it relayed, no text yet.
    await until("Thinking… with the reasoning half streamed", async () => {
      const a = await lastAnswer(dana);
      return a.thinking && a.text === "" && a.reasoning && a.reasoning.length < reasoning.length;
    });
  });

  await step("both tool calls show while they run, then as finished with their arguments", async () => {
    await until("both tool calls running", async () => {
      const a = await lastAnswer(dana);
      return a.tools.length === 2 && a.tools.every((t) => t.state === "started");
    });
    const running = (await lastAnswer(dana)).tools.map((t) => t.line);
    assert.deepEqual(running, ANSWER.tools.map((t) => `⚙ ${t.name} …`));
    await until("both tool calls finished", async () =>
      (await lastAnswer(dana)).tools.every((t) => t.state === "finished"));
    assert.deepEqual((await lastAnswer(dana)).tools, finishedTools);
  });

  await step("'Thinking…' goes when the text starts, and the answer completes", async () => {
    const done = await until("the completed answer", async () => {
      const a = await lastAnswer(dana);
      return a.status === "completed" && a.usage !== null ? a : null;
    });
    assert.equal(done.text, text);
    assert.equal(done.reasoning, reasoning, "the whole reasoning is relayed");
    assert.equal(done.thinking, false);
    const timeline = await dana.evaluate(() => window.timeline);
    const firstText = timeline.findIndex((s) => s.text !== "");
    assert.ok(firstText > 0, "the text came after something else");
    const before = timeline.slice(0, firstText);
    assert.ok(
      before.some((s) => s.thinking && s.tools.length === 2 && s.tools.every((t) => t.state === "finished")),
      "Thinking… stayed up until the text, through the tool calls",
    );
    assert.equal(timeline[firstText].text, ANSWER.text[0], "seen as the first token arrived");
    assert.equal(timeline[firstText].status, "streaming");
    assert.deepEqual(timeline.slice(firstText).filter((s) => s.thinking), [], "no Thinking… beside text");
  });

  await step("the usage line gives the upstream's count, not an estimate; the budget is used up", async () => {
    const line = dana.locator("#messages li.msg.bot .usage");
    assert.equal(await line.textContent(), `${usage.total} tokens, ${usage.reasoning} reasoning`);
    assert.equal(await line.getAttribute("title"), `prompt ${usage.prompt} · completion ${usage.completion}`);
    const used = usage.total.toLocaleString("en-GB");
    await visible(dana, "#quota.bad", `Tokens: ${used} of ${budget} (0 left) · resets 00:00`);
  });

  await step("over the budget, the next chat is refused with budget_exhausted and its reset time", async () => {
    const asked = await completions();
    assert.equal(asked, 1);
    const resetsAt = nextUtcMidnight();
    await say(dana, "And when does the refund arrive?");
    await visible(dana, "#chat-error", "budget_exhausted");
    const shown = await dana.textContent("#chat-error");
    const when = await dana.evaluate((iso) => new Date(iso).toLocaleString(), resetsAt);
    assert.ok(shown.endsWith(`(resets ${when}) (budget_exhausted)`), shown);
    // Nothing was stored or asked: the question is not in the conversation.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await dana.locator("#messages li.msg.user").count(), 1);
    assert.equal(await dana.locator("#messages li.msg.bot").count(), 1);
    assert.equal(await completions(), asked, "the AI was not asked");
  });

  await step("a reload replays the answer's parts and the used-up budget", async () => {
    await dana.reload();
    await visible(dana, "#status.online");
    const again = await until("the replayed answer", async () => {
      const a = await lastAnswer(dana);
      return a && a.status === "completed" && a.usage !== null ? a : null;
    });
    assert.deepEqual(again, {
      status: "completed",
      thinking: false,
      text,
      reasoning,
      tools: finishedTools,
      usage: `${usage.total} tokens, ${usage.reasoning} reasoning`,
    });
    assert.equal(await dana.locator("#messages li.msg.user").count(), 1);
    await visible(dana, "#quota.bad", `(0 left) · resets 00:00`);
  });
}
