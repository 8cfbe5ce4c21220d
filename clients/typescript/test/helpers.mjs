// What the SDK's tests share: the real server binary started on a free port
// with a configuration of the test's choosing, a loopback TCP proxy the test
// controls (cut every connection, or swallow what the server sends), users,
// and polling. Servers and proxies are stopped by the test that made them.
//   CHATBOT_SERVER_BIN   the binary (default: the workspace's target/debug/chatbot-server,
//                        under CARGO_TARGET_DIR when that is set)

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const BIN =
  process.env.CHATBOT_SERVER_BIN ||
  join(process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, "target"), "debug/chatbot-server");

export { WebSocket };

export function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.unref();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value. */
export async function until(what, fn, timeout = 15000) {
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
    await sleep(50);
  }
}

/**
 * Starts the server with the echo model, in-memory sessions and its own
 * SQLite file; `env` adds to (or overrides) that configuration.
 * Returns `{ base, port, env, stop(), log() }`.
 */
export async function startServer(env = {}) {
  if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: build it (cargo build) or set CHATBOT_SERVER_BIN`);
  const dir = mkdtempSync(join(tmpdir(), "sdk-test-"));
  const port = await freePort();
  const config = {
    PATH: process.env.PATH,
    HOME: dir,
    HOST: "127.0.0.1",
    PORT: String(port),
    RUST_LOG: "warn",
    JWT_SECRET: "sdk-test-secret-0123456789abcdef0123456789",
    SQLITE_PATH: join(dir, "users.db"),
    ECHO_TOKEN_DELAY: "60ms",
    ...env,
  };
  const child = spawn(BIN, [], { cwd: dir, env: config, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const base = `http://127.0.0.1:${port}`;
  try {
    await until("the server's /health", async () => {
      if (child.exitCode !== null) throw new Error(`the server exited: ${output}`);
      return (await fetch(`${base}/health`)).ok;
    });
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
  return {
    base,
    port,
    env: config,
    log: () => output,
    /** Runs the binary's command line with the server's configuration. */
    cli: (...args) => spawnSync(BIN, args, { cwd: dir, env: config, encoding: "utf8" }),
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A loopback TCP proxy to `port`: `cut()` destroys every connection through
 * it at once (the client sees its socket drop mid-stream), and `swallow`
 * set to true drops what the server sends (a reply that is lost on the
 * way). `base` is its http URL.
 */
export async function startProxy(port) {
  const conns = new Set();
  const proxy = {
    swallow: false,
    /** While true, new connections are refused (the network is down). */
    refuse: false,
    connections: 0,
    cut() {
      for (const s of conns) s.destroy();
      conns.clear();
    },
  };
  const server = net.createServer((client) => {
    if (proxy.refuse) {
      client.destroy();
      return;
    }
    proxy.connections += 1;
    const upstream = net.connect(port, "127.0.0.1");
    conns.add(client);
    conns.add(upstream);
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d) => {
      if (!proxy.swallow) client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      conns.delete(client);
      conns.delete(upstream);
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.base = `http://127.0.0.1:${server.address().port}`;
  proxy.stop = () => {
    proxy.cut();
    return new Promise((r) => server.close(r));
  };
  return proxy;
}

let users = 0;
/** A fresh username (3-32 of [A-Za-z0-9_.-]). */
export function username(prefix = "u") {
  users += 1;
  return `${prefix}${process.pid}x${users}${Date.now().toString(36)}`.slice(0, 32);
}

export const PASSWORD = "correct horse battery";

/** `promise`, or a failure naming `what` after `ms`. */
export function within(promise, what, ms = 15000) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, fail) => {
      timer = setTimeout(() => fail(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The next `name` event of `client`. */
export function next(client, name, what = name, ms = 15000) {
  return within(new Promise((r) => client.once(name, r)), what, ms);
}

/** What two clients must agree on: each message's role, seq, text and status. */
export function snapshot(conversation) {
  return conversation.messages.map((m) => ({
    role: m.role,
    seq: m.seq,
    text: m.role === "assistant" ? m.text : m.content,
    ...(m.role === "assistant" ? { status: m.status } : {}),
  }));
}
