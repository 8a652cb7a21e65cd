// Browser test of the overview's Limits card, in headless Debian Chromium driven by playwright-core.
//
//   BRIGADE_URL=http://127.0.0.1:7070 node tests/browser/limits-card.mjs
//
// Sets a concurrency limit of 1 on a key through the API, submits three `sleep` tasks naming
// it, opens the overview and waits for the card to show the key with 1 running and the other
// two held back; then removes the limit and waits for the card to hide (and cancels the job).
// Screenshot: ${SCREENSHOT_DIR:-target}/limits.png (limits-failure.png when it fails).
// Optional: BRIGADE_TOKEN (an admin's), CHROMIUM, TIMEOUT_MS.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.BRIGADE_URL || 'http://127.0.0.1:7070').replace(/\/$/, '');
const token = process.env.BRIGADE_TOKEN || '';
const shots = process.env.SCREENSHOT_DIR || 'target';
const deadline = Number(process.env.TIMEOUT_MS || 60000);
const key = 'browser:slow';

function log(...a) {
  console.log(`[limits test ${new Date().toISOString().slice(11, 23)}]`, ...a);
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
let job;
let failed = false;
try {
  mkdirSync(shots, { recursive: true });
  await api(`/v1/limits/${encodeURIComponent(key)}`, { method: 'PUT', body: JSON.stringify({ concurrency: 1 }) });
  job = await api('/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({
      name: 'browser-limited',
      tasks: [0, 1, 2].map(() => ({ kind: 'sleep', input: { ms: 30000 }, limits: [key] })),
    }),
  });
  log(`limit set, job ${job.id} submitted`);

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

  await page.goto(base + '/');
  if (token) {
    await page.click('[data-testid=login-open]');
    await page.fill('[data-testid=token-input]', token);
    await page.click('[data-testid=token-save]');
  }
  const row = `[data-testid=limit-row][data-key="${key}"]`;
  await page.waitForSelector(`[data-testid=limits-card]:not([hidden]) ${row}`);
  await page.waitForFunction(
    (sel) => {
      const r = document.querySelector(sel);
      return r && r.querySelector('[data-testid=limit-running]').textContent.trim() === '1'
        && r.querySelector('[data-testid=limit-waiting]').textContent.trim() === '2';
    },
    row,
  );
  log('the card shows 1 running and 2 held back');
  await page.screenshot({ path: join(shots, 'limits.png'), fullPage: true });

  // Removing it lets the other two start: their events refresh the card, which hides.
  await api(`/v1/limits/${encodeURIComponent(key)}`, { method: 'DELETE' });
  await page.waitForSelector('[data-testid=limits-card][hidden]', { state: 'attached' });
  log('removed: the card is hidden');
  if (problems.length) throw new Error(problems.join('\n'));
} catch (e) {
  failed = true;
  console.error(e);
  if (page) await page.screenshot({ path: join(shots, 'limits-failure.png'), fullPage: true }).catch(() => {});
} finally {
  if (job) await api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }).catch(() => {});
  await api(`/v1/limits/${encodeURIComponent(key)}`, { method: 'DELETE' }).catch(() => {});
  if (browser) await browser.close();
}
process.exit(failed ? 1 : 0);
