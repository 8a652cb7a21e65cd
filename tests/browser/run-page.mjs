// Browser test of the dashboard's Run page, in headless Debian Chromium driven by playwright-core.
//
//   BRIGADE_URL=http://127.0.0.1:7070 node tests/browser/run-page.mjs
//
// Needs a live server with a worker that runs `code` in C. Opens #/run, picks C, types a
// program into the editor like a user (it adds two numbers, but is wrong when the first is
// 7), adds three tests (one of them expecting the wrong answer), runs it, and checks the
// per-test verdicts (accepted, accepted, wrong answer), the passed count, the worker that
// ran it and the run history; then opens the judge view of that job. Screenshots:
// ${SCREENSHOT_DIR:-target}/run-page.png (before the run), run-result.png (after),
// run-judge.png (judge view); run-failure.png when it fails. Optional: BRIGADE_TOKEN,
// CHROMIUM (default /usr/bin/chromium), TIMEOUT_MS (default 90000).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.BRIGADE_URL || 'http://127.0.0.1:7070').replace(/\/$/, '');
const token = process.env.BRIGADE_TOKEN || '';
const shots = process.env.SCREENSHOT_DIR || 'target';
const deadline = Number(process.env.TIMEOUT_MS || 90000);

// Typed line by line; the editor indents and closes brackets by itself, so each line
// is typed without its leading spaces and closing braces are left to the editor.
const PROGRAM = [
  '#include <stdio.h>',
  'int main(void) {',
  'long a, b;',
  'if (scanf("%ld %ld", &a, &b) != 2) return 1;',
  'printf("%ld\\n", a == 7 ? a + b + 1 : a + b);',
  'return 0;',
];
const TESTS = [
  { name: 'small', stdin: '1 2', expected: '3' },
  { name: 'large', stdin: '1000000 2000000', expected: '3000000' },
  { name: 'seven', stdin: '7 1', expected: '8' },
];

function log(...a) {
  console.log(`[run page test ${new Date().toISOString().slice(11, 23)}]`, ...a);
}

let browser;
let page;
let failed = false;
try {
  mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 1100 }, colorScheme: 'light' });
  page.setDefaultTimeout(deadline);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
  const origin = new URL(base).origin;
  page.on('request', (r) => {
    if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) problems.push(`request outside the server: ${r.url()}`);
  });

  await page.goto(base + '/');
  if (token) {
    await page.click('[data-testid=login-open]');
    await page.fill('[data-testid=token-input]', token);
    await page.click('[data-testid=token-save]');
  }
  await page.click('[data-testid=nav-run]');
  await page.waitForSelector('[data-testid=run-page]');
  // The highlighting editor (CodeMirror, served by this server) replaces the fallback textarea.
  await page.waitForSelector('[data-testid=run-editor][data-ready=true] .cm-content');
  await page.waitForSelector('[data-testid=run-language] option[value=c]', { state: 'attached' });
  await page.selectOption('[data-testid=run-language]', 'c');
  log('run page loaded; languages:', await page.$$eval('[data-testid=run-language] option', (o) => o.map((x) => x.textContent).join(', ')));

  // Write the program: select all, then type it.
  await page.click('[data-testid=run-editor] .cm-content');
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  for (const line of PROGRAM) {
    await page.keyboard.type(line);
    // Close the completion popup, if any, so Enter makes a new line.
    await page.keyboard.press('Escape');
    await page.keyboard.press('Enter');
  }
  const typed = await page.$$eval('[data-testid=run-editor] .cm-line', (l) => l.map((x) => x.textContent.replace(/\u00a0/g, ' ')));
  if (typed.length < PROGRAM.length || !typed.some((l) => l.includes('a == 7 ? a + b + 1'))) {
    throw new Error(`the editor holds:\n${typed.join('\n')}`);
  }
  // Syntax highlighting: the editor marked up tokens (keywords, strings) in spans.
  const styled = await page.$$eval('[data-testid=run-editor] .cm-line span', (s) => s.length);
  if (styled < 5) throw new Error(`only ${styled} highlighted tokens`);

  for (const [i, t] of TESTS.entries()) {
    await page.click('[data-testid=run-add-test]');
    const row = page.locator('[data-testid=run-test-row]').nth(i);
    await row.locator('[data-testid=run-test-name]').fill(t.name);
    await row.locator('[data-testid=run-test-stdin]').fill(t.stdin);
    await row.locator('[data-testid=run-test-expected]').fill(t.expected);
  }
  // Adding and removing a row works too.
  await page.click('[data-testid=run-add-test]');
  await page.locator('[data-testid=run-test-remove]').nth(3).click();
  const rows = await page.locator('[data-testid=run-test-row]').count();
  if (rows !== 3) throw new Error(`${rows} test rows, want 3`);
  await page.screenshot({ path: join(shots, 'run-page.png'), fullPage: true });
  log('program typed, 3 tests entered; screenshot run-page.png');

  await page.click('[data-testid=run-submit]');
  await page.waitForSelector('[data-testid=run-result] [data-testid=run-verdict]');
  const verdict = await page.getAttribute('[data-testid=run-verdict]', 'data-verdict');
  const per = await page.$$eval('[data-testid=run-test-result]', (r) => r.map((x) => x.dataset.verdict));
  log(`verdict ${verdict}; per test: ${per.join(', ')}`);
  if (verdict !== 'wrong_answer') throw new Error(`verdict ${verdict}, want wrong_answer`);
  if (per.join() !== 'accepted,accepted,wrong_answer') throw new Error(`per-test verdicts ${per}`);
  const passed = (await page.textContent('[data-testid=run-passed]')).trim();
  if (!passed.startsWith('2/3')) throw new Error(`passed shows ${passed}`);
  const worker = (await page.textContent('[data-testid=run-worker]')).trim();
  if (!/^on \S+/.test(worker)) throw new Error(`worker shows ${worker}`);
  // The failing test's output, on click.
  await page.locator('[data-testid=run-test-result]').nth(2).click();
  const out = (await page.textContent('[data-testid=run-test-stdout]:visible')).trim();
  if (out !== '9') throw new Error(`the failing test's stdout shows ${out}`);
  await page.waitForSelector('[data-testid=run-history-row]');
  await page.screenshot({ path: join(shots, 'run-result.png'), fullPage: true });
  log(`result: ${passed} passed, ${worker}; screenshot run-result.png`);

  await page.click('[data-testid=run-history-row] >> nth=0 >> a');
  await page.waitForSelector('[data-testid=judge-table] [data-testid=judge-row]');
  const dots = await page.$$eval('[data-testid=judge-row] .dot', (d) => d.map((x) => x.className));
  if (dots.length !== 3 || dots.filter((c) => c.includes('ok')).length !== 2) throw new Error(`judge view dots: ${dots}`);
  await page.screenshot({ path: join(shots, 'run-judge.png'), fullPage: true });
  log('judge view shows the run; screenshot run-judge.png');

  if (problems.length) throw new Error(problems.join('\n'));
  log('PASS');
} catch (e) {
  failed = true;
  console.error('FAIL:', e?.stack || e);
  if (page) await page.screenshot({ path: join(shots, 'run-failure.png'), fullPage: true }).catch(() => {});
} finally {
  if (browser) await browser.close();
}
process.exit(failed ? 1 : 0);
