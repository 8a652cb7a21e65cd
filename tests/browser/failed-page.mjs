// Browser test of the dashboard's Failed page, in headless Debian Chromium driven by playwright-core.
//
//   BRIGADE_URL=http://127.0.0.1:7070 node tests/browser/failed-page.mjs
//
// Submits a job of three `fail` and two `flaky` tasks that all fail for good (max_attempts 1),
// opens #/failed from the nav, filters by kind `fail` and the job (other tests share the
// server), checks the rows (error kind and message, attempt, link to the task), clicks
// "Retry all matching" (the confirm dialog names the filters; the page says 3 were retried)
// and checks through the API that exactly the three `fail` tasks ran a second attempt. Then
// per-row Retry on a `flaky` task reaches the API too, Next/Previous page through the job's
// five tasks two at a time, the state selector shows none cancelled, and a 403 from the bulk
// retry (a client token; answered by the test) shows inline that it needs an admin token.
// Screenshots: ${SCREENSHOT_DIR:-target}/failed.png, failed-403.png (failed-failure.png when
// it fails).
// Optional: BRIGADE_TOKEN, CHROMIUM, TIMEOUT_MS.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.BRIGADE_URL || 'http://127.0.0.1:7070').replace(/\/$/, '');
const token = process.env.BRIGADE_TOKEN || '';
const shots = process.env.SCREENSHOT_DIR || 'target';
const deadline = Number(process.env.TIMEOUT_MS || 60000);

function log(...a) {
  console.log(`[failed test ${new Date().toISOString().slice(11, 23)}]`, ...a);
}

