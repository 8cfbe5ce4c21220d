// Where waiting customers stand, auto-assignment and office hours, end to
// end in Debian's headless Chromium (playwright-core). .ci/e2e.sh starts the
// servers and makes the agents, then runs this with:
//   BASE_URL        the default server, with the agent AGENT_USER
//   AGENT_USER      an agent's username, AGENT_PASSWORD every agent's password
//   AUTO_BASE_URL   a server with HANDOFF_ASSIGN=auto, AGENT_MAX_CONVERSATIONS=2
//                   and the agents AUTO_AGENTS (two, comma-separated)
//   CLOSED_BASE_URL a server whose HANDOFF_HOURS are closed now
//   CHROMIUM, ARTIFACTS as for e2e/lib.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  WAIT, answers, inChromium, notice, open, registerCustomer, say, step, until, visible,
} from "./lib.mjs";

const BASE = process.env.BASE_URL;
const AGENT_USER = process.env.AGENT_USER;
const AGENT_PASSWORD = process.env.AGENT_PASSWORD;
const AUTO_BASE = process.env.AUTO_BASE_URL;
const AUTO_AGENTS = (process.env.AUTO_AGENTS || "").split(",").filter(Boolean);
const CLOSED_BASE = process.env.CLOSED_BASE_URL;

async function answerTo(page, question) {
  const expected = `You said: ${question}`;
  return until(`the answer "${expected}"`, async () =>
    (await answers(page)).some((a) => a.text === expected && a.status === "completed"));
}

test("three waiting customers see their place in line change as the agent takes the first", { timeout: 120000 }, async () => {
  assert.ok(BASE && AGENT_USER && AGENT_PASSWORD, "BASE_URL, AGENT_USER and AGENT_PASSWORD are required");
  await inChromium(threeInLine);
});

test("auto-assignment shares four customers between two agents by load", { timeout: 120000 }, async () => {
  assert.ok(AUTO_BASE && AUTO_AGENTS.length === 2, "AUTO_BASE_URL and two AUTO_AGENTS are required");
  await inChromium(autoAssignment);
});

test("outside office hours the assistant stays and says when agents are back", { timeout: 60000 }, async () => {
  assert.ok(CLOSED_BASE, "CLOSED_BASE_URL is required");
  await inChromium(officeClosed);
});

async function agentLogin(context, label, user, base = BASE) {
  const page = await open(context, label, "/agent", base);
  await visible(page, "#auth");
  await page.fill("#auth-username", user);
  await page.fill("#auth-password", AGENT_PASSWORD);
  await page.click("#auth-submit");
  await visible(page, "#status.online");
  return page;
}

/** A customer in a browser of their own who asked for a human. */
async function waitingCustomer(browser, name, base = BASE) {
  const context = await browser.newContext({ viewport: { width: 900, height: 820 } });
  const page = await open(context, name, "/", base);
  await registerCustomer(page, name);
  await page.locator("#human").waitFor({ state: "visible", timeout: WAIT });
  await page.click("#human");
  return page;
}

async function threeInLine(browser) {
  const agentSide = await browser.newContext({ viewport: { width: 1280, height: 820 } });
  let agent;
  const line = [];
  await step("three customers ask for a human and each is told their place", async () => {
    agent = await agentLogin(agentSide, "agent-line", AGENT_USER);
    for (const [i, name] of ["dora", "eli", "fay"].entries()) {
      const page = await waitingCustomer(browser, name);
      await notice(page, "handoff-queued");
      const place = i === 0 ? "You are next in line." : `You are number ${i + 1} in line.`;
      await visible(page, "#banner.queued", place);
      line.push(page);
    }
    // The console numbers the queue the same way.
    await visible(agent, "#queue li", "#3 fay");
  });

  await step("the agent takes the first; the others move up, live, with an estimate", async () => {
    await agent.locator("#queue li", { hasText: "dora" }).locator("button").click();
    await visible(line[0], "#banner.assigned", AGENT_USER);
    await visible(line[1], "#banner.queued", "You are next in line.");
    await visible(line[2], "#banner.queued", "You are number 2 in line.");
    // Dora's wait is the first one taken: now there is an estimate.
    await visible(line[2], "#banner.queued", "Estimated wait");
    await visible(agent, "#queue li", "#1 eli");
  });

  await step("one who gives up moves the last one up again", async () => {
    await line[1].click("#cancel-handoff");
    await notice(line[1], "handoff-cancelled");
    await visible(line[2], "#banner.queued", "You are next in line.");
    await line[2].click("#cancel-handoff");
    await agent.locator("#resolve").click();
    await notice(line[0], "handoff-resolved");
  });
}

