// Browser test of the dashboard's Schedules page, in headless Debian Chromium driven by playwright-core.
//
//   BRIGADE_URL=http://127.0.0.1:7070 node tests/browser/schedules-page.mjs
//
// Creates a schedule firing every 1 s through the API, opens #/schedules, waits for its row to
// show a next fire and a last job, pauses it with the row's button (the row then shows
// "paused" and the API agrees), fires it by hand with "Fire now" (a new last job), resumes
// it, and deletes it at the end. Screenshot: ${SCREENSHOT_DIR:-target}/schedules.png
// (schedules-failure.png when it fails). Optional: BRIGADE_TOKEN, CHROMIUM, TIMEOUT_MS.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.BRIGADE_URL || 'http://127.0.0.1:7070').replace(/\/$/, '');
const token = process.env.BRIGADE_TOKEN || '';
const shots = process.env.SCREENSHOT_DIR || 'target';
const deadline = Number(process.env.TIMEOUT_MS || 60000);

function log(...a) {
  console.log(`[schedules test ${new Date().toISOString().slice(11, 23)}]`, ...a);
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
let schedule;
let failed = false;
try {
  mkdirSync(shots, { recursive: true });
  schedule = await api('/v1/schedules', {
    method: 'POST',
    body: JSON.stringify({
      name: 'browser-tick',
      every_ms: 1000,
      overlap: 'allow',
      job: { name: 'tick', tasks: [{ kind: 'noop' }] },
    }),
  });
  log(`schedule ${schedule.id} created`);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 800 }, colorScheme: 'dark' });
  page.setDefaultTimeout(deadline);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console error: ${m.text()}`));

  await page.goto(base + '/');
  if (token) {
    await page.click('[data-testid=login-open]');
    await page.fill('[data-testid=token-input]', token);
    await page.click('[data-testid=token-save]');
  }
  await page.click('[data-testid=nav-schedules]');
  const row = `[data-testid=schedule-row][data-schedule-id="${schedule.id}"]`;
  await page.waitForSelector(`${row}[data-paused=false]`);
  // It fires on its own: the row shows the job of a fire.
  await page.waitForSelector(`${row} [data-testid=schedule-last-job]`);
  const next = await page.textContent(`${row} [data-testid=schedule-next]`);
  if (!/^(in \d+s|now)$/.test(next.trim())) throw new Error(`next fire shows ${JSON.stringify(next)}`);
  log(`row shows next fire "${next.trim()}" and a last job`);
  await page.screenshot({ path: join(shots, 'schedules.png'), fullPage: true });

  await page.click(`${row} [data-testid=pause-schedule]`);
  await page.waitForSelector(`${row}[data-paused=true] [data-testid=schedule-paused]`);
  const paused = await api(`/v1/schedules/${schedule.id}`);
  if (!paused.paused || paused.next_fire_at !== null) throw new Error(`paused in the page, not in the API: ${JSON.stringify(paused)}`);
  log('paused from the page');

  const before = paused.last_job_id;
  await page.click(`${row} [data-testid=trigger-schedule]`);
  await page.waitForFunction(
    ([sel, old]) => {
      const a = document.querySelector(`${sel} [data-testid=schedule-last-job]`);
      return a && !a.getAttribute('href').endsWith(old);
    },
    [row, before],
  );
  const fired = await api(`/v1/schedules/${schedule.id}`);
  if (fired.last_job_id === before) throw new Error('"Fire now" made no job');
  log(`fired by hand: job ${fired.last_job_id}`);

  await page.click(`${row} [data-testid=resume-schedule]`);
  await page.waitForSelector(`${row}[data-paused=false]`);
  const resumed = await api(`/v1/schedules/${schedule.id}`);
  if (resumed.paused || !resumed.next_fire_at) throw new Error(`resume did not reach the API: ${JSON.stringify(resumed)}`);
  log('resumed from the page');

  if (problems.length) throw new Error(problems.join('\n'));
  log('ok');
} catch (e) {
  failed = true;
  console.error('FAILED:', e.message);
  if (page) await page.screenshot({ path: join(shots, 'schedules-failure.png'), fullPage: true }).catch(() => {});
} finally {
  if (schedule) await api(`/v1/schedules/${schedule.id}`, { method: 'DELETE' }).catch(() => {});
  if (browser) await browser.close();
}
process.exit(failed ? 1 : 0);
