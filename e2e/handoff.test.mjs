// The customer chat (/) and the agent console (/agent) end to end, in
// Debian's headless Chromium driven by playwright-core. .ci/e2e.sh starts the
// server and makes the agent account, then runs this with:
//   BASE_URL        the server, e.g. http://127.0.0.1:40123
//   AGENT_USER      an agent's username, AGENT_PASSWORD its password
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
//   ARTIFACTS       where failures leave screenshots (default e2e/artifacts)
//   SCREENSHOTS     where success leaves the README's (default docs/screenshots)

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  WAIT, answers, inChromium, notice, open, registerCustomer, say, step, until, visible,
} from "./lib.mjs";

const BASE = process.env.BASE_URL;
const AGENT_USER = process.env.AGENT_USER;
const AGENT_PASSWORD = process.env.AGENT_PASSWORD;
const SCREENSHOTS = process.env.SCREENSHOTS || "docs/screenshots";

async function answerTo(page, question, status = "completed") {
  const expected = `You said: ${question}`;
  return until(`the answer "${expected}" (${status})`, async () => {
    const done = (await answers(page)).filter((a) => a.text === expected && a.status === status);
    return done.length ? done : null;
  });
}

test("a customer asks for a human, an agent answers, the bot takes over again", { timeout: 240000 }, async () => {
  assert.ok(BASE && AGENT_USER && AGENT_PASSWORD, "BASE_URL, AGENT_USER and AGENT_PASSWORD are required");
  await inChromium(scenario);
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

  await step("the agent sees the AI's summary of the conversation above the transcript", async () => {
    // The echo model's summary quotes the last turns of the conversation.
    await visible(agent, "#summary:not([hidden])");
    await until("the summary text", async () => {
      const text = await agent.textContent("#summary-text");
      return text.startsWith("Summary of the last") && text.includes("customer: ");
    });
  });

  await step("typing shows on the other side, both ways, and stops", async () => {
    await carol.fill("#input", "I was charged");
    await visible(agent, "#typing:not([hidden])", "carol is typing");
    await agent.fill("#reply-input", "Let me check");
    for (const page of [carol, tab2]) await visible(page, "#typing:not([hidden])", `${AGENT_USER} is typing`);
    await agent.fill("#reply-input", "");
    await carol.fill("#input", "");
    // Unrefreshed, typing ends by itself (the server says so after 5 s).
    await until("agent typing gone", async () => agent.locator("#typing").isHidden(), 12000);
    for (const page of [carol, tab2]) {
      await until("customer's typing line gone", async () => page.locator("#typing").isHidden(), 12000);
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

  const canned = "Thanks for your patience: your refund is on its way.";
  await step("the agent saves a canned reply and puts it in the composer with / and its shortcut", async () => {
    await agent.click("#replies-panel summary");
    await agent.fill("#reply-new-shortcut", "refund");
    await agent.fill("#reply-new-content", canned);
    await agent.click("#reply-new button[type=submit]");
    await visible(agent, "#replies li", "/refund");
    // Typing the shortcut shows the matches, and a space puts the reply in.
    await agent.locator("#reply-input").pressSequentially("/ref");
    await visible(agent, "#reply-hint:not([hidden])", "/refund");
    await agent.locator("#reply-input").pressSequentially("und ");
    await until("the reply in the composer", async () => (await agent.inputValue("#reply-input")) === canned);
    assert.ok(await agent.locator("#reply-hint").isHidden(), "the hint goes");
    await agent.press("#reply-input", "Enter");
    for (const page of [carol, tab2]) await visible(page, "li.msg.agent", canned);
    // Tab does it too.
    await agent.locator("#reply-input").pressSequentially("/refund");
    await agent.press("#reply-input", "Tab");
    await until("the reply in the composer again", async () => (await agent.inputValue("#reply-input")) === canned);
    await agent.fill("#reply-input", "");
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

  await step("the customer rates the conversation and the agent sees the rating", async () => {
    for (const page of [carol, tab2]) await visible(page, 'li.notice.csat[data-type="csat-request"]');
    await carol.fill("li.notice.csat .csat-comment", "Quick and kind.");
    await carol.click('li.notice.csat .star[data-rating="4"]');
    for (const page of [carol, tab2]) {
      await until("the rating shown", async () =>
        (await page.textContent("li.notice.csat .csat-said")).includes("You rated it ★★★★☆"));
    }
    await visible(agent, "#ratings li", "carol");
    assert.equal(await agent.textContent("#ratings li .stars"), "★★★★☆");
    assert.equal(await agent.textContent("#ratings li .preview"), "Quick and kind.");
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
    // What the server keeps comes back with the reload: carol's rating of
    // the conversation resolved earlier, and the summary of the one shown.
    await visible(agent, "#ratings li", "carol");
    assert.equal(await agent.textContent("#ratings li .stars"), "★★★★☆");
    assert.equal(await agent.textContent("#ratings li .preview"), "Quick and kind.");
    await visible(agent, "#summary:not([hidden])");
    await until("the summary after the reload", async () =>
      (await agent.textContent("#summary-text")).startsWith("Summary of the last"));
  });

  await step("a customer account is refused by the agent console with agent_only", async () => {
    const page = await open(other, "not-an-agent", "/agent");
    await page.fill("#auth-username", "bob");
    await page.fill("#auth-password", "correct horse battery");
    await page.click("#auth-submit");
    await visible(page, "#denied", "agent_only");
  });
}