async function autoAssignment(browser) {
  const consoles = [];
  await step("two agents open their consoles, available", async () => {
    for (const name of AUTO_AGENTS) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
      const page = await agentLogin(context, `auto-${name}`, name, AUTO_BASE);
      await visible(page, "#assign-mode", "assigned to you automatically");
      assert.equal(await page.inputValue("#presence"), "available");
      consoles.push(page);
    }
  });

  const customers = [];
  await step("four customers ask; each agent is given two, nobody claims", async () => {
    for (const name of ["gus", "hal", "ida", "joy"]) {
      customers.push(await waitingCustomer(browser, name, AUTO_BASE));
    }
    for (const page of customers) await visible(page, "#banner.assigned");
    for (const page of consoles) {
      await until("two conversations each", async () => (await page.locator("#mine li").count()) === 2);
    }
    const served = [];
    for (const page of consoles) {
      served.push(...await page.$$eval("#mine li .name", (ns) => ns.map((n) => n.textContent)));
    }
    assert.deepEqual(served.sort(), ["gus", "hal", "ida", "joy"], "each once, to one agent");
  });

  await step("an away agent with room gets nothing until available again", async () => {
    const [, second] = consoles;
    await second.selectOption("#presence", "away");
    await until("away kept", async () => (await second.inputValue("#presence")) === "away");
    // The other console shows it, with each agent's load.
    const [first] = consoles;
    await visible(first, `#agents li[data-status="away"]`, AUTO_AGENTS[1]);
    await visible(first, `#agents li[data-status="available"]`, `${AUTO_AGENTS[0]} (you)`);
    assert.match(await first.textContent(`#agents li[data-status="away"]`), /2 conversations/);
    // The status is the server's: a reload still says away.
    await second.reload();
    await visible(second, "#status.online");
    await until("away after a reload", async () => (await second.inputValue("#presence")) === "away");
    await until("two held after the reload", async () => (await second.locator("#mine li").count()) === 2);
    await second.locator("#mine li").first().click();
    await second.locator("#resolve").click();
    await until("room again", async () => (await second.locator("#mine li").count()) === 1);
    // The other agent is full and this one away: the next customer waits.
    const kim = await waitingCustomer(browser, "kim", AUTO_BASE);
    await visible(kim, "#banner.queued", "You are next in line.");
    await kim.waitForTimeout(1500);
    assert.equal(await second.locator("#mine li").count(), 1, "nothing while away");
    await second.selectOption("#presence", "available");
    await visible(kim, "#banner.assigned", AUTO_AGENTS[1]);
    await until("kim to the agent back", async () => (await second.locator("#mine li").count()) === 2);
  });

  await step("at capacity the Claim buttons are off and the console says why", async () => {
    const lou = await waitingCustomer(browser, "lou", AUTO_BASE);
    await visible(lou, "#banner.queued", "You are next in line.");
    for (const page of consoles) {
      const item = page.locator("#queue li", { hasText: "lou" });
      await item.waitFor({ timeout: WAIT });
      assert.ok(await item.locator("button").isDisabled(), "no claim past capacity");
      await visible(page, "#queue-note:not([hidden])", "You hold 2 of 2 conversations");
      assert.match(await item.locator("button").getAttribute("title"), /2 of 2/);
    }
    // Room again: the conversation is assigned, nobody needs to claim it.
    const [first] = consoles;
    await first.locator("#mine li").first().click();
    await first.locator("#resolve").click();
    await visible(lou, "#banner.assigned", AUTO_AGENTS[0]);
  });
}

async function officeClosed(browser) {
  await step("a customer asks outside office hours: told when agents are back, the bot answers", async () => {
    const context = await browser.newContext({ viewport: { width: 900, height: 820 } });
    const page = await open(context, "closed-customer", "/", CLOSED_BASE);
    await registerCustomer(page, "lea");
    await page.locator("#human").waitFor({ state: "visible", timeout: WAIT });
    await page.click("#human");
    await visible(page, 'li.notice[data-type="human-escalation-response"]', "Our team is away right now.");
    await visible(page, 'li.notice[data-type="handoff-unavailable"]', "Agents are back");
    assert.ok(await page.locator("#banner").isHidden(), "not waiting");
    await say(page, "Then you help me");
    await answerTo(page, "Then you help me");
  });
}
