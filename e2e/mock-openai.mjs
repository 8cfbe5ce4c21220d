// A mock OpenAI-compatible upstream for the answer-parts e2e: it streams a
// reasoning model's answer (reasoning for ~1.5 s, two tool calls with
// argument fragments, text, then a usage chunk) the way vLLM or OpenAI do,
// slowly enough for a browser to show each part. Node's http module only.
//
//   node e2e/mock-openai.mjs            listens on MOCK_PORT (default: any free
//                                       port) at 127.0.0.1 and prints its URL
//   POST /v1/chat/completions           the answer, as server-sent events
//   GET  /requests                      {"completions": n}: how often the AI
//                                       was asked (a refused chat must not ask)
//   GET  /health                        200
//
// The test imports ANSWER from here, so what it expects is what is sent.

import { createServer } from "node:http";
import { pathToFileURL } from "node:url";

/** What the mock answers, to every question. */
export const ANSWER = Object.freeze({
  reasoning: [
    "The customer ", "asks about ", "an order. ", "I should ", "look it up ",
    "and check ", "whether a refund ", "is due ", "before ", "answering.",
  ],
  tools: [
    { id: "call_order", name: "lookup_order", arguments: ['{"order', 'Id":"A-', '1001"}'] },
    { id: "call_refund", name: "check_refund", arguments: ['{"order', 'Id":"A-1001",', '"reason":"late"}'] },
  ],
  text: ["Your order ", "A-1001 ", "shipped yesterday ", "and arrives ", "on Friday."],
  usage: { prompt: 812, completion: 430, reasoning: 96, total: 1242 },
});

/** Milliseconds between the chunks of each part: the reasoning takes ~1.5 s. */
const PACE = { reasoning: 150, tool: 200, beforeText: 500, text: 120 };

const chunk = (delta, extra = {}) => ({
  id: "chatcmpl-e2e",
  object: "chat.completion.chunk",
  model: "mock-reasoner",
  choices: [{ index: 0, delta, finish_reason: null, ...extra }],
});

/** The answer as `[delayMs, payload]` pairs, payload a JSON value or "[DONE]". */
function script() {
  const steps = [[0, chunk({ role: "assistant", content: "" })]];
  for (const piece of ANSWER.reasoning) steps.push([PACE.reasoning, chunk({ reasoning_content: piece })]);
  ANSWER.tools.forEach((tool, index) => {
    steps.push([PACE.tool, chunk({
      tool_calls: [{ index, id: tool.id, type: "function", function: { name: tool.name, arguments: "" } }],
    })]);
    for (const fragment of tool.arguments) {
      steps.push([PACE.tool, chunk({ tool_calls: [{ index, function: { arguments: fragment } }] })]);
    }
  });
  // The upstream ran the tools: the calls are complete.
  steps.push([PACE.tool, chunk({}, { finish_reason: "tool_calls" })]);
  ANSWER.text.forEach((token, i) => {
    steps.push([i === 0 ? PACE.beforeText : PACE.text, chunk({ content: token })]);
  });
  steps.push([PACE.text, chunk({}, { finish_reason: "stop" })]);
  const u = ANSWER.usage;
  steps.push([0, {
    id: "chatcmpl-e2e",
    object: "chat.completion.chunk",
    model: "mock-reasoner",
    choices: [],
    usage: {
      prompt_tokens: u.prompt,
      completion_tokens: u.completion,
      total_tokens: u.total,
      completion_tokens_details: { reasoning_tokens: u.reasoning },
    },
  }]);
  steps.push([0, "[DONE]"]);
  return steps;
}

function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

/** Why a request is not the streaming chat the server should send, or null. */
function refusal(body) {
  if (body.stream !== true) return "stream must be true";
  if (!body.stream_options || body.stream_options.include_usage !== true) {
    return "stream_options.include_usage must be true (the usage chunk is asked for)";
  }
  if (!Array.isArray(body.messages) || body.messages.at(-1)?.role !== "user") {
    return "messages must end with the user's question";
  }
  return null;
}

function stream(req, res) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const steps = script();
  let timer = null;
  // A stopped answer closes the connection: stop sending.
  res.on("close", () => clearTimeout(timer));
  const next = (i) => {
    if (i === steps.length) {
      res.end();
      return;
    }
    const [delay, payload] = steps[i];
    timer = setTimeout(() => {
      res.write(`data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`);
      next(i + 1);
    }, delay);
  };
  next(0);
}

/** Starts the mock; resolves to `{server, url, completions()}`. */
export function startMock({ port = 0, host = "127.0.0.1" } = {}) {
  let completions = 0;
  const server = createServer((req, res) => {
    if (req.method === "GET" && req.url === "/health") return json(res, 200, { status: "ok" });
    if (req.method === "GET" && req.url === "/requests") return json(res, 200, { completions });
    if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
      return json(res, 404, { error: { message: `no route ${req.method} ${req.url}` } });
    }
    const parts = [];
    req.on("data", (c) => parts.push(c));
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(parts).toString("utf8"));
      } catch {
        return json(res, 400, { error: { message: "the body is not JSON" } });
      }
      const why = refusal(body);
      if (why) return json(res, 400, { error: { message: why } });
      completions += 1;
      stream(req, res);
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const { port: bound } = server.address();
      resolve({ server, url: `http://${host}:${bound}`, completions: () => completions });
    });
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { server, url } = await startMock({ port: Number(process.env.MOCK_PORT || 0) });
  console.log(`mock-openai listening on ${url}`);
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
