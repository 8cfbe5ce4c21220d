// The CI drift checks: the generated types and the browser bundle committed
// in clients/typescript are exactly what the specs and the sources give now.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
let failed = false;
for (const script of ["generate-types.mjs", "bundle.mjs"]) {
  try {
    execFileSync(process.execPath, [join(here, script), "--check"], { stdio: "inherit" });
  } catch {
    failed = true;
  }
}
if (failed) process.exit(1);
console.log("check: the generated types and the browser bundle are current");