async function api(path, init = {}) {
  const headers = { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const res = await fetch(base + path, { ...init, headers });
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method || 'GET'} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function until(what, fn) {
  const end = Date.now() + deadline;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function jobTasks(id) {
  return (await api(`/v1/jobs/${id}/tasks?limit=1000`)).items;
}

let browser;
let page;
let failed = false;
try {
  mkdirSync(shots, { recursive: true });
  const fail = { kind: 'fail', max_attempts: 1, input: { message: 'burnt on purpose', retryable: false } };
  const flaky = { kind: 'flaky', max_attempts: 1, input: { fail_attempts: 1000 } };
  const job = await api('/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({ name: 'browser-failed', tasks: [fail, fail, fail, flaky, flaky] }),
  });
  log(`job ${job.id} submitted`);
  await until('all five tasks to fail', async () => (await jobTasks(job.id)).every((t) => t.state === 'failed'));
  const before = await jobTasks(job.id);
  const failIds = before.filter((t) => t.kind === 'fail').map((t) => t.id).sort();
  const flakyIds = before.filter((t) => t.kind === 'flaky').map((t) => t.id).sort();
  log(`five tasks failed: ${failIds.length} fail, ${flakyIds.length} flaky`);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 }, colorScheme: 'dark' });
  page.setDefaultTimeout(deadline);
  const problems = [];
  let expect403 = false;
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Chromium logs the 403 the test answers on purpose.
    if (expect403 && /status of 403/.test(m.text())) return;
    problems.push(`console error: ${m.text()}`);
  });

  await page.goto(base + '/');
  if (token) {
    await page.click('[data-testid=login-open]');
    await page.fill('[data-testid=token-input]', token);
    await page.click('[data-testid=token-save]');
  }
  await page.click('[data-testid=nav-failed]');
  await page.waitForSelector('[data-testid=failed-page]');
  if ((await page.inputValue('[data-testid=failed-state]')) !== 'failed') throw new Error('state does not default to failed');

  await page.fill('[data-testid=failed-filter-kind]', 'fail');
  await page.fill('[data-testid=failed-filter-job]', job.id);
  await page.click('[data-testid=failed-apply]');
  const rows = `[data-testid=failed-row][data-job-id="${job.id}"]`;
  await page.waitForFunction(
    ([sel]) => document.querySelectorAll(sel).length === 3 && document.querySelectorAll('[data-testid=failed-row]').length === 3,
    [rows],
  );
  const shown = (await page.$$eval(rows, (rs) => rs.map((r) => `${r.dataset.taskId} ${r.dataset.kind}`))).sort();
  if (JSON.stringify(shown) !== JSON.stringify(failIds.map((id) => `${id} fail`))) throw new Error(`filtered rows: ${JSON.stringify(shown)}`);
  const err = await page.textContent(`${rows} [data-testid=failed-error]`);
  if (!/handler/.test(err) || !/burnt on purpose/.test(err)) throw new Error(`error cell shows ${JSON.stringify(err)}`);
  const href = await page.getAttribute(`${rows} [data-testid=failed-task-link]`, 'href');
  if (!href.startsWith(`#/jobs/${job.id}/tasks/`)) throw new Error(`task link is ${href}`);
  if (!/kind=fail/.test(await page.evaluate(() => location.hash))) throw new Error('the filters are not in the address');
  log('filtered by kind and job: the three fail tasks, error and link shown');
  await page.screenshot({ path: join(shots, 'failed.png'), fullPage: true });

  let dialogText = '';
  page.once('dialog', (d) => {
    dialogText = d.message();
    d.accept();
  });
  await page.click('[data-testid=retry-matching]');
  await page.waitForSelector('[data-testid=failed-msg][data-kind=ok] [data-testid=retried-count]');
  const count = await page.textContent('[data-testid=retried-count]');
  if (count.trim() !== '3') throw new Error(`page says ${count} retried`);
  if (!/kind = fail/.test(dialogText) || !dialogText.includes(`job = ${job.id}`) || !/state = failed/.test(dialogText)) {
    throw new Error(`confirm dialog shows ${JSON.stringify(dialogText)}`);
  }
  // Each retried task gets a fresh attempt, fails again, and has two attempts in its history.
  await until('the three fail tasks to run again', async () => {
    const ts = await Promise.all(failIds.map((id) => api(`/v1/tasks/${id}`)));
    return ts.every((t) => t.state === 'failed' && t.history.length === 2);
  });
  for (const id of flakyIds) {
    const t = await api(`/v1/tasks/${id}`);
    if (t.history.length !== 1) throw new Error(`flaky task ${id} was retried by a kind=fail bulk retry`);
  }
  log('Retry all matching: 3 retried, exactly the fail tasks ran again');

  // Per-row retry of one flaky task.
  await page.fill('[data-testid=failed-filter-kind]', 'flaky');
  await page.click('[data-testid=failed-apply]');
  await page.waitForFunction(
    ([sel]) => document.querySelectorAll(sel).length === 2 && [...document.querySelectorAll(sel)].every((r) => r.dataset.kind === 'flaky'),
    [rows],
  );
  await page.click(`${rows}[data-task-id="${flakyIds[0]}"] [data-testid=failed-retry-row]`);
  await until('the flaky task to run again', async () => (await api(`/v1/tasks/${flakyIds[0]}`)).history.length === 2);
  if ((await api(`/v1/tasks/${flakyIds[1]}`)).history.length !== 1) throw new Error('per-row retry retried the other row too');
  log('per-row Retry reached the API');

  // Paging by cursor: the job's five failed tasks, two a page (page size from the address).
  await until('all five tasks to be failed again', async () => (await jobTasks(job.id)).every((t) => t.state === 'failed'));
  await page.goto(`${base}/#/failed?job=${job.id}&limit=2`);
  const seen = [];
  for (const [n, want] of [[1, 2], [2, 2], [3, 1]]) {
    if (n > 1) await page.click('[data-testid=failed-next]');
    await page.waitForFunction(
      ([no, k]) =>
        document.querySelector('[data-testid=failed-page-no]')?.textContent === `page ${no}` &&
        document.querySelectorAll('[data-testid=failed-row]').length === k,
      [n, want],
    );
    seen.push(...(await page.$$eval(rows, (rs) => rs.map((r) => r.dataset.taskId))));
  }
  if (!(await page.isDisabled('[data-testid=failed-next]'))) throw new Error('Next is enabled on the last page');
  if (JSON.stringify([...new Set(seen)].sort()) !== JSON.stringify([...failIds, ...flakyIds].sort()) || seen.length !== 5) {
    throw new Error(`pages showed ${JSON.stringify(seen)}`);
  }
  await page.click('[data-testid=failed-prev]');
  await page.waitForFunction(() => document.querySelector('[data-testid=failed-page-no]')?.textContent === 'page 2');
  log('paging: 2 + 2 + 1 rows over three pages, each task once, Previous goes back');

  // The state selector: none of the job's tasks was cancelled.
  await page.selectOption('[data-testid=failed-state]', 'cancelled');
  await page.waitForSelector('[data-testid=failed-empty]');
  if (!/state=cancelled/.test(await page.evaluate(() => location.hash))) throw new Error('state=cancelled is not in the address');
  log('state cancelled: no rows for the job');

  // A client token's bulk retry is a 403: the page says it needs an admin token.
  expect403 = true;
  await page.route('**/v1/tasks/retry', (r) =>
    r.fulfill({
      status: 403,
      contentType: 'application/problem+json',
      body: JSON.stringify({ type: 'about:blank', title: 'Forbidden', status: 403, detail: 'this needs the admin role' }),
    }),
  );
  page.once('dialog', (d) => d.accept());
  await page.click('[data-testid=retry-matching]');
  await page.waitForSelector('[data-testid=failed-msg][data-kind=err]');
  const msg = await page.textContent('[data-testid=failed-msg]');
  if (!/admin token/.test(msg)) throw new Error(`403 shows ${JSON.stringify(msg)}`);
  await page.screenshot({ path: join(shots, 'failed-403.png'), fullPage: true });
  await page.unroute('**/v1/tasks/retry');
  log('403 shown inline: needs an admin token');

  if (problems.length) throw new Error(problems.join('\n'));
  log('ok');
} catch (e) {
  failed = true;
  console.error('FAILED:', e.message);
  if (page) await page.screenshot({ path: join(shots, 'failed-failure.png'), fullPage: true }).catch(() => {});
} finally {
  if (browser) await browser.close();
}
process.exit(failed ? 1 : 0);
