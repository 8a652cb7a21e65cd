// Browser test of the job page's graph, in headless Debian Chromium driven by playwright-core.
//
//   BRIGADE_URL=http://127.0.0.1:7070 node tests/browser/graph-page.mjs
//
// Submits a diamond (a → b, c → d) whose `b` reports progress and holds for a while, plus a
// task `spawner` that spawns three children, opens the job page, and checks the graph: one node
// per key, the four edges of the diamond and a dashed one to the spawned tasks, `b` drawn
// running while `d` waits, then every node succeeded; and `b`'s progress bar in the tasks table.
// Screenshot: ${SCREENSHOT_DIR:-target}/graph.png (graph-failure.png when it fails).
// Optional: BRIGADE_TOKEN, CHROMIUM, TIMEOUT_MS.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.BRIGADE_URL || 'http://127.0.0.1:7070').replace(/\/$/, '');
const token = process.env.BRIGADE_TOKEN || '';
const shots = process.env.SCREENSHOT_DIR || 'target';
const deadline = Number(process.env.TIMEOUT_MS || 60000);

function log(...a) {
  console.log(`[graph test ${new Date().toISOString().slice(11, 23)}]`, ...a);
}

async function api(path, init = {}) {
  const headers = { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const res = await fetch(base + path, { ...init, headers });
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method || 'GET'} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

let browser;
let page;
let failed = false;
try {
  mkdirSync(shots, { recursive: true });
  const job = await api('/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({
      name: 'browser-graph',
      tasks: [
        { kind: 'flow', key: 'a', input: { value: 'a' } },
        { kind: 'flow', key: 'b', after: ['a'], input: { value: 'b', progress: { done: 3, total: 10, message: 'crunching' }, hold_ms: 2500 } },
        { kind: 'flow', key: 'c', after: ['a'], input: { value: 'c' } },
        { kind: 'flow', key: 'd', after: ['b', 'c'], input: { value: 'd' } },
        { kind: 'flow', key: 'spawner', input: { value: 's', spawn: [0, 1, 2].map(() => ({ kind: 'noop' })) } },
      ],
    }),
  });
  log(`job ${job.id} submitted`);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 }, colorScheme: 'dark' });
  page.setDefaultTimeout(deadline);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));

  await page.goto(`${base}/#/jobs/${job.id}`);
  if (token) {
    await page.click('[data-testid=login-open]');
    await page.fill('[data-testid=token-input]', token);
    await page.click('[data-testid=token-save]');
  }
  const node = (key) => `[data-testid=graph-card]:not([hidden]) [data-testid=graph-node][data-key="${key}"]`;
  // While b holds, it is drawn running and d, which waits for it, is not done.
  await page.waitForSelector(`${node('b')}[data-state=running]`);
  const dState = await page.getAttribute(node('d'), 'data-state');
  if (dState === 'succeeded' || dState === 'running') throw new Error(`d is ${dState} while b runs`);
  const bar = await page.waitForSelector('[data-testid=task-progress]');
  const barText = (await bar.textContent()).trim();
  if (!barText.includes('3/10') || !barText.includes('crunching')) throw new Error(`progress shows ${JSON.stringify(barText)}`);
  log(`b running with its progress (${barText}), d ${dState}`);
  await page.screenshot({ path: join(shots, 'graph.png'), fullPage: true });

  for (const k of ['a', 'b', 'c', 'd', 'spawner']) await page.waitForSelector(`${node(k)}[data-state=succeeded]`);
  const spawned = await page.waitForSelector('[data-testid=graph-node][data-key="spawned by spawner"][data-state=succeeded]');
  if ((await spawned.getAttribute('data-tasks')) !== '3') throw new Error('the spawned node does not hold the 3 children');
  const edges = await page.$$eval('[data-testid=graph-edge]', (es) => es.map((e) => `${e.dataset.from}>${e.dataset.to}${e.classList.contains('g-spawn') ? ' spawn' : ''}`).sort());
  const want = ['k:a>k:b', 'k:a>k:c', 'k:b>k:d', 'k:c>k:d', 'k:spawner>s:spawner spawn'].sort();
  if (JSON.stringify(edges) !== JSON.stringify(want)) throw new Error(`edges ${JSON.stringify(edges)}, want ${JSON.stringify(want)}`);
  log('every node succeeded; the edges are the diamond and the spawn');
  await page.screenshot({ path: join(shots, 'graph-done.png'), fullPage: true });
  if (problems.length) throw new Error(problems.join('\n'));
  log('ok');
} catch (e) {
  failed = true;
  console.error(e);
  if (page) await page.screenshot({ path: join(shots, 'graph-failure.png'), fullPage: true }).catch(() => {});
} finally {
  if (browser) await browser.close();
}
process.exit(failed ? 1 : 0);
