// Builds the browser bundle, browser/chatbot-server-client.js: one ES module,
// no dependency, which the server embeds and serves at
// /sdk/chatbot-server-client.js. `--check` writes nothing and fails when the
// committed bundle differs from a fresh build (the CI drift check).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(pkg, "browser/chatbot-server-client.js");
const { version } = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8"));

const result = await build({
  entryPoints: [join(pkg, "src/index.ts")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  charset: "utf8",
  legalComments: "none",
  write: false,
  banner: {
    js: `// chatbot-server-client ${version}: the browser build (ES module) of clients/typescript.\n` +
      "// Built by `npm run build` in clients/typescript; do not edit.",
  },
});
const text = result.outputFiles[0].text;

if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(out, "utf8");
  } catch {
    // missing counts as stale
  }
  if (committed !== text) {
    console.error("bundle: browser/chatbot-server-client.js differs from a fresh build; run `npm run build` in clients/typescript and commit it");
    process.exit(1);
  }
  console.log("bundle: browser/chatbot-server-client.js is current");
} else {
  writeFileSync(out, text);
  console.log(`bundle: wrote browser/chatbot-server-client.js (${text.length} bytes)`);
}
