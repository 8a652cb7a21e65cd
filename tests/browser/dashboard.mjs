// Browser test of the brigade dashboard, in headless Debian Chromium driven by playwright-core.
//
//   BRIGADE_URL=http://127.0.0.1:7070 node tests/browser/dashboard.mjs
//
// Needs a live server with at least one worker that runs `sleep`. Submits a job of 40 sleep
// tasks, watches it appear and reach `succeeded` on the overview (the page learns this from
// the live event stream, never by reloading), opens the job page and a task's detail, and
// saves screenshots to ${SCREENSHOT_DIR:-target}/dashboard.png, dashboard-job.png and dashboard-task.png.
// Exits non-zero on any failure. Optional: BRIGADE_TOKEN (bearer token, typed into the
// login box like a user would), CHROMIUM (default /usr/bin/chromium), TIMEOUT_MS (default 60000).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.BRIGADE_URL || 'http://127.0.0.1:7070').replace(/\/$/, '');
const token = process.env.BRIGADE_TOKEN || '';
const shots = process.env.SCREENSHOT_DIR || 'target';
const deadline = Number(process.env.TIMEOUT_MS || 60000);
const TASKS = 40;

function log(...a) {
  console.log(`[dashboard test ${new Date().toISOString().slice(11, 23)}]`, ...a);
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
  const workers = await api('/v1/workers');
  const active = workers.filter((w) => w.state === 'active');
  if (!active.length) throw new Error('the server has no active worker; start one first');
  log(`${active.length} active worker(s): ${active.map((w) => w.name).join(', ')}`);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, colorScheme: 'dark' });
  page.setDefaultTimeout(deadline);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));
  // Nothing may be fetched from anywhere but the server under test.
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
  // The live stream must be up before the job is submitted: the page learns of it from events.
  await page.waitForSelector('[data-testid=conn-status][data-state=live]');
  await page.waitForSelector('[data-testid=worker-row][data-state=active]');
  log('overview loaded, event stream live');

  const job = await api('/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({
      name: 'browser-test',
      labels: { suite: 'dashboard' },
      tasks: Array.from({ length: TASKS }, (_, i) => ({ kind: 'sleep', name: `nap-${i}`, input: { ms: 300 } })),
    }),
  });
  log(`submitted job ${job.id} with ${TASKS} tasks`);
  const row = `[data-testid=job-row][data-job-id="${job.id}"]`;
  await page.waitForSelector(row);
  log('job row appeared');
  // Progress is shown while it runs (running or part-done), then it reaches succeeded.
  await page.waitForSelector(`${row}[data-state=succeeded]`);
  const badge = (await page.textContent(`${row} [data-testid=job-state]`)).trim();
  if (badge !== 'succeeded') throw new Error(`job badge says ${badge}`);
  const progress = (await page.textContent(`${row} .prog-cell .txt`)).trim();
  if (!progress.startsWith(`${TASKS}/${TASKS}`)) throw new Error(`progress text is ${progress}`);
  log(`job succeeded in the UI (${progress})`);
  // The throughput chart counted the finished tasks from the event stream.
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid=throughput-chart]')?.dataset.total || 0) >= n,
    TASKS,
  );
  // Each active worker's load over time is charted from the samples the page took.
  await page.waitForFunction(
    () => [...document.querySelectorAll('[data-testid=worker-row][data-state=active] [data-testid=worker-load-chart]')]
      .filter((c) => Number(c.dataset.samples) >= 2).length >= 1,
  );
  // The activity feed lists the job's events as they happened.
  await page.waitForSelector('[data-testid=activity-row][data-type="job.finished"]');
  const fed = await page.locator('[data-testid=activity-row][data-type="task.succeeded"]').count();
  if (fed < 1) throw new Error('the activity feed shows no task.succeeded');
  log(`activity feed: ${fed} task.succeeded rows, job.finished shown`);
  await page.waitForTimeout(600); // let the 1 s tick redraw the stat tiles
  await page.screenshot({ path: join(shots, 'dashboard.png'), fullPage: true });
  log(`screenshot ${join(shots, 'dashboard.png')}`);

  await page.click(`${row} a`);
  await page.waitForSelector(`[data-testid=job-page][data-job-id="${job.id}"]`);
  await page.waitForSelector('[data-testid=job-page] [data-testid=job-state]:text("succeeded")');
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=task-row][data-state=succeeded]').length === n, TASKS);
  const bars = await page.locator('[data-testid=gantt] rect[data-task-id]').count();
  if (bars !== TASKS) throw new Error(`timeline shows ${bars} bars, want ${TASKS}`);
  await page.screenshot({ path: join(shots, 'dashboard-job.png'), fullPage: true });
  await page.click('[data-testid=task-row] >> nth=0');
  await page.waitForSelector('[data-testid=task-detail] [data-testid=task-history]');
  const output = await page.textContent('[data-testid=task-output]');
  if (!output.includes('slept_ms')) throw new Error(`task output is ${output}`);
  await page.screenshot({ path: join(shots, 'dashboard-task.png') });
  log(`job page: ${TASKS} task rows, ${bars} timeline bars, task detail with history; screenshots dashboard-job.png, dashboard-task.png`);

  if (problems.length) throw new Error(problems.join('\n'));
  log('PASS');
} catch (e) {
  failed = true;
  console.error('FAIL:', e?.stack || e);
  if (page) await page.screenshot({ path: join(shots, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
} finally {
  if (browser) await browser.close();
}
process.exit(failed ? 1 : 0);
