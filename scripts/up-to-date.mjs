// Whether a build step can be skipped: exits 0 when every output exists and is newer than every
// input (files, or folders searched whole), 1 otherwise, saying why on stderr.
//   node scripts/up-to-date.mjs <output>... -- <input>...
// The build scripts run a step as `node scripts/up-to-date.mjs OUT -- IN || <step>`, so a fresh
// clone (no outputs) and any changed input build, and an unchanged tree builds nothing. A step
// that can leave outputs behind when it fails (tsc emits despite type errors) names a stamp file
// it touches only on success. To force a full build: rm -rf dist build.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const args = process.argv.slice(2);
const sep = args.indexOf("--");
if (sep < 1 || sep === args.length - 1) {
  console.error("usage: node scripts/up-to-date.mjs <output>... -- <input>...");
  process.exit(2);
}
const outputs = args.slice(0, sep);
const inputs = args.slice(sep + 1);

/** The newest modification time under path (a file, or a folder searched whole), with its file. */
function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return { ms: st.mtimeMs, file: path };
  let best = { ms: st.mtimeMs, file: path };
  for (const e of readdirSync(path)) {
    const n = newest(join(path, e));
    if (n.ms > best.ms) best = n;
  }
  return best;
}

let oldestOut = { ms: Infinity, file: "" };
for (const o of outputs) {
  let ms;
  try {
    ms = statSync(o).mtimeMs;
  } catch {
    console.error(`build: ${o} is missing`);
    process.exit(1);
  }
  if (ms < oldestOut.ms) oldestOut = { ms, file: o };
}
for (const i of inputs) {
  const n = newest(i);
  if (n.ms > oldestOut.ms) {
    console.error(`build: ${n.file} is newer than ${oldestOut.file}`);
    process.exit(1);
  }
}
console.error(`build: ${outputs.join(", ")} up to date`);
