// Parses an AsyncAPI document with the official parser and prints every
// diagnostic; exits 1 when any has severity error (or the document does not
// parse at all), so CI fails on an invalid protocol description.
import { Parser, fromFile } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "info", "hint"];
const path = process.argv[2] ?? "asyncapi.yaml";

const { document, diagnostics } = await fromFile(new Parser(), path).parse();
for (const d of diagnostics) {
  const where = d.path?.length ? d.path.join(".") : "(document)";
  const line = d.range ? `:${d.range.start.line + 1}` : "";
  console.log(`${SEVERITY[d.severity] ?? d.severity} ${d.code} ${path}${line} ${where}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === 0).length;
if (errors > 0 || document === undefined) {
  console.error(`asyncapi: ${path} is not valid (${errors} error(s))`);
  process.exit(1);
}
const channels = document.channels().length;
const messages = document.allMessages().length;
console.log(`asyncapi: ${path} is valid AsyncAPI ${document.version()}: ${channels} channels, ${messages} messages, ${diagnostics.length} other diagnostic(s)`);
