// Generates the protocol's TypeScript types from the repository's specs:
// - src/generated/openapi.ts from openapi/openapi.json (openapi-typescript);
// - src/generated/asyncapi.ts from asyncapi/asyncapi.yaml: every payload
//   schema (json-schema-to-typescript), plus one union per direction of each
//   socket, taken from the document's operations.
// `node scripts/generate-types.mjs --check` writes nothing and fails when the
// committed files differ from what it would write (the CI drift check).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";
import { compile } from "json-schema-to-typescript";
import { parse } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, "..");
const repo = join(pkg, "..", "..");
const check = process.argv.includes("--check");

const BANNER = (source) =>
  `// Generated from ${source} by scripts/generate-types.mjs; do not edit.\n` +
  "// Regenerate with `npm run generate` in clients/typescript.\n";

async function openapi() {
  const spec = JSON.parse(readFileSync(join(repo, "openapi/openapi.json"), "utf8"));
  const ast = await openapiTS(spec, { alphabetize: false });
  return `${BANNER("openapi/openapi.json")}\n${astToString(ast)}`;
}

/** `#/a/b/c` of `doc`. */
function pointer(doc, ref) {
  return ref.replace(/^#\//, "").split("/").reduce((node, key) => node[key.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
}

/** A copy of `node` whose `#/components/schemas/X` refs point at `#/$defs/X`. */
function rewriteRefs(node) {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node && typeof node === "object") {
    const out = {};
    for (const [k, v] of Object.entries(node)) {
      out[k] = k === "$ref" && typeof v === "string" ? v.replace("#/components/schemas/", "#/$defs/") : rewriteRefs(v);
    }
    return out;
  }
  return node;
}

async function asyncapi() {
  const doc = parse(readFileSync(join(repo, "asyncapi/asyncapi.yaml"), "utf8"));
  const defs = {};
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    defs[name] = { ...rewriteRefs(schema), title: name };
  }
  // The type of each message's payload: its schema's name, or a new one for
  // a payload written in place (the agent socket's `allOf`s).
  const payloadType = new Map();
  for (const [key, message] of Object.entries(doc.components.messages)) {
    const ref = message.payload.$ref;
    if (ref) {
      payloadType.set(key, ref.split("/").pop());
    } else {
      const name = `${key}Payload`;
      defs[name] = { ...rewriteRefs(message.payload), title: name };
      payloadType.set(key, name);
    }
  }
  const root = { title: "ProtocolSchemas", type: "object", additionalProperties: false, $defs: defs };
  let ts = await compile(root, "ProtocolSchemas", {
    bannerComment: "",
    unreachableDefinitions: true,
    additionalProperties: false,
    strictIndexSignatures: true,
    format: true,
    style: { printWidth: 110 },
  });
  // The empty root interface says nothing.
  ts = ts.replace(/export interface ProtocolSchemas \{\}\n\n?/, "");

  const unions = [];
  const describe = {
    customerSends: ["CustomerClientMessage", "What a customer's client may send on /ws."],
    customerReceives: ["CustomerServerMessage", "What the server sends on /ws."],
    agentSends: ["AgentClientMessage", "What an agent's console may send on /agent/ws."],
    agentReceives: ["AgentServerMessage", "What the server sends on /agent/ws."],
  };
  for (const [op, [name, doc_]] of Object.entries(describe)) {
    const types = doc.operations[op].messages.map((m) => {
      const message = pointer(doc, m.$ref);
      const key = message.$ref.split("/").pop();
      return payloadType.get(key);
    });
    unions.push(`/** ${doc_} */\nexport type ${name} =\n${types.map((t) => `  | ${t}`).join("\n")};\n`);
  }
  return `${BANNER("asyncapi/asyncapi.yaml")}\n${ts}\n${unions.join("\n")}`;
}

const outputs = [
  [join(pkg, "src/generated/openapi.ts"), await openapi()],
  [join(pkg, "src/generated/asyncapi.ts"), await asyncapi()],
];
let stale = 0;
for (const [file, text] of outputs) {
  if (check) {
    let old = "";
    try {
      old = readFileSync(file, "utf8");
    } catch {
      // missing counts as stale
    }
    if (old !== text) {
      stale += 1;
      console.error(`generate-types: ${file} differs from what the specs generate; run \`npm run generate\``);
    }
  } else {
    writeFileSync(file, text);
    console.log(`generate-types: wrote ${file}`);
  }
}
if (stale) process.exit(1);
