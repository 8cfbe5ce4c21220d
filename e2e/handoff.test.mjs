// The customer chat (/) and the agent console (/agent) end to end, in
// Debian's headless Chromium driven by playwright-core. .ci/e2e.sh starts the
// server and makes the agent account, then runs this with:
//   BASE_URL        the server, e.g. http://127.0.0.1:40123
//   AGENT_USER      an agent's username, AGENT_PASSWORD its password
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
//   ARTIFACTS       where failures leave screenshots (default e2e/artifacts)
//   SCREENSHOTS     where success leaves the README's (default docs/screenshots)
//   AUTO_BASE_URL   a server with HANDOFF_ASSIGN=auto, AGENT_MAX_CONVERSATIONS=2
//                   and the agents AUTO_AGENTS (two, comma-separated, with
//                   AGENT_PASSWORD)
//   CLOSED_BASE_URL a server whose HANDOFF_HOURS are closed now

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL;
const AGENT_USER = process.env.AGENT_USER;
const AGENT_PASSWORD = process.env.AGENT_PASSWORD;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS || "e2e/artifacts";
const SCREENSHOTS = process.env.SCREENSHOTS || "docs/screenshots";
const AUTO_BASE = process.env.AUTO_BASE_URL;
const AUTO_AGENTS = (process.env.AUTO_AGENTS || "").split(",").filter(Boolean);
const CLOSED_BASE = process.env.CLOSED_BASE_URL;
const WAIT = 15000;

/** Every page opened, by label, for the failure screenshots. */
const pages = new Map();
/** What the pages logged as errors (CSP refusals, exceptions). */
const problems = [];

async function open(context, label, path, base = BASE) {
  const page = await context.newPage();
  pages.set(label, page);
  page.on("pageerror", (e) => problems.push(`${label}: exception: ${e.message}`));
  page.on("console", (msg) => {
    // A refused REST call is logged by the browser as a failed load; the
    // pages show those themselves (the agent_only step expects one).
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) {
      problems.push(`${label}: console: ${msg.text()}`);
    }
  });
  await page.goto(base + path);
  return page;
}

let stepNo = 0;
async function step(name, fn) {
  stepNo += 1;
  const started = Date.now();
  try {
    await fn();
  } catch (e) {
    e.message = `step ${stepNo} (${name}): ${e.message}`;
    throw e;
  }
  console.log(`  ok ${stepNo} ${name} (${Date.now() - started} ms)`);
}

/** Polls `fn` until it returns a truthy value. */
async function until(what, fn, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const visible = (page, selector, hasText) =>
  page.locator(selector, hasText ? { hasText } : {}).first().waitFor({ state: "visible", timeout: WAIT });

async function registerCustomer(page, name) {
  await visible(page, "#auth");
  await page.click("#tab-register");
  await page.fill("#auth-username", name);
  await page.fill("#auth-email", `${name}@example.com`);
  await page.fill("#auth-password", "correct horse battery");
  await page.click("#auth-submit");
  await visible(page, "#status.online");
}

async function say(page, text) {
  await page.locator("#send:not([disabled])").waitFor({ timeout: WAIT });
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

/** The bot answers on a page: `[{id, text, status}]`, in order. */
const answers = (page) =>
  page.$$eval("#messages li.msg.bot", (lis) => lis.map((li) => ({
    id: li.dataset.messageId,
    text: li.querySelector(".text").textContent,
    status: li.dataset.status || "streaming",
  })));

async function answerTo(page, question, status = "completed") {
  const expected = `You said: ${question}`;
  return until(`the answer "${expected}" (${status})`, async () => {
    const done = (await answers(page)).filter((a) => a.text === expected && a.status === status);
    return done.length ? done : null;
  });
}

async function notice(page, type) {
  await visible(page, `#messages li.notice[data-type="${type}"]`);
}

async function failureArtifacts() {
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const [label, page] of pages) {
    try {
      await page.screenshot({ path: join(ARTIFACTS, `${label}.png`), fullPage: true });
      writeFileSync(join(ARTIFACTS, `${label}.html`), await page.content());
    } catch (e) {
      console.error(`could not capture ${label}: ${e.message}`);
    }
  }
  writeFileSync(join(ARTIFACTS, "console.txt"), problems.join("\n"));
  console.error(`e2e: screenshots and page HTML are in ${ARTIFACTS}/`);
}

/** Runs `fn` in a fresh headless browser; a failure leaves the artifacts. */
async function inBrowser(fn) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in CI: Chromium's sandbox needs user namespaces it may not get.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    await fn(browser);
    assert.deepEqual(problems, [], "the pages logged errors");
  } catch (e) {
    await failureArtifacts();
    throw e;
  } finally {
    await browser.close();
  }
}

