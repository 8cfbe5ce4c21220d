// What the e2e tests share: the browser, the pages they open (for the
// failure screenshots), steps that say what failed, polling, and the
// customer page's few gestures. Each test file runs in its own process, so
// the state here is one test's.
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
//   ARTIFACTS       where failures leave screenshots (default e2e/artifacts)

import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.ARTIFACTS || "e2e/artifacts";
export const WAIT = 15000;

/** Every page opened, by label, for the failure screenshots. */
const pages = new Map();
/** What the pages logged as errors (CSP refusals, exceptions). */
export const problems = [];

/** Opens `path` of the server at `base` (BASE_URL unless said). */
export async function open(context, label, path, base = process.env.BASE_URL) {
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
export async function step(name, fn) {
  stepNo += 1;
  const started = Date.now();
  try {
    await fn();
  } catch (e) {
    const where = `step ${stepNo} (${name}): `;
    e.message = where + e.message;
    // The reporter prints the stack, which some errors (Playwright's,
    // assertions) have already rendered with the old message.
    if (typeof e.stack === "string" && !e.stack.includes(where)) e.stack = where + e.stack;
    throw e;
  }
  console.log(`  ok ${stepNo} ${name} (${Date.now() - started} ms)`);
}

/** Polls `fn` until it returns a truthy value. */
export async function until(what, fn, timeout = WAIT) {
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

export const visible = (page, selector, hasText) =>
  page.locator(selector, hasText ? { hasText } : {}).first().waitFor({ state: "visible", timeout: WAIT });

export async function registerCustomer(page, name) {
  await visible(page, "#auth");
  await page.click("#tab-register");
  await page.fill("#auth-username", name);
  await page.fill("#auth-email", `${name}@example.com`);
  await page.fill("#auth-password", "correct horse battery");
  await page.click("#auth-submit");
  await visible(page, "#status.online");
}

export async function say(page, text) {
  await page.locator("#send:not([disabled])").waitFor({ timeout: WAIT });
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

/** The bot answers on a page: `[{id, text, status}]`, in order. */
export const answers = (page) =>
  page.$$eval("#messages li.msg.bot", (lis) => lis.map((li) => ({
    id: li.dataset.messageId,
    text: li.querySelector(".text").textContent,
    status: li.dataset.status || "streaming",
  })));

export async function notice(page, type) {
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

/** Runs `scenario(browser)` in a fresh headless Chromium; on failure the
 * pages are left as screenshots and HTML in ARTIFACTS. The pages must not
 * have logged errors. */
export async function inChromium(scenario) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in CI: Chromium's sandbox needs user namespaces it may not get.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    await scenario(browser);
    assert.deepEqual(problems, [], "the pages logged errors");
  } catch (e) {
    await failureArtifacts();
    throw e;
  } finally {
    await browser.close();
  }
}
