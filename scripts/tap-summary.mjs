// Reads tap's console output and prints one "N passed, N failed" line for CI.
import { readFileSync } from 'node:fs';
const text = readFileSync(process.argv[2], 'utf8');
const m = [...text.matchAll(/^# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?(?:, skip: (\d+))?/gm)].pop();
if (!m) { console.log('0 passed, 1 failed'); process.exit(1); }
const [, total, pass, fail = '0', skip = '0'] = m;
console.log(`${pass} passed, ${fail} failed` + (Number(skip) ? `, ${skip} skipped` : ''));
if (Number(pass) === 0 || Number(total) === 0) process.exit(1);