test("a customer asks for a human, an agent answers, the bot takes over again", { timeout: 240000 }, async () => {
  assert.ok(BASE && AGENT_USER && AGENT_PASSWORD, "BASE_URL, AGENT_USER and AGENT_PASSWORD are required");
  await inBrowser(scenario);
});

test("three waiting customers see their place in line change as the agent takes the first", { timeout: 120000 }, async () => {
  await inBrowser(threeInLine);
});

test("auto-assignment shares four customers between two agents by load", { timeout: 120000 }, async () => {
  assert.ok(AUTO_BASE && AUTO_AGENTS.length === 2, "AUTO_BASE_URL and two AUTO_AGENTS are required");
  await inBrowser(autoAssignment);
});

test("outside office hours the assistant stays and says when agents are back", { timeout: 60000 }, async () => {
  assert.ok(CLOSED_BASE, "CLOSED_BASE_URL is required");
  await inBrowser(officeClosed);
});

async function scenario(browser) {
  const customer = await browser.newContext({ viewport: { width: 900, height: 820 } });
  const agentSide = await browser.newContext({ viewport: { width: 1280, height: 820 } });
  const other = await browser.newContext({ viewport: { width: 900, height: 820 } });
  const carol = await open(customer, "customer", "/");
  let tab2;
  let agent;

  const hello = "Hello there, can you track my order?";
  await step("a customer registers and the bot streams an answer token by token", async () => {
    await registerCustomer(carol, "carol");
    await say(carol, hello);
    // Part of the answer is on screen while the rest is still coming.
    await until("a partly streamed answer", async () => {
      const a = (await answers(carol))[0];
      return a && a.status === "streaming" && a.text.length > 0 && a.text !== `You said: ${hello}`;
    });
    await answerTo(carol, hello);
  });

  await step("the answer says what it cost, and the page shows the tokens used", async () => {
    // The echo model sends no usage: the server counts it, and says so.
    const usage = await until("the answer's usage line", async () =>
      carol.$eval("#messages li.msg.bot .usage", (n) => n.textContent).catch(() => null));
    assert.match(usage, /^\d+ tokens \(estimated\)$/);
    const quota = await until("the token count under the composer", async () =>
      carol.$eval("#quota:not([hidden])", (n) => n.textContent).catch(() => null));
    assert.match(quota, /^Tokens used: \d+/);
  });

  await step("a second tab resumes the same conversation", async () => {
    tab2 = await open(customer, "customer-tab2", "/");
    await visible(tab2, "#status.online");
    await answerTo(tab2, hello);
    assert.equal((await answers(tab2)).length, 1);
  });

  let bob;
  await step("with no agent online, asking for a human says so and the assistant keeps answering", async () => {
    bob = await open(other, "other-customer", "/");
    await registerCustomer(bob, "bob");
    await say(bob, "My parcel never arrived");
    await answerTo(bob, "My parcel never arrived");
    await bob.click("#human");
    await visible(bob, 'li.notice[data-type="human-escalation-response"]', "No agent is available right now");
    assert.ok(await bob.locator("#banner").isHidden(), "no waiting banner");
    await say(bob, "Where is it then?");
    await answerTo(bob, "Where is it then?");
  });

  await step("an agent opens the console", async () => {
    agent = await open(agentSide, "agent", "/agent");
    await visible(agent, "#auth");
    await agent.fill("#auth-username", AGENT_USER);
    await agent.fill("#auth-password", AGENT_PASSWORD);
    await agent.click("#auth-submit");
    await visible(agent, "#status.online");
  });

  await step("another customer waits in the queue and is told where they stand", async () => {
    await bob.locator("#human").waitFor({ state: "visible", timeout: WAIT });
    await bob.click("#human");
    await notice(bob, "handoff-queued");
    await visible(bob, "#banner.queued");
    await say(bob, "Anyone there?");
    await visible(bob, "#banner.queued", "You are next in line.");
    assert.equal((await answers(bob)).length, 2, "the bot stays quiet in the queue");
  });

  await step("the customer asks for a human, cancels, asks again; both tabs follow", async () => {
    await carol.click("#human");
    await notice(carol, "handoff-queued");
    await visible(carol, "#banner.queued");
    await carol.click("#cancel-handoff");
    await notice(carol, "handoff-cancelled");
    await notice(tab2, "handoff-cancelled");
    await carol.locator("#human").waitFor({ state: "visible", timeout: WAIT });
    await carol.click("#human");
    await until("two handoff-queued notices in the second tab", async () =>
      (await tab2.locator('li.notice[data-type="handoff-queued"]').count()) === 2);
    await visible(tab2, "#banner.queued");
    // Bob asked first: both of carol's tabs learn she is second.
    await say(carol, "I am still here");
    for (const page of [carol, tab2]) await visible(page, "#banner.queued", "You are number 2 in line.");
  });

  await step("the agent sees the queue with waiting times and claims", async () => {
    const item = agent.locator("#queue li", { hasText: "carol" });
    await item.waitFor({ timeout: WAIT });
    await until("a live waiting time", async () => /waiting \d+(s|m)/.test(await item.locator(".wait").textContent()));
    assert.equal(await agent.locator("#queue li").count(), 2, "carol and bob wait");
    await item.locator("button").click();
    await visible(agent, "#conversation");
    assert.equal(await agent.textContent("#conv-user"), "carol");
    // The transcript is replayed: what carol said to the bot before.
    await visible(agent, "#transcripts ol:not([hidden]) li.msg.user", hello);
    await visible(agent, "#transcripts ol:not([hidden]) li.msg.bot", `You said: ${hello}`);
    await until("carol out of the queue", async () => (await agent.locator("#queue li").count()) === 1);
    for (const page of [carol, tab2]) {
      await notice(page, "agent-joined");
      await visible(page, "#banner.assigned", AGENT_USER);
    }
  });

  const complaint = "I was charged twice for the same order.";
  const apology = "Sorry about that! I have refunded the second charge just now.";
  await step("they exchange messages both ways and the bot stays quiet", async () => {
    await say(carol, complaint);
    await visible(agent, "#transcripts ol:not([hidden]) li.msg.user", complaint);
    await agent.fill("#reply-input", apology);
    await agent.press("#reply-input", "Enter");
    for (const page of [carol, tab2]) {
      await visible(page, "li.msg.agent", apology);
    }
    await visible(agent, "#transcripts ol:not([hidden]) li.msg.agent.mine", apology);
    await say(carol, "Thank you, that was quick!");
    await visible(agent, "#transcripts ol:not([hidden]) li.msg.user", "Thank you, that was quick!");
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await answers(carol)).length, 1, "the bot answered while an agent held the conversation");
    mkdirSync(SCREENSHOTS, { recursive: true });
    await agent.screenshot({ path: join(SCREENSHOTS, "agent.png") });
    await carol.screenshot({ path: join(SCREENSHOTS, "customer.png") });
  });

  await step("the agent releases the conversation to the queue and claims it again", async () => {
    await agent.click("#release");
    await visible(agent, "#placeholder");
    for (const page of [carol, tab2]) {
      await notice(page, "agent-left");
      await visible(page, "#banner.queued");
    }
    const item = agent.locator("#queue li", { hasText: "carol" });
    await item.locator("button").click();
    await visible(agent, "#transcripts ol:not([hidden]) li.msg.user", "Thank you, that was quick!");
    for (const page of [carol, tab2]) {
      await until("a second agent-joined", async () =>
        (await page.locator('li.notice[data-type="agent-joined"]').count()) === 2);
      await visible(page, "#banner.assigned");
    }
  });

  const after = "Great. When do you open tomorrow?";
  await step("the agent resolves and the bot answers the next message", async () => {
    await agent.click("#resolve");
    await visible(agent, "#placeholder");
    for (const page of [carol, tab2]) {
      await notice(page, "handoff-resolved");
      await page.locator("#banner").waitFor({ state: "hidden", timeout: WAIT });
    }
    await say(carol, after);
    await answerTo(carol, after);
    await answerTo(tab2, after);
  });

  const long = "Please tell me everything about returns, refunds, exchanges, store credit, shipping labels, "
    + "pickup windows, damaged parcels, missing items, warranty claims and how long each of them usually takes";
  await step("a reload mid-answer shows the whole answer exactly once, in both tabs", async () => {
    await say(carol, long);
    await until("the long answer half streamed", async () => {
      const a = (await answers(carol)).at(-1);
      return a && a.status === "streaming" && a.text.length > 40;
    });
    await carol.reload();
    await visible(carol, "#status.online");
    const [done] = await answerTo(carol, long);
    for (const page of [carol, tab2]) {
      await answerTo(page, long);
      const all = await answers(page);
      assert.equal(all.filter((a) => a.id === done.id).length, 1, "the answer is shown once");
      assert.equal(all.length, 3, "hello, after and the long answer");
      const text = await page.locator("#messages").textContent();
      assert.equal(text.split(`You said: ${long}`).length, 2, "the answer's text appears once");
    }
    // The whole conversation came back with the reload, handoff included.
    await notice(carol, "handoff-resolved");
    await visible(carol, "li.msg.agent", apology);
  });

  await step("stop cancels a running answer, in every tab", async () => {
    await say(tab2, long);
    await until("a new answer streaming", async () => (await answers(carol)).length === 4);
    await carol.locator("#stop").waitFor({ state: "visible", timeout: WAIT });
    await carol.click("#stop");
    for (const page of [carol, tab2]) {
      const [stopped] = await until("a stopped answer", async () => {
        const cancelled = (await answers(page)).filter((a) => a.status === "cancelled");
        return cancelled.length ? cancelled : null;
      });
      assert.ok(`You said: ${long}`.startsWith(stopped.text), `a prefix: ${stopped.text}`);
      await page.locator("#stop").waitFor({ state: "hidden", timeout: WAIT });
    }
  });

  await step("thumbs rate an answer in every tab, and regenerate replaces the last answer", async () => {
    const rated = carol.locator("#messages li.msg.bot", { hasText: `You said: ${after}` });
    await rated.locator(".thumb.down").click();
    for (const page of [carol, tab2]) {
      const li = page.locator("#messages li.msg.bot", { hasText: `You said: ${after}` });
      await li.locator(".thumb.down.pressed").waitFor({ timeout: WAIT });
    }
    await rated.locator("button.comment").click();
    await rated.locator(".comment-form input").fill("Which store, though?");
    await rated.locator(".comment-form input").press("Enter");
    await visible(tab2, "#messages li.msg.bot .tag.feedback", "Which store, though?");

    // The stopped answer is the last one: regenerate answers its question again.
    await carol.locator("#regenerate").waitFor({ state: "visible", timeout: WAIT });
    await carol.click("#regenerate");
    for (const page of [carol, tab2]) {
      await until("the regenerated answer", async () => {
        const done = (await answers(page)).filter((a) => a.text === `You said: ${long}` && a.status === "completed");
        return done.length === 2 ? done : null;
      });
      assert.equal(await page.locator("#messages li.msg.bot.superseded").count(), 1, "the stopped answer is replaced");
    }
  });

  await step("a reloaded console shows the conversation it showed before, of two held", async () => {
    await carol.locator("#human").waitFor({ state: "visible", timeout: WAIT });
    await carol.click("#human");
    for (const name of ["bob", "carol"]) {
      const item = agent.locator("#queue li", { hasText: name });
      await item.locator("button").click();
      await until(`${name} held`, async () => (await agent.textContent("#conv-user")) === name);
    }
    assert.equal(await agent.locator("#mine li").count(), 2);
    // Whichever one the console would open by itself, each choice survives.
    for (const name of ["bob", "carol"]) {
      await agent.locator("#mine li", { hasText: name }).click();
      await agent.reload();
      await visible(agent, "#status.online");
      await until(`${name}'s conversation shown after the reload`, async () =>
        (await agent.locator("#mine li").count()) === 2
        && (await agent.textContent("#conv-user")) === name);
      await visible(agent, "#transcripts ol:not([hidden]) li.msg.user", name === "bob" ? "My parcel never arrived" : long);
    }
    // The customer's rating shows beside the answer it rates.
    await visible(agent, "#transcripts ol:not([hidden]) li.msg.bot .tag.feedback", "Which store, though?");
  });

  await step("a customer account is refused by the agent console with agent_only", async () => {
    const page = await open(other, "not-an-agent", "/agent");
    await page.fill("#auth-username", "bob");
    await page.fill("#auth-password", "correct horse battery");
    await page.click("#auth-submit");
    await visible(page, "#denied", "agent_only");
  });
}

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
