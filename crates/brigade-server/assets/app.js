// brigade dashboard: one page of plain JavaScript over the REST API and the live event stream.
// No framework, no build step, nothing fetched from outside this server.
'use strict';

// ---------------------------------------------------------------- state

const TOKEN_KEY = 'brigade.token';
const THEME_KEY = 'brigade.theme';
const WINDOW_S = 300; // throughput window: 5 minutes of 1 s buckets
const DEBOUNCE_MS = 500;
const POLL_MS = 5000;

const S = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  route: { name: null }, // set by route() on load
  workers: null,
  queues: null,
  jobs: null,
  jobFilter: '',
  schedules: null, // the Schedules page's list
  // The Failed page: its filters, the page of tasks shown, and the cursors that led to it.
  failed: { filter: { state: 'failed', kind: '', queue: '', error_kind: '', job: '' }, items: null, next: null, cursor: null, back: [], seq: 0 },
  job: null, // the job shown on the job page
  tasks: null, // its tasks
  task: null, // the task open in the drawer
  taskId: null,
  heartbeatMs: 5000,
  // throughput buckets: second -> [succeeded, failed]
  tp: new Map(),
  connectedAt: null,
};

// ---------------------------------------------------------------- helpers

const $ = (sel, root = document) => root.querySelector(sel);

function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function ms(t) {
  return t ? Date.parse(t) : NaN;
}

function ago(t) {
  const d = (Date.now() - ms(t)) / 1000;
  if (!isFinite(d)) return '—';
  if (d < 1) return 'just now';
  if (d < 60) return `${Math.floor(d)}s ago`;
  if (d < 3600) return `${Math.floor(d / 60)}m ago`;
  if (d < 86400) return `${Math.floor(d / 3600)}h ago`;
  return `${Math.floor(d / 86400)}d ago`;
}

// "in 3s" for a time ahead, "3s ago" for one behind. A time that just
// passed is "now": a fire due this instant is being made, and the page
// catches up at its next refresh.
function until(t) {
  const d = (ms(t) - Date.now()) / 1000;
  if (!isFinite(d)) return '—';
  if (d < -2) return ago(t);
  if (d < 1) return 'now';
  if (d < 60) return `in ${Math.ceil(d)}s`;
  if (d < 3600) return `in ${Math.floor(d / 60)}m`;
  if (d < 86400) return `in ${Math.floor(d / 3600)}h`;
  return `in ${Math.floor(d / 86400)}d`;
}

function dur(v) {
  if (v == null || !isFinite(v)) return '—';
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
  const m = Math.floor(v / 60000);
  const s = Math.floor((v % 60000) / 1000);
  if (m < 60) return `${m}m ${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

function between(a, b) {
  const x = ms(a);
  const y = b ? ms(b) : NaN;
  return isFinite(x) && isFinite(y) ? y - x : null;
}

function clock(t) {
  if (!t) return '—';
  const d = new Date(t);
  return isNaN(d) ? '—' : d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function shortId(id) {
  return id ? String(id).slice(-8) : '—';
}

function pct(x) {
  return Math.max(0, Math.min(100, Math.round((x || 0) * 100)));
}

function json(v, max) {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return max && s.length > max ? s.slice(0, max) + '…' : s;
}

function badge(state, extra = '') {
  return `<span class="badge s-${esc(state)}" data-testid="${extra || 'state'}">${esc(state)}</span>`;
}

// Widths are set through the CSSOM after rendering: the page's CSP forbids inline style attributes.
function applyWidths(root) {
  for (const el of root.querySelectorAll('[data-w]')) {
    el.style.width = el.dataset.w + '%';
    // A single failure among hundreds must still show.
    if (+el.dataset.w > 0) el.style.minWidth = '3px';
  }
}

function workerName(id) {
  if (!id) return '—';
  const w = (S.workers || []).find((x) => x.id === id);
  return w ? w.name : shortId(id);
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, title, detail, errors) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title || `HTTP ${status}`;
    this.detail = detail || '';
    this.errors = errors || [];
  }
}

function headers(extra = {}) {
  const h = { Accept: 'application/json', ...extra };
  if (S.token) h.Authorization = `Bearer ${S.token}`;
  return h;
}

async function problem(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const e = new ApiError(res.status, body?.title || res.statusText, body?.detail, body?.errors);
  if (res.status === 401) openLogin('The server wants a valid token: ' + (e.detail || e.title));
  return e;
}

async function api(path, opts = {}) {
  const res = await fetch(path, {
    method: opts.method || 'GET',
    headers: headers(opts.body ? { 'Content-Type': 'application/json' } : {}),
    body: opts.body ? JSON.stringify(opts.body) : undefined,
    cache: 'no-store',
  });
  if (!res.ok) throw await problem(res);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// An admin action: POST, then tell the user how it went (the API's problem detail on failure).
async function act(path, done, verb) {
  try {
    await api(path, { method: 'POST' });
    toast(done, '', 'ok');
    return true;
  } catch (e) {
    showError(e, `Could not ${verb}`);
    return false;
  }
}

// ---------------------------------------------------------------- toasts and login

function toast(title, detail, kind = '') {
  const el = document.createElement('div');
  el.className = `toast ${kind}`;
  el.setAttribute('data-testid', kind === 'err' ? 'error-toast' : 'toast');
  el.innerHTML = `<b>${esc(title)}</b>${detail ? `<div>${esc(detail)}</div>` : ''}`;
  $('#toasts').append(el);
  setTimeout(() => el.remove(), kind === 'err' ? 8000 : 3000);
}

function showError(e, context) {
  if (e instanceof ApiError) {
    const fields = (e.errors || []).map((x) => `${x.field}: ${x.message}`).join('; ');
    toast(`${context} — ${e.status} ${e.title}`, [e.detail, fields].filter(Boolean).join(' — '), 'err');
  } else {
    toast(context, String(e?.message || e), 'err');
  }
}

function openLogin(hint) {
  $('#login').hidden = false;
  const h = $('#login-hint');
  if (hint) {
    h.textContent = hint;
    h.classList.add('err');
  }
  $('#token-input').value = S.token;
  $('#token-input').focus();
}

function setToken(t) {
  S.token = t;
  if (t) localStorage.setItem(TOKEN_KEY, t);
  else localStorage.removeItem(TOKEN_KEY);
  $('#login-btn').textContent = t ? 'Token ✓' : 'Token';
  $('#login-btn').classList.toggle('authed', !!t);
  restartEvents();
  refreshAll();
}

// ---------------------------------------------------------------- loading, debounced

const timers = new Map();
const lastRun = new Map();

// Run `fn` under `key` at most once per DEBOUNCE_MS; calls in between collapse into one.
function soon(key, fn) {
  if (timers.has(key)) return;
  const wait = Math.max(0, (lastRun.get(key) || 0) + DEBOUNCE_MS - Date.now());
  timers.set(
    key,
    setTimeout(async () => {
      timers.delete(key);
      lastRun.set(key, Date.now());
      try {
        await fn();
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) console.warn(key, e);
      }
    }, wait),
  );
}

// Per-worker load samples kept in the page, one per load of the workers list
// (every POLL_MS and on events): the small charts in the workers table.
const LOAD_SAMPLES = 120;
const loadHist = new Map(); // worker id -> [{cpu, mem, run}]

function sampleLoads(ws) {
  for (const w of ws) {
    if (w.state !== 'active' && w.state !== 'draining') continue;
    const h = loadHist.get(w.id) || [];
    h.push({ cpu: w.load?.cpu || 0, mem: w.load?.memory || 0, run: w.capacity ? w.running / w.capacity : 0 });
    if (h.length > LOAD_SAMPLES) h.splice(0, h.length - LOAD_SAMPLES);
    loadHist.set(w.id, h);
  }
}

// A sparkline of CPU, memory and busy slots (each 0..1) over the samples so far, newest at the right.
function loadChart(id) {
  const h = loadHist.get(id) || [];
  if (h.length < 2) return '<span class="faint">…</span>';
  const W = 120;
  const H = 26;
  const line = (k) =>
    h.map((p, i) => `${(W - ((h.length - 1 - i) / (LOAD_SAMPLES - 1)) * W).toFixed(1)},${(H - 1 - Math.max(0, Math.min(1, p[k])) * (H - 2)).toFixed(1)}`).join(' ');
  const last = h[h.length - 1];
  const title = `last ${h.length} samples: CPU ${pct(last.cpu)}%, memory ${pct(last.mem)}%, slots ${pct(last.run)}% busy`;
  return `<svg class="spark" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" data-testid="worker-load-chart" data-samples="${h.length}"><title>${esc(title)}</title>
    <polyline class="l-run" points="${line('run')}"/><polyline class="l-mem" points="${line('mem')}"/><polyline class="l-cpu" points="${line('cpu')}"/></svg>`;
}

async function loadWorkers() {
  S.workers = await api('/v1/workers');
  sampleLoads(S.workers);
  renderWorkers();
  renderStats();
}

async function loadQueues() {
  const [queues, limits] = await Promise.all([api('/v1/queues'), api('/v1/limits')]);
  S.queues = queues;
  S.limits = limits;
  renderQueues();
  renderLimits();
  renderStats();
}

async function loadJobs() {
  const q = S.jobFilter ? `&state=${encodeURIComponent(S.jobFilter)}` : '';
  const page = await api(`/v1/jobs?limit=50${q}`);
  S.jobs = page.items;
  renderJobs();
}

async function loadSchedules() {
  if (S.route.name !== 'schedules') return;
  const page = await api('/v1/schedules?limit=1000');
  // The state of each schedule's last job, for its row (a deleted job shows none).
  const last = await Promise.all(
    page.items.slice(0, 100).map((s) => (s.last_job_id ? api(`/v1/jobs/${encodeURIComponent(s.last_job_id)}`).catch(() => null) : null)),
  );
  if (S.route.name !== 'schedules') return;
  S.schedules = page.items;
  S.schedulesMore = !!page.next_cursor;
  S.lastJobs = new Map(last.filter(Boolean).map((j) => [j.id, j]));
  renderSchedules();
}

async function loadFailed() {
  if (S.route.name !== 'failed') return;
  const F = S.failed;
  const seq = ++F.seq;
  const q = new URLSearchParams(failedQuery(F.filter));
  q.set('limit', String(F.limit || FAILED_PAGE));
  if (F.cursor) q.set('cursor', F.cursor);
  try {
    const page = await api(`/v1/tasks?${q}`);
    // A newer load (other filters, another page) has started meanwhile: its answer wins.
    if (S.route.name !== 'failed' || seq !== F.seq) return;
    F.items = page.items;
    F.next = page.next_cursor || null;
    if (F.loadError) failedMsg('');
    F.loadError = null;
  } catch (e) {
    if (S.route.name !== 'failed' || seq !== F.seq) return;
    F.items = F.items || [];
    F.loadError = e;
  }
  renderFailed();
}

async function loadJob() {
  if (S.route.name !== 'job') return;
  const id = S.route.id;
  const [job, tasks] = await Promise.all([
    api(`/v1/jobs/${encodeURIComponent(id)}`),
    api(`/v1/jobs/${encodeURIComponent(id)}/tasks?limit=1000`),
  ]);
  if (S.route.name !== 'job' || S.route.id !== id) return;
  S.job = job;
  S.tasks = tasks.items;
  S.tasksMore = !!tasks.next_cursor;
  renderJob();
}

async function loadTask() {
  if (!S.taskId) return;
  const id = S.taskId;
  const [t, logs] = await Promise.all([
    api(`/v1/tasks/${encodeURIComponent(id)}`),
    api(`/v1/tasks/${encodeURIComponent(id)}/logs?limit=1000`).catch(() => null),
  ]);
  if (S.taskId !== id) return;
  S.task = t;
  S.taskLogs = logs ? logs.items : null;
  renderDrawer();
}

function refreshAll() {
  soon('workers', loadWorkers);
  soon('queues', loadQueues);
  if (S.route.name === 'overview') soon('jobs', loadJobs);
  if (S.route.name === 'job') soon('job', loadJob);
  if (S.route.name === 'schedules') soon('schedules', loadSchedules);
  if (S.route.name === 'failed') soon('failed', loadFailed);
  if (S.taskId) soon('task', loadTask);
}

// ---------------------------------------------------------------- live events over fetch()

// EventSource cannot send an Authorization header, so the stream is read with fetch() and parsed here.
let streamCtl = null;
let retryMs = 1000;

function setConn(state, text) {
  const el = $('#conn');
  el.dataset.state = state;
  el.lastElementChild.textContent = text;
}

function restartEvents() {
  if (streamCtl) streamCtl.abort();
  streamCtl = new AbortController();
  runEvents(streamCtl.signal);
}

async function runEvents(signal) {
  for (;;) {
    setConn('connecting', 'connecting');
    try {
      const res = await fetch('/v1/events', { headers: headers({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
      if (!res.ok) throw await problem(res);
      setConn('live', 'live');
      S.connectedAt = Date.now();
      retryMs = 1000;
      refreshAll(); // anything missed while disconnected
      loadHistory();
      await readSse(res.body, signal, onEvent);
    } catch (e) {
      if (signal.aborted) return;
      console.warn('event stream', e);
    }
    if (signal.aborted) return;
    setConn('offline', `offline, retry in ${Math.round(retryMs / 1000)}s`);
    await new Promise((r) => setTimeout(r, retryMs));
    retryMs = Math.min(retryMs * 2, 15000);
  }
}

async function readSse(body, signal, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + (buf.slice(cut, cut + 4).match(/^\r?\n\r?\n/)[0].length));
      let data = [];
      let type = 'message';
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? '' : line.slice(i + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'event') type = val;
      }
      if (!data.length) continue;
      try {
        const ev = JSON.parse(data.join('\n'));
        handle(ev.type ? ev : { ...ev, type });
      } catch (e) {
        console.warn('bad event', e);
      }
    }
  }
}

/** Fill the throughput chart's seconds before the page connected from the server's own counts. */
async function loadHistory() {
  try {
    const h = await api('/v1/stats/throughput');
    const until = Math.floor(ms(h.until) / 1000);
    const first = until - h.succeeded.length + 1;
    // From the connection on, the page counts the events itself.
    const upTo = Math.floor((S.connectedAt || Date.now()) / 1000);
    h.succeeded.forEach((ok, i) => {
      const sec = first + i;
      const bad = h.failed[i] || 0;
      if (sec < upTo && (ok || bad) && !S.tp.has(sec)) S.tp.set(sec, [ok, bad]);
    });
    S.seeded = true;
    renderThroughput();
    renderStats();
  } catch (e) {
    console.warn('throughput history', e);
  }
}

/** Most recent events kept for the Activity card. */
const ACTIVITY_MAX = 60;

/** The state an event's type stands for, for its badge colour. */
function eventTone(t) {
  if (t.endsWith('succeeded') || t === 'job.finished') return 'succeeded';
  if (t.endsWith('failed') || t === 'worker.lost') return 'failed';
  if (t.endsWith('started') || t === 'worker.joined') return 'running';
  if (t.endsWith('cancelled') || t === 'worker.left' || t.endsWith('skipped')) return 'cancelled';
  if (t.endsWith('retrying') || t.startsWith('schedule.')) return 'scheduled';
  return 'queued';
}

function renderActivity() {
  const el = $('#activity');
  if (!el) return;
  const evs = S.activity || [];
  $('#activity-count').textContent = evs.length ? String(evs.length) : '';
  if (!evs.length) {
    el.innerHTML = '<div class="empty">No events since the page connected.</div>';
    return;
  }
  el.innerHTML = `<table data-testid="activity-table"><tbody>${evs
    .map((e) => {
      const job = e.job_id ? `<a href="#/jobs/${esc(encodeURIComponent(e.job_id))}" class="mono">job ${esc(shortId(e.job_id))}</a>` : '';
      const task = e.task_id ? `<span class="mono faint">task ${esc(shortId(e.task_id))}</span>` : '';
      const worker = e.worker_id ? `<span>${esc(workerName(e.worker_id))}</span>` : '';
      const err = e.error && e.error.kind ? `<span class="s-failed">${esc(e.error.kind)}</span>` : '';
      return `<tr data-testid="activity-row" data-type="${esc(e.type)}"><td class="muted mono">${clock(e.at)}</td>
        <td><span class="badge s-${eventTone(e.type)}">${esc(e.type)}</span></td><td>${job} ${task}</td><td>${worker} ${err}</td></tr>`;
    })
    .join('')}</tbody></table>`;
}

function onEvent(ev) {
  const t = ev.type || '';
  if (t && t !== 'stream.lagged') {
    (S.activity ||= []).unshift(ev);
    if (S.activity.length > ACTIVITY_MAX) S.activity.length = ACTIVITY_MAX;
    if (S.route.name === 'overview') soon('activity', async () => renderActivity());
  }
  if (t === 'task.succeeded' || t === 'task.failed') {
    const sec = Math.floor(Date.now() / 1000);
    const b = S.tp.get(sec) || [0, 0];
    b[t === 'task.succeeded' ? 0 : 1]++;
    S.tp.set(sec, b);
  }
  if (t === 'stream.lagged') {
    refreshAll();
    return;
  }
  if (t.startsWith('worker.')) soon('workers', loadWorkers);
  if ((t.startsWith('schedule.') || t === 'job.finished') && S.route.name === 'schedules') soon('schedules', loadSchedules);
  if (t.startsWith('task.') || t.startsWith('job.')) {
    soon('queues', loadQueues);
    if (t.startsWith('task.')) soon('workers', loadWorkers);
    if (S.route.name === 'overview') soon('jobs', loadJobs);
    if (S.route.name === 'job' && ev.job_id === S.route.id) soon('job', loadJob);
    if (S.route.name === 'failed' && t.startsWith('task.')) soon('failed', loadFailed);
    if (S.taskId && ev.task_id === S.taskId) soon('task', loadTask);
  }
}

// ---------------------------------------------------------------- overview

function renderOverview() {
  $('#view').innerHTML = `
  <div class="grid">
    <div class="stats" id="stats" data-testid="stats"></div>
    <div class="grid two">
      <section class="card" data-testid="throughput">
        <div class="card-head"><h2>Throughput</h2><span class="count" id="tp-summary"></span>
          <div class="tools legend"><span class="s-succeeded">succeeded</span><span class="s-failed">failed</span><span class="faint">per second · last 5 min</span></div></div>
        <div class="card-body"><svg id="tp-chart" class="chart" data-testid="throughput-chart" height="170" role="img" aria-label="Tasks finished per second over the last five minutes"></svg></div>
      </section>
      <section class="card">
        <div class="card-head"><h2>Queues</h2><span class="count" id="queues-count"></span></div>
        <div class="table-wrap" id="queues" data-testid="queues"></div>
      </section>
    </div>
    <section class="card" id="limits-card" data-testid="limits-card" hidden>
      <div class="card-head"><h2>Limits</h2><span class="count" id="limits-count"></span>
        <div class="tools legend"><span class="faint">running · started this window · held back</span></div></div>
      <div class="table-wrap" id="limits" data-testid="limits"></div>
    </section>
    <section class="card">
      <div class="card-head"><h2>Workers</h2><span class="count" id="workers-count"></span></div>
      <div class="table-wrap" id="workers" data-testid="workers"></div>
    </section>
    <section class="card" data-testid="activity-card">
      <div class="card-head"><h2>Activity</h2><span class="count" id="activity-count"></span>
        <div class="tools legend"><span class="faint">the cluster's events as they happen · newest first</span></div></div>
      <div class="table-wrap short" id="activity" data-testid="activity"></div>
    </section>
    <section class="card">
      <div class="card-head"><h2>Jobs</h2><span class="count" id="jobs-count"></span>
        <div class="tools">
          <div class="legend"><span class="s-succeeded">succeeded</span><span class="s-failed">failed</span><span class="s-running">running</span><span class="s-scheduled">scheduled</span><span class="s-cancelled">cancelled</span><span class="s-queued">queued</span><span class="s-waiting">waiting</span></div>
          <select id="job-filter" data-testid="job-filter" aria-label="Filter jobs by state">
            ${['', 'queued', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => `<option value="${s}"${s === S.jobFilter ? ' selected' : ''}>${s || 'all states'}</option>`).join('')}
          </select>
        </div></div>
      <div class="table-wrap" id="jobs" data-testid="jobs"></div>
    </section>
  </div>`;
  renderStats();
  renderWorkers();
  renderQueues();
  renderLimits();
  renderJobs();
  renderActivity();
  renderThroughput();
}

function renderStats() {
  const el = $('#stats');
  if (!el) return;
  const ws = S.workers || [];
  const live = ws.filter((w) => w.state === 'active' || w.state === 'draining');
  const active = ws.filter((w) => w.state === 'active').length;
  const slots = live.reduce((a, w) => a + (w.capacity || 0), 0);
  const busy = live.reduce((a, w) => a + (w.running || 0), 0);
  const qs = S.queues || [];
  const queued = qs.reduce((a, q) => a + q.queued, 0);
  const sched = qs.reduce((a, q) => a + q.scheduled, 0);
  const running = qs.reduce((a, q) => a + q.running, 0);
  const now = Math.floor(Date.now() / 1000);
  let last10 = 0;
  let failed5 = 0;
  for (const [sec, [ok, bad]] of S.tp) {
    if (sec > now - 10 && sec <= now) last10 += ok + bad;
    if (sec > now - WINDOW_S) failed5 += bad;
  }
  const tile = (k, v, cls = '', id = '') => `<div class="card stat ${cls}" ${id ? `data-testid="${id}"` : ''}><div class="k">${k}</div><div class="v">${v}</div></div>`;
  el.innerHTML =
    tile('Workers', `${active}<small> active / ${ws.length}</small>`, '', 'stat-workers') +
    tile('Slots busy', `${busy}<small> / ${slots}</small>`, '', 'stat-slots') +
    tile('Queued', `${queued}${sched ? `<small> +${sched} scheduled</small>` : ''}`, '', 'stat-queued') +
    tile('Running', `${running}`, '', 'stat-running') +
    tile('Throughput', `${(last10 / 10).toFixed(1)}<small> tasks/s</small>`, '', 'stat-throughput') +
    tile('Failed · 5 min', `${failed5}`, failed5 ? 'bad' : '', 'stat-failed');
}

function meter(label, frac, title) {
  const p = pct(frac);
  const lvl = p >= 90 ? 'high' : p >= 70 ? 'mid' : '';
  return `<div class="meter" title="${esc(title)}"><span class="lbl">${label}</span><span class="bar"><i class="${lvl}" data-w="${p}"></i></span><span class="pct">${p}%</span></div>`;
}

function renderWorkers() {
  const el = $('#workers');
  if (!el) return;
  const ws = S.workers;
  if (!ws) {
    el.innerHTML = '<div class="empty">Loading…</div>';
    return;
  }
  $('#workers-count').textContent = ws.length ? String(ws.length) : '';
  if (!ws.length) {
    el.innerHTML = '<div class="empty">No workers have joined. Start one with <code>brigade worker --server URL</code>.</div>';
    return;
  }
  const order = { active: 0, draining: 1, lost: 2, left: 3 };
  const sorted = [...ws].sort((a, b) => order[a.state] - order[b.state] || a.name.localeCompare(b.name));
  el.innerHTML = `<table data-testid="workers-table"><thead><tr>
      <th>Name</th><th>State</th><th>Load</th><th title="CPU (blue), memory (violet) and busy slots (green) while this page is open">Over time</th><th class="num">Running</th><th class="num">Capacity</th><th>Queues</th><th>Kinds</th><th>Last seen</th><th></th>
    </tr></thead><tbody>${sorted.map(workerRow).join('')}</tbody></table>`;
  applyWidths(el);
}

function workerRow(w) {
  const live = w.state === 'active' || w.state === 'draining';
  const slots = w.capacity ? w.running / w.capacity : 0;
  const staleMs = Date.now() - ms(w.last_seen_at);
  const stale = live && staleMs > S.heartbeatMs * 2;
  return `<tr data-testid="worker-row" data-worker-id="${esc(w.id)}" data-state="${esc(w.state)}">
    <td><b>${esc(w.name)}</b><div class="sub mono">${esc(w.hostname || '')} · ${esc(shortId(w.id))}</div></td>
    <td>${badge(w.state, 'worker-state')}</td>
    <td>${live ? `<div class="meters">${meter('slots', slots, `${w.running} of ${w.capacity} slots`)}${meter('cpu', w.load?.cpu, 'host CPU')}${meter('mem', w.load?.memory, 'host memory')}</div>` : '<span class="faint">—</span>'}</td>
    <td>${live ? loadChart(w.id) : ''}</td>
    <td class="num">${w.running}</td>
    <td class="num">${w.capacity}</td>
    <td>${esc((w.queues || []).join(', '))}</td>
    <td class="trunc muted" title="${esc((w.kinds || []).join(', '))}">${esc((w.kinds || []).join(', '))}</td>
    <td class="${stale ? 'stale' : 'muted'}" data-ago="${esc(w.last_seen_at)}">${ago(w.last_seen_at)}</td>
    <td class="num">${w.state === 'active' ? `<button class="btn sm" data-act="drain" data-id="${esc(w.id)}" data-name="${esc(w.name)}" data-testid="drain-worker">Drain</button>` : ''}</td>
  </tr>`;
}

function renderQueues() {
  const el = $('#queues');
  if (!el) return;
  const qs = S.queues;
  if (!qs) {
    el.innerHTML = '<div class="empty">Loading…</div>';
    return;
  }
  $('#queues-count').textContent = qs.length ? String(qs.length) : '';
  if (!qs.length) {
    el.innerHTML = '<div class="empty">No queues yet.</div>';
    return;
  }
  el.innerHTML = `<table data-testid="queues-table"><thead><tr>
      <th>Queue</th><th class="num">Queued</th><th class="num">Sched.</th><th class="num">Running</th><th class="num">Workers</th><th></th>
    </tr></thead><tbody>${qs
      .map(
        (q) => `<tr data-testid="queue-row" data-queue="${esc(q.name)}" data-paused="${q.paused}">
      <td><b>${esc(q.name)}</b> ${q.paused ? badge('paused', 'queue-paused') : ''}</td>
      <td class="num">${q.queued}</td><td class="num">${q.scheduled}</td><td class="num">${q.running}</td><td class="num">${q.workers}</td>
      <td class="num">${
        q.paused
          ? `<button class="btn sm" data-act="resume" data-id="${esc(q.name)}" data-testid="resume-queue">Resume</button>`
          : `<button class="btn sm" data-act="pause" data-id="${esc(q.name)}" data-testid="pause-queue">Pause</button>`
      }</td></tr>`,
      )
      .join('')}</tbody></table>`;
}

/** What a limit allows, in words: "2 at once; 100 per 1000 ms". */
function limitText(l) {
  const parts = [];
  if (l.concurrency != null) parts.push(`${l.concurrency} at once`);
  if (l.rate != null) parts.push(`${l.rate} per ${l.per_ms} ms${l.burst != null && l.burst !== l.rate ? `, burst ${l.burst}` : ''}`);
  return parts.join('; ');
}

function renderLimits() {
  const card = $('#limits-card');
  const el = $('#limits');
  if (!card || !el) return;
  const ls = S.limits || [];
  // Only clusters that use limits see the card.
  card.hidden = !ls.length;
  $('#limits-count').textContent = ls.length ? String(ls.length) : '';
  if (!ls.length) return;
  const row = (key, text, u, sub) => `<tr data-testid="limit-row" data-key="${esc(key)}"${sub ? ' class="sub-row"' : ''}>
      <td>${sub ? '<span class="faint">↳</span> ' : ''}<b class="mono">${esc(key)}</b></td><td>${esc(text)}</td>
      <td class="num" data-testid="limit-running">${u.running}</td><td class="num">${u.started}</td><td class="num" data-testid="limit-waiting">${u.waiting}</td></tr>`;
  el.innerHTML = `<table data-testid="limits-table"><thead><tr>
      <th>Key</th><th>Limit</th><th class="num">Running</th><th class="num">Started</th><th class="num">Waiting</th>
    </tr></thead><tbody>${ls
      .map((l) => {
        const keys = l.key.endsWith('*')
          ? [...l.keys].sort((a, b) => b.running + b.waiting - (a.running + a.waiting)).slice(0, 8)
          : [];
        return row(l.key, limitText(l), l, false) + keys.map((k) => row(k.key, '', k, true)).join('');
      })
      .join('')}</tbody></table>`;
}

const SEGMENTS = ['succeeded', 'failed', 'cancelled', 'running', 'scheduled', 'queued', 'waiting'];

function progressBar(p, big = false) {
  const total = p.total || 1;
  return `<div class="progress${big ? ' big' : ''}" data-testid="job-progress" title="${SEGMENTS.map((s) => `${p[s] || 0} ${s}`).join(', ')}">${SEGMENTS.map(
    (s) => `<i class="p-${s}" data-w="${((100 * (p[s] || 0)) / total).toFixed(2)}"></i>`,
  ).join('')}</div>`;
}

function renderJobs() {
  const el = $('#jobs');
  if (!el) return;
  const js = S.jobs;
  if (!js) {
    el.innerHTML = '<div class="empty">Loading…</div>';
    return;
  }
  $('#jobs-count').textContent = js.length ? String(js.length) + (js.length === 50 ? '+' : '') : '';
  if (!js.length) {
    el.innerHTML = `<div class="empty">No ${S.jobFilter ? S.jobFilter + ' ' : ''}jobs.</div>`;
    return;
  }
  el.innerHTML = `<table data-testid="jobs-table"><thead><tr>
      <th>Job</th><th>State</th><th>Progress</th><th class="num">Tasks</th><th>Queue</th><th>Created</th><th class="num">Duration</th><th></th>
    </tr></thead><tbody>${js
      .map((j) => {
        const p = j.progress;
        const done = p.succeeded + p.failed + p.cancelled;
        const running = j.state === 'queued' || j.state === 'running';
        const d = j.duration_ms ?? (j.started_at ? Date.now() - ms(j.started_at) : null);
        return `<tr class="click" data-href="#/jobs/${esc(j.id)}" data-testid="job-row" data-job-id="${esc(j.id)}" data-state="${esc(j.state)}">
        <td><a href="#/jobs/${esc(j.id)}"><b>${esc(j.name || '(unnamed)')}</b></a><div class="sub mono">${esc(j.id)}</div></td>
        <td>${badge(j.state, 'job-state')}</td>
        <td><div class="prog-cell">${progressBar(p)}<span class="txt">${done}/${p.total}${p.failed ? ` · <span class="s-failed">${p.failed} failed</span>` : ''}</span></div></td>
        <td class="num">${p.total}</td>
        <td>${esc(j.queue)}</td>
        <td class="muted" data-ago="${esc(j.created_at)}" title="${esc(j.created_at)}">${ago(j.created_at)}</td>
        <td class="num">${dur(d)}</td>
        <td class="num">${running ? `<button class="btn sm danger" data-act="cancel-job" data-id="${esc(j.id)}" data-testid="cancel-job-row">Cancel</button>` : ''}</td>
      </tr>`;
      })
      .join('')}</tbody></table>`;
  applyWidths(el);
}

// Throughput: bars per second, succeeded stacked under failed, over the last five minutes.
function renderThroughput() {
  const svg = $('#tp-chart');
  if (!svg) return;
  const W = Math.max(300, svg.clientWidth || 600);
  const H = 170;
  const padL = 32;
  const padB = 18;
  const padT = 6;
  const now = Math.floor(Date.now() / 1000);
  for (const k of S.tp.keys()) if (k <= now - WINDOW_S - 5) S.tp.delete(k);
  let max = 0;
  let tot = 0;
  for (let s = now - WINDOW_S + 1; s <= now; s++) {
    const b = S.tp.get(s);
    if (b) {
      max = Math.max(max, b[0] + b[1]);
      tot += b[0] + b[1];
    }
  }
  const top = niceMax(Math.max(max, 4));
  const plotW = W - padL - 4;
  const plotH = H - padB - padT;
  const bw = plotW / WINDOW_S;
  const y = (v) => padT + plotH - (v / top) * plotH;
  let out = '';
  for (let i = 0; i <= 4; i++) {
    const v = (top / 4) * i;
    out += `<line class="gridline" x1="${padL}" x2="${W - 4}" y1="${y(v)}" y2="${y(v)}"/><text class="axis" x="${padL - 6}" y="${y(v) + 3}" text-anchor="end">${Number.isInteger(v) ? v : v.toFixed(1)}</text>`;
  }
  for (let m = 0; m <= 5; m++) {
    const x = padL + plotW - m * 60 * bw;
    out += `<text class="axis" x="${Math.max(padL + 8, Math.min(W - 16, x))}" y="${H - 4}" text-anchor="middle">${m === 0 ? 'now' : `−${m}m`}</text>`;
  }
  for (let i = 0; i < WINDOW_S; i++) {
    const b = S.tp.get(now - WINDOW_S + 1 + i);
    if (!b) continue;
    const x = (padL + i * bw).toFixed(2);
    const w = Math.max(1, bw - 0.6).toFixed(2);
    if (b[0]) out += `<rect class="ok" x="${x}" width="${w}" y="${y(b[0]).toFixed(2)}" height="${(plotH - (y(b[0]) - padT)).toFixed(2)}"/>`;
    if (b[1]) out += `<rect class="bad" x="${x}" width="${w}" y="${y(b[0] + b[1]).toFixed(2)}" height="${(y(b[0]) - y(b[0] + b[1])).toFixed(2)}"/>`;
  }
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('data-total', String(tot));
  svg.innerHTML = out;
  const since = S.connectedAt ? Math.min(WINDOW_S, Math.floor((Date.now() - S.connectedAt) / 1000)) : 0;
  $('#tp-summary').textContent = `${tot} finished · peak ${max}/s${since < WINDOW_S && !S.seeded ? ` · counted since the page connected` : ''}`;
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// ---------------------------------------------------------------- job page

function renderJobShell() {
  $('#view').innerHTML = `
  <div class="crumbs"><a href="#/">Overview</a> / job <span class="mono">${esc(S.route.id)}</span></div>
  <div class="grid" data-testid="job-page" data-job-id="${esc(S.route.id)}">
    <section class="card" id="job-head"><div class="empty">Loading…</div></section>
    <section class="card" id="graph-card" data-testid="graph-card" hidden>
      <div class="card-head"><h2>Graph</h2><span class="count" id="graph-summary"></span>
        <div class="tools legend"><span class="faint">one node per key · arrows point to what waits · dashed: spawned</span></div></div>
      <div class="card-body graph-wrap"><svg id="graph" class="chart graph" data-testid="graph" height="60"></svg></div>
    </section>
    <section class="card">
      <div class="card-head"><h2>Timeline</h2><span class="count" id="gantt-summary"></span>
        <div class="tools legend"><span class="s-succeeded">succeeded</span><span class="s-failed">failed</span><span class="s-running">running</span><span class="s-cancelled">cancelled</span><span class="faint">one row per task · click a bar for details</span></div></div>
      <div class="card-body" id="gantt-wrap"><svg id="gantt" class="chart gantt" data-testid="gantt" height="60"></svg></div>
    </section>
    <section class="card">
      <div class="card-head"><h2>Tasks</h2><span class="count" id="tasks-count"></span></div>
      <div class="table-wrap tall" id="tasks" data-testid="tasks"></div>
    </section>
  </div>`;
}

function renderJob() {
  const j = S.job;
  const head = $('#job-head');
  if (!j || !head) return;
  const p = j.progress;
  const unfinished = j.state === 'queued' || j.state === 'running';
  const wall = j.wall_ms ?? (Date.now() - ms(j.created_at));
  const d = j.duration_ms ?? (j.started_at ? Date.now() - ms(j.started_at) : null);
  head.innerHTML = `
    <div class="job-head">
      <div>
        <h1><span data-testid="job-name">${esc(j.name || '(unnamed job)')}</span> ${badge(j.state, 'job-state')}</h1>
        <div class="meta">
          <span>id <b class="mono">${esc(j.id)}</b></span>
          <span>queue <b>${esc(j.queue)}</b></span>
          <span>created <b title="${esc(j.created_at)}">${ago(j.created_at)}</b></span>
          <span>run time <b>${dur(d)}</b></span>
          <span>wall <b>${dur(wall)}</b></span>
          ${Object.entries(j.labels || {}).map(([k, v]) => `<span>${esc(k)} <b>${esc(v)}</b></span>`).join('')}
        </div>
      </div>
      <div class="actions">
        <button class="btn danger" data-act="cancel-job" data-id="${esc(j.id)}" data-testid="cancel-job" ${unfinished ? '' : 'disabled'}>Cancel job</button>
      </div>
    </div>
    <div class="job-prog">${progressBar(p, true)}
      <div class="legend">${SEGMENTS.map((s) => `<span class="s-${s}" data-seg="${s}">${p[s] || 0} ${s}</span>`).join('')}<span>${p.total} total</span></div>
    </div>`;
  applyWidths(head);
  renderGraph();
  renderGantt();
  renderTasks();
}

/**
 * The job's graph: tasks grouped into one node per key (the unit `after`
 * names), spawned tasks under their spawner's key, laid out in layers by
 * the longest path from a root. Each node shows its tasks' states.
 */
function jobGraph(ts) {
  const byId = new Map(ts.map((t) => [t.id, t]));
  const nodes = new Map();
  const nodeOf = (t) => {
    if (t.key) return `k:${t.key}`;
    if (t.spawned_by) {
      const parent = byId.get(t.spawned_by);
      return `s:${parent && parent.key ? parent.key : t.spawned_by}`;
    }
    return 'k:';
  };
  for (const t of ts) {
    const id = nodeOf(t);
    if (!nodes.has(id)) {
      const spawner = t.spawned_by ? byId.get(t.spawned_by) : null;
      nodes.set(id, {
        id,
        label: t.key || (t.spawned_by ? `spawned by ${spawner && spawner.key ? spawner.key : shortId(t.spawned_by)}` : '(no key)'),
        tasks: [],
        after: new Set(),
        spawnedFrom: spawner ? nodeOf(spawner) : null,
      });
    }
    const n = nodes.get(id);
    n.tasks.push(t);
    for (const a of t.after || []) n.after.add(`k:${a}`);
  }
  const edges = [];
  for (const n of nodes.values()) {
    for (const a of n.after) if (nodes.has(a)) edges.push({ from: a, to: n.id, spawn: false });
    if (n.spawnedFrom && nodes.has(n.spawnedFrom) && n.spawnedFrom !== n.id) edges.push({ from: n.spawnedFrom, to: n.id, spawn: true });
  }
  // Layers: the longest path from a root (the graph is acyclic; the guard is for safety).
  const layer = new Map();
  const into = new Map([...nodes.keys()].map((k) => [k, []]));
  for (const e of edges) into.get(e.to).push(e.from);
  const depth = (k, seen = new Set()) => {
    if (layer.has(k)) return layer.get(k);
    if (seen.has(k)) return 0;
    seen.add(k);
    const d = Math.max(-1, ...into.get(k).map((f) => depth(f, seen))) + 1;
    layer.set(k, d);
    return d;
  };
  for (const k of nodes.keys()) depth(k);
  return { nodes: [...nodes.values()], edges, layer };
}

function renderGraph() {
  const card = $('#graph-card');
  const svg = $('#graph');
  const ts = S.tasks;
  if (!card || !svg || !ts) return;
  const graphy = ts.some((t) => t.key || (t.after && t.after.length) || t.spawned_by);
  card.hidden = !graphy;
  if (!graphy) return;
  const { nodes, edges, layer } = jobGraph(ts);
  const layers = [];
  for (const n of nodes) (layers[layer.get(n.id)] ||= []).push(n);
  const many = nodes.length > 60;
  const nodeW = many ? 70 : 132;
  const nodeH = many ? 26 : 40;
  const gapX = many ? 28 : 56;
  const gapY = many ? 10 : 18;
  const tallest = Math.max(...layers.map((l) => (l ? l.length : 0)));
  const W = Math.max(400, 16 + layers.length * (nodeW + gapX));
  const H = Math.max(nodeH + 24, 16 + tallest * (nodeH + gapY));
  const pos = new Map();
  layers.forEach((l, i) => {
    if (!l) return;
    const top = (H - l.length * (nodeH + gapY) + gapY) / 2;
    l.forEach((n, j) => pos.set(n.id, { x: 8 + i * (nodeW + gapX), y: top + j * (nodeH + gapY) }));
  });
  let out = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" class="g-arrow"/></marker></defs>';
  for (const e of edges) {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + nodeW;
    const y1 = a.y + nodeH / 2;
    const x2 = b.x;
    const y2 = b.y + nodeH / 2;
    const mx = (x1 + x2) / 2;
    out += `<path class="g-edge${e.spawn ? ' g-spawn' : ''}" data-testid="graph-edge" data-from="${esc(e.from)}" data-to="${esc(e.to)}" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" marker-end="url(#arrow)"/>`;
  }
  const order = ['failed', 'running', 'queued', 'scheduled', 'waiting', 'cancelled', 'succeeded'];
  for (const n of nodes) {
    const p = pos.get(n.id);
    const counts = {};
    for (const t of n.tasks) counts[t.state] = (counts[t.state] || 0) + 1;
    // The node takes the colour of its most pressing state.
    const state = order.find((st) => counts[st]) || 'queued';
    const total = n.tasks.length;
    let x = p.x;
    const segs = SEGMENTS.filter((st) => counts[st])
      .map((st) => {
        const w = (nodeW * counts[st]) / total;
        const r = `<rect class="p-${st}" x="${x.toFixed(1)}" y="${(p.y + nodeH - 4).toFixed(1)}" width="${w.toFixed(1)}" height="4"/>`;
        x += w;
        return r;
      })
      .join('');
    const tip = `${n.label}: ${SEGMENTS.filter((st) => counts[st]).map((st) => `${counts[st]} ${st}`).join(', ')}`;
    const first = n.tasks[0];
    const label = n.label.length > (many ? 9 : 18) ? n.label.slice(0, many ? 8 : 17) + '…' : n.label;
    out += `<g class="g-node g-${esc(state)}" data-testid="graph-node" data-key="${esc(n.label)}" data-state="${esc(state)}" data-tasks="${total}" data-task="${total === 1 ? esc(first.id) : ''}">
      <title>${esc(tip)}</title>
      <rect class="g-box" x="${p.x}" y="${p.y}" width="${nodeW}" height="${nodeH}" rx="6"/>
      <text class="g-label" x="${p.x + 8}" y="${p.y + (many ? 15 : 17)}">${esc(label)}</text>
      ${many ? '' : `<text class="g-sub" x="${p.x + 8}" y="${p.y + 31}">${total > 1 ? `${counts.succeeded || 0}/${total} done` : esc(first.state)}</text>`}
      ${segs}</g>`;
  }
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', String(W));
  svg.setAttribute('height', String(H));
  svg.innerHTML = out;
  $('#graph-summary').textContent = `${nodes.length} node${nodes.length === 1 ? '' : 's'} · ${edges.length} edge${edges.length === 1 ? '' : 's'} · ${layers.length} layer${layers.length === 1 ? '' : 's'}`;
}

function renderGantt() {
  const svg = $('#gantt');
  const ts = S.tasks;
  if (!svg || !ts) return;
  const started = ts.filter((t) => t.started_at);
  const now = Date.now();
  if (!started.length) {
    svg.setAttribute('height', '40');
    svg.innerHTML = `<text class="axis" x="10" y="24">No task has started yet.</text>`;
    $('#gantt-summary').textContent = '';
    return;
  }
  const t0 = Math.min(...started.map((t) => ms(t.started_at)), ms(S.job?.started_at) || Infinity);
  const t1 = Math.max(...started.map((t) => (t.finished_at ? ms(t.finished_at) : now)), t0 + 1000);
  const W = Math.max(400, svg.clientWidth || 800);
  const padL = 8;
  const padT = 20;
  const n = ts.length;
  const rowH = n <= 40 ? 10 : n <= 120 ? 5 : Math.max(1.5, 360 / n);
  const barH = Math.max(1, rowH > 4 ? rowH - 2 : rowH);
  const H = padT + n * rowH + 4;
  const plotW = W - padL - 8;
  const x = (t) => padL + ((t - t0) / (t1 - t0)) * plotW;
  let out = '';
  const span = t1 - t0;
  const step = niceStep(span / 6);
  for (let v = 0; v <= span; v += step) {
    out += `<line class="gridline" x1="${x(t0 + v)}" x2="${x(t0 + v)}" y1="${padT - 4}" y2="${H}"/>`;
    if (x(t0 + v) < W - 50) out += `<text class="axis" x="${x(t0 + v) + 3}" y="11">${dur(v)}</text>`;
  }
  ts.forEach((t, i) => {
    const yy = padT + i * rowH;
    if (!t.started_at) return;
    const a = x(ms(t.started_at));
    const b = x(t.finished_at ? ms(t.finished_at) : now);
    const sel = t.id === S.taskId ? ' t-sel' : '';
    const tip = `${t.name || t.kind} · ${t.state} · attempt ${t.attempt} · ${workerName(t.worker_id)} · ${dur(between(t.started_at, t.finished_at) ?? now - ms(t.started_at))}`;
    out += `<rect class="t t-${esc(t.state)}${sel}" data-task-id="${esc(t.id)}" x="${a.toFixed(2)}" y="${yy.toFixed(2)}" width="${Math.max(1.5, b - a).toFixed(2)}" height="${barH.toFixed(2)}"><title>${esc(tip)}</title></rect>`;
  });
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('height', String(H));
  svg.innerHTML = out;
  $('#gantt-summary').textContent = `${started.length} of ${n} started · span ${dur(span)}`;
}

function niceStep(v) {
  const p = 10 ** Math.floor(Math.log10(Math.max(v, 1)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** A task's own progress report as a small bar (done of total), with its message. */
function taskProgress(t) {
  const p = t.progress;
  if (!p) return '';
  const pct = p.total ? Math.min(100, (100 * p.done) / p.total) : null;
  const text = `${p.done}${p.total ? `/${p.total}` : ''}${p.message ? ` · ${p.message}` : ''}`;
  return `<div class="task-progress" data-testid="task-progress" title="${esc(text)}">${
    pct === null ? '' : `<span class="bar"><i style="width:${pct.toFixed(1)}%"></i></span>`
  }<span class="sub">${esc(text)}</span></div>`;
}

function renderTasks() {
  const el = $('#tasks');
  const ts = S.tasks;
  if (!el || !ts) return;
  $('#tasks-count').textContent = `${ts.length}${S.tasksMore ? '+ (first 1000 shown)' : ''}`;
  if (!ts.length) {
    el.innerHTML = '<div class="empty">This job has no tasks.</div>';
    return;
  }
  const scroll = el.scrollTop;
  el.innerHTML = `<table data-testid="tasks-table"><thead><tr>
    <th class="num">#</th><th>Task</th><th>State</th><th>Worker</th><th class="num">Attempt</th><th>Started</th><th class="num">Waited</th><th class="num">Ran</th><th>Output / error</th>
  </tr></thead><tbody>${ts
    .map((t, i) => {
      const res = t.error ? `<span class="s-failed">${esc(t.error.kind)}: ${esc(json(t.error.message, 160))}</span>` : `<span class="mono muted">${esc(json(t.output, 160))}</span>`;
      return `<tr class="click${t.id === S.taskId ? ' sel' : ''}" data-task="${esc(t.id)}" data-testid="task-row" data-task-id="${esc(t.id)}" data-state="${esc(t.state)}">
      <td class="num faint">${i + 1}</td>
      <td><b>${esc(t.name || t.kind)}</b>${t.name ? ` <span class="sub">${esc(t.kind)}</span>` : ''}${t.key ? ` <span class="sub mono">${esc(t.key)}</span>` : ''}${taskProgress(t)}</td>
      <td>${badge(t.state, 'task-state')}</td>
      <td>${esc(workerName(t.worker_id))}</td>
      <td class="num">${t.attempt}/${t.max_attempts}</td>
      <td class="muted mono">${clock(t.started_at)}</td>
      <td class="num muted">${dur(between(t.created_at, t.started_at))}</td>
      <td class="num">${t.started_at ? dur(between(t.started_at, t.finished_at) ?? Date.now() - ms(t.started_at)) : '—'}</td>
      <td class="trunc">${res}</td></tr>`;
    })
    .join('')}</tbody></table>`;
  el.scrollTop = scroll;
}

// ---------------------------------------------------------------- task drawer

function openTask(id) {
  S.taskId = id;
  S.task = null;
  const dr = $('#drawer');
  dr.hidden = false;
  dr.innerHTML = '<div class="empty">Loading…</div>';
  soon('task', loadTask);
  renderGantt();
  renderTasks();
}

function closeTask() {
  S.taskId = null;
  S.task = null;
  $('#drawer').hidden = true;
  if (S.route.name === 'job') {
    history.replaceState(null, '', `#/jobs/${S.route.id}`);
    renderGantt();
    renderTasks();
  }
}

function renderDrawer() {
  const t = S.task;
  const dr = $('#drawer');
  if (!t || dr.hidden) return;
  const retry = t.state === 'failed' || t.state === 'cancelled';
  const cancel = !['succeeded', 'failed', 'cancelled'].includes(t.state);
  dr.dataset.taskId = t.id;
  dr.innerHTML = `
    <div class="d-head"><h3>${esc(t.name || t.kind)}</h3>${badge(t.state, 'task-detail-state')}
      <div class="spacer"></div>
      <button class="btn" data-act="retry-task" data-id="${esc(t.id)}" data-testid="retry-task" ${retry ? '' : 'disabled'} title="Failed or cancelled tasks go back to queued with a fresh attempt budget">Retry</button>
      <button class="btn danger" data-act="cancel-task" data-id="${esc(t.id)}" data-testid="cancel-task" ${cancel ? '' : 'disabled'}>Cancel</button>
      <button class="btn ghost" data-act="close-drawer" aria-label="Close" data-testid="close-detail">✕</button></div>
    <section><dl class="kv">
      <dt>id</dt><dd class="mono">${esc(t.id)}</dd>
      <dt>kind</dt><dd>${esc(t.kind)}</dd>
      <dt>queue</dt><dd>${esc(t.queue)} · priority ${t.priority}</dd>
      <dt>attempt</dt><dd>${t.attempt} of ${t.max_attempts} · timeout ${dur(t.timeout_ms)}</dd>
      <dt>worker</dt><dd>${esc(workerName(t.worker_id))}</dd>
      <dt>created</dt><dd>${clock(t.created_at)} <span class="muted">${ago(t.created_at)}</span></dd>
      ${t.run_at ? `<dt>run at</dt><dd>${clock(t.run_at)}</dd>` : ''}
      <dt>started</dt><dd>${clock(t.started_at)}</dd>
      <dt>finished</dt><dd>${clock(t.finished_at)} ${t.finished_at ? `<span class="muted">ran ${dur(between(t.started_at, t.finished_at))}</span>` : ''}</dd>
      ${Object.keys(t.requires || {}).length ? `<dt>requires</dt><dd class="mono">${esc(json(t.requires))}</dd>` : ''}
    </dl></section>
    ${t.error ? `<section><h4>Error</h4><div class="errbox" data-testid="task-error"><b>${esc(t.error.kind)}</b> ${esc(t.error.message)}</div></section>` : ''}
    <section><h4>Output</h4><pre class="json" data-testid="task-output">${esc(t.output == null ? 'null' : JSON.stringify(t.output, null, 2))}</pre></section>
    <section><h4>Logs</h4>${
      S.taskLogs && S.taskLogs.length
        ? `<pre class="json logs" data-testid="task-logs">${S.taskLogs
            .map((l) => `<span class="muted">#${l.attempt} ${esc(clock(l.at))}</span>  ${esc(l.line)}`)
            .join('\n')}</pre>`
        : '<div class="muted" data-testid="task-logs">No log lines.</div>'
    }</section>
    <section><h4>Input</h4><pre class="json">${esc(JSON.stringify(t.input, null, 2))}</pre></section>
    <section><h4>History</h4>${
      (t.history || []).length
        ? `<table data-testid="task-history"><thead><tr><th class="num">#</th><th>Worker</th><th>Started</th><th class="num">Ran</th><th>Outcome</th></tr></thead><tbody>${t.history
            .map(
              (h) => `<tr><td class="num">${h.attempt}</td><td>${esc(workerName(h.worker_id))}</td><td class="mono muted">${clock(h.started_at)}</td>
              <td class="num">${dur(between(h.started_at, h.finished_at))}</td>
              <td>${badge(h.outcome, 'history-outcome')}${h.error ? ` <span class="muted">${esc(h.error.kind)}: ${esc(json(h.error.message, 120))}</span>` : ''}</td></tr>`,
            )
            .join('')}</tbody></table>`
        : '<div class="muted">No attempt has started.</div>'
    }</section>`;
}

// ---------------------------------------------------------------- schedules

function renderSchedulesShell() {
  $('#view').innerHTML = `
  <div class="grid">
    <section class="card" data-testid="schedules-page">
      <div class="card-head"><h2>Schedules</h2><span class="count" id="schedules-count"></span>
        <div class="tools"><span class="faint">jobs on a clock · <code>brigade schedule add</code> or <code>POST /v1/schedules</code></span></div></div>
      <div class="table-wrap" id="schedules" data-testid="schedules"></div>
    </section>
  </div>`;
  renderSchedules();
}

function scheduleWhen(s) {
  if (s.cron) return `<span class="mono">${esc(s.cron)}</span>${s.timezone && s.timezone !== 'UTC' ? ` <span class="faint">${esc(s.timezone)}</span>` : ''}`;
  if (s.every_ms != null) return `every ${esc(dur(s.every_ms))}`;
  return '—';
}

function renderSchedules() {
  const el = $('#schedules');
  if (!el) return;
  const ss = S.schedules;
  if (!ss) {
    el.innerHTML = '<div class="empty">Loading…</div>';
    return;
  }
  $('#schedules-count').textContent = ss.length ? String(ss.length) + (S.schedulesMore ? '+' : '') : '';
  if (!ss.length) {
    el.innerHTML = '<div class="empty">No schedules yet.</div>';
    return;
  }
  el.innerHTML = `<table data-testid="schedules-table"><thead><tr>
      <th>Schedule</th><th>When</th><th>Next fire</th><th>Last job</th><th>Overlap</th><th>Catch-up</th><th></th>
    </tr></thead><tbody>${ss
      .map(
        (s) => `<tr data-testid="schedule-row" data-schedule-id="${esc(s.id)}" data-paused="${s.paused}">
      <td><b>${esc(s.name || '(unnamed)')}</b> ${s.paused ? badge('paused', 'schedule-paused') : ''}<div class="sub mono">${esc(s.id)}</div></td>
      <td>${scheduleWhen(s)}</td>
      <td data-testid="schedule-next">${
        s.next_fire_at
          ? `<span data-until="${esc(s.next_fire_at)}" title="${esc(s.next_fire_at)}">${until(s.next_fire_at)}</span>`
          : `<span class="faint">${s.paused ? 'paused' : 'never'}</span>`
      }</td>
      <td data-testid="schedule-last">${
        s.last_job_id
          ? `<a href="#/jobs/${esc(s.last_job_id)}" class="mono" data-testid="schedule-last-job">${esc(shortId(s.last_job_id))}</a> ${
              S.lastJobs?.get(s.last_job_id) ? badge(S.lastJobs.get(s.last_job_id).state, 'schedule-last-state') : ''
            } <span class="muted" data-ago="${esc(s.last_fire_at)}" title="${esc(s.last_fire_at)}">${ago(s.last_fire_at)}</span>`
          : '<span class="faint">none yet</span>'
      }</td>
      <td>${esc(s.overlap)}</td><td>${esc(s.catch_up)}</td>
      <td class="num">${
        s.paused
          ? `<button class="btn sm" data-act="resume-schedule" data-id="${esc(s.id)}" data-testid="resume-schedule">Resume</button>`
          : `<button class="btn sm" data-act="pause-schedule" data-id="${esc(s.id)}" data-testid="pause-schedule">Pause</button>`
      } <button class="btn sm" data-act="trigger-schedule" data-id="${esc(s.id)}" data-testid="trigger-schedule">Fire now</button></td></tr>`,
      )
      .join('')}</tbody></table>`;
}

// ---------------------------------------------------------------- failed tasks

const FAILED_PAGE = 50;
const FAILED_FIELDS = [
  ['kind', 'kind', 'e.g. resize'],
  ['queue', 'queue', 'e.g. default'],
  ['error_kind', 'error kind', 'handler, timeout, lost, …'],
  ['job', 'job', 'job id'],
];

// The filters that are set, as the API takes them (query string or bulk body).
function failedQuery(f) {
  const q = {};
  for (const k of ['state', 'kind', 'queue', 'error_kind', 'job']) if (f[k]) q[k] = f[k];
  return q;
}

// Tasks per page: `?limit=` in the address (1..1000), else FAILED_PAGE.
function failedLimitOf(query) {
  const n = Number(new URLSearchParams(query || '').get('limit'));
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : FAILED_PAGE;
}

// Filters from the route's query (`#/failed?kind=resize`), so a filtered view can be linked.
function failedFilterOf(query) {
  const p = new URLSearchParams(query || '');
  const f = { state: p.get('state') === 'cancelled' ? 'cancelled' : 'failed' };
  for (const [k] of FAILED_FIELDS) f[k] = (p.get(k) || '').trim();
  return f;
}

function renderFailedShell() {
  const f = S.failed.filter;
  $('#view').innerHTML = `
  <div class="grid">
    <section class="card" data-testid="failed-page">
      <div class="card-head"><h2>Failed tasks</h2><span class="count" id="failed-count" data-testid="failed-count"></span>
        <div class="tools"><span class="faint">across jobs · <code>GET /v1/tasks</code></span></div></div>
      <form class="card-body filters" id="failed-form" data-testid="failed-filters">
        <label>state <select id="failed-state" name="state" data-testid="failed-state">
          ${['failed', 'cancelled'].map((s) => `<option value="${s}"${s === f.state ? ' selected' : ''}>${s}</option>`).join('')}
        </select></label>
        ${FAILED_FIELDS.map(
          ([k, label, ph]) =>
            `<label>${esc(label)} <input name="${k}" value="${esc(f[k])}" placeholder="${esc(ph)}" spellcheck="false" autocomplete="off" data-testid="failed-filter-${k}"></label>`,
        ).join('')}
        <button type="submit" class="btn" data-testid="failed-apply">Apply</button>
        <div class="spacer"></div>
        <button type="button" class="btn primary" data-act="retry-matching" data-testid="retry-matching" title="POST /v1/tasks/retry with these filters (admin)">Retry all matching</button>
      </form>
      <div id="failed-msg" class="failed-msg" data-testid="failed-msg" hidden></div>
      <div class="table-wrap" id="failed" data-testid="failed"></div>
      <div class="card-body pager" id="failed-pager"></div>
    </section>
  </div>`;
  renderFailed();
}

// A line above the table: how the last action went (kind '' or 'err').
function failedMsg(html, kind = '') {
  const el = $('#failed-msg');
  if (!el) return;
  el.hidden = !html;
  el.className = `failed-msg ${kind === 'err' ? 'errbox' : 'okbox'}`;
  el.dataset.kind = kind || 'ok';
  el.innerHTML = html;
}

function problemHtml(e, context) {
  if (!(e instanceof ApiError)) return `<b>${esc(context)}</b> ${esc(e?.message || e)}`;
  const fields = (e.errors || []).map((x) => `${x.field}: ${x.message}`).join('; ');
  return `<b>${esc(context)} — ${e.status} ${esc(e.title)}</b> ${esc([e.detail, fields].filter(Boolean).join(' — '))}`;
}

function renderFailed() {
  const el = $('#failed');
  if (!el) return;
  const F = S.failed;
  const ts = F.items;
  const pager = $('#failed-pager');
  if (F.loadError) failedMsg(problemHtml(F.loadError, 'Could not load the tasks'), 'err');
  if (!ts) {
    el.innerHTML = '<div class="empty">Loading…</div>';
    pager.innerHTML = '';
    return;
  }
  const pageNo = F.back.length + 1;
  $('#failed-count').textContent = ts.length ? `${ts.length}${F.next ? '+' : ''} · page ${pageNo}` : '';
  pager.innerHTML = `<button class="btn sm" data-act="failed-prev" data-testid="failed-prev" ${F.back.length ? '' : 'disabled'}>← Previous</button>
    <span class="muted" data-testid="failed-page-no">page ${pageNo}</span>
    <button class="btn sm" data-act="failed-next" data-testid="failed-next" ${F.next ? '' : 'disabled'}>Next →</button>`;
  if (!ts.length) {
    el.innerHTML = `<div class="empty" data-testid="failed-empty">No ${esc(F.filter.state)} tasks match.</div>`;
    return;
  }
  el.innerHTML = `<table data-testid="failed-table"><thead><tr>
      <th>Task</th><th>Kind</th><th>Queue</th><th>Error</th><th class="num">Attempt</th><th>Finished</th><th></th>
    </tr></thead><tbody>${ts
      .map((t) => {
        const href = `#/jobs/${encodeURIComponent(t.job_id)}/tasks/${encodeURIComponent(t.id)}`;
        const retry = t.state === 'failed' || t.state === 'cancelled';
        return `<tr data-testid="failed-row" data-task-id="${esc(t.id)}" data-job-id="${esc(t.job_id)}" data-state="${esc(t.state)}" data-kind="${esc(t.kind)}">
      <td><a href="${esc(href)}" class="mono" data-testid="failed-task-link">${esc(shortId(t.id))}</a>${t.name ? ` <b>${esc(t.name)}</b>` : ''}
        <div class="sub mono">job <a href="#/jobs/${esc(encodeURIComponent(t.job_id))}">${esc(shortId(t.job_id))}</a></div></td>
      <td>${esc(t.kind)}</td>
      <td>${esc(t.queue)}</td>
      <td class="trunc" title="${esc(t.error ? `${t.error.kind}: ${t.error.message}` : '')}" data-testid="failed-error">${
        t.error ? `<span class="badge s-failed">${esc(t.error.kind)}</span> ${esc(json(t.error.message, 200))}` : '<span class="faint">—</span>'
      }</td>
      <td class="num">${t.attempt}/${t.max_attempts}</td>
      <td class="muted" title="${esc(t.finished_at || '')}"><span class="mono">${clock(t.finished_at)}</span> <span data-ago="${esc(t.finished_at)}">${t.finished_at ? ago(t.finished_at) : ''}</span></td>
      <td class="num"><button class="btn sm" data-act="retry-failed" data-id="${esc(t.id)}" data-testid="failed-retry-row" ${retry ? '' : 'disabled'}>Retry</button></td></tr>`;
      })
      .join('')}</tbody></table>`;
}

// New filters (or the same again): back to the first page, and into the address for linking.
function applyFailedFilters() {
  const form = $('#failed-form');
  if (!form) return;
  const f = {};
  for (const [k, v] of new FormData(form)) f[k] = String(v).trim();
  const F = S.failed;
  F.filter = { ...F.filter, ...f };
  F.cursor = null;
  F.back = [];
  F.items = null;
  F.loadError = null;
  failedMsg('');
  const q = new URLSearchParams(failedQuery(F.filter));
  if (F.limit !== FAILED_PAGE) q.set('limit', String(F.limit));
  history.replaceState(null, '', `#/failed${q.size ? '?' + q : ''}`);
  // The address changed without a hashchange: the route must know, or going back to it is "same".
  S.route = { name: 'failed', query: q.toString() };
  renderFailed();
  soon('failed', loadFailed);
}

async function retryMatching() {
  const F = S.failed;
  const body = failedQuery(F.filter);
  const lines = Object.entries(body).map(([k, v]) => `  ${k} = ${v}`);
  if (!confirm(`Retry every task matching these filters, on every page?\n\n${lines.join('\n')}\n\nEach goes back to queued with a fresh attempt budget.`)) return;
  try {
    const r = await api('/v1/tasks/retry', { method: 'POST', body });
    failedMsg(`<b data-testid="retried-count">${r.retried}</b> task${r.retried === 1 ? '' : 's'} retried.`);
    toast(`${r.retried} task${r.retried === 1 ? '' : 's'} retried`, '', 'ok');
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      failedMsg(
        `<b>Retrying in bulk needs an admin token</b> — set one with the Token button (per-row Retry works for your own tasks).${
          e.detail ? ` <span class="muted">Server: ${esc(e.detail)}</span>` : ''
        }`,
        'err',
      );
    } else {
      failedMsg(problemHtml(e, 'Could not retry the tasks'), 'err');
    }
  }
  F.cursor = null;
  F.back = [];
  soon('failed', loadFailed);
}

async function retryFailedRow(id) {
  try {
    await api(`/v1/tasks/${encodeURIComponent(id)}/retry`, { method: 'POST' });
    failedMsg(`Task <span class="mono">${esc(shortId(id))}</span> queued again.`);
  } catch (e) {
    failedMsg(problemHtml(e, `Could not retry task ${shortId(id)}`), 'err');
  }
  soon('failed', loadFailed);
}

// ---------------------------------------------------------------- routing and events

function parseRoute() {
  const h = location.hash.replace(/^#/, '') || '/';
  let m = h.match(/^\/jobs\/([^/]+)(?:\/tasks\/([^/]+))?$/);
  if (m) return { name: 'job', id: decodeURIComponent(m[1]), task: m[2] ? decodeURIComponent(m[2]) : null };
  if (h === '/run') return { name: 'run' };
  if (h === '/schedules') return { name: 'schedules' };
  m = h.match(/^\/failed(?:\?(.*))?$/);
  if (m) return { name: 'failed', query: m[1] || '' };
  m = h.match(/^\/judge\/([^/]+)$/);
  if (m) return { name: 'judge', id: decodeURIComponent(m[1]) };
  return { name: 'overview' };
}

function route() {
  const r = parseRoute();
  const same = r.name === S.route.name && r.id === S.route.id && r.query === S.route.query;
  S.route = r;
  for (const a of document.querySelectorAll('.nav a[data-nav]')) a.classList.toggle('active', a.dataset.nav === r.name);
  if (!same) {
    S.job = null;
    S.tasks = null;
    if (r.name === 'job') {
      renderJobShell();
      document.title = 'job · brigade';
      soon('job', loadJob);
    } else if (r.name === 'run') {
      // run.js: the Run page.
      renderRun();
      document.title = 'run · brigade';
      soon('workers', loadWorkers);
    } else if (r.name === 'schedules') {
      S.schedules = null;
      renderSchedulesShell();
      document.title = 'schedules · brigade';
      soon('schedules', loadSchedules);
    } else if (r.name === 'failed') {
      const F = S.failed;
      F.filter = failedFilterOf(r.query);
      F.limit = failedLimitOf(r.query);
      F.items = null;
      F.cursor = null;
      F.back = [];
      F.loadError = null;
      renderFailedShell();
      document.title = 'failed · brigade';
      soon('failed', loadFailed);
    } else if (r.name === 'judge') {
      renderJudge();
      document.title = 'judge · brigade';
    } else {
      renderOverview();
      document.title = 'brigade';
      soon('jobs', loadJobs);
    }
    window.scrollTo(0, 0);
  }
  if (r.name === 'job' && r.task) openTask(r.task);
  else if (S.taskId) closeTask();
}

async function onClick(e) {
  const btn = e.target.closest('[data-act]');
  if (btn) {
    e.stopPropagation();
    const id = btn.dataset.id;
    const enc = encodeURIComponent(id || '');
    btn.disabled = true;
    try {
      switch (btn.dataset.act) {
        case 'cancel-job':
          if (confirm('Cancel every unfinished task of this job?')) await act(`/v1/jobs/${enc}/cancel`, 'Job cancelled', 'cancel the job');
          soon('jobs', loadJobs);
          soon('job', loadJob);
          break;
        case 'retry-task':
          if (await act(`/v1/tasks/${enc}/retry`, 'Task queued again', 'retry the task')) {
            soon('task', loadTask);
            soon('job', loadJob);
          }
          break;
        case 'cancel-task':
          if (await act(`/v1/tasks/${enc}/cancel`, 'Task cancelled', 'cancel the task')) {
            soon('task', loadTask);
            soon('job', loadJob);
          }
          break;
        case 'pause':
          if (await act(`/v1/queues/${enc}/pause`, `Queue ${id} paused`, `pause queue ${id}`)) soon('queues', loadQueues);
          break;
        case 'resume':
          if (await act(`/v1/queues/${enc}/resume`, `Queue ${id} resumed`, `resume queue ${id}`)) soon('queues', loadQueues);
          break;
        case 'pause-schedule':
          if (await act(`/v1/schedules/${enc}/pause`, 'Schedule paused', 'pause the schedule')) soon('schedules', loadSchedules);
          break;
        case 'resume-schedule':
          if (await act(`/v1/schedules/${enc}/resume`, 'Schedule resumed', 'resume the schedule')) soon('schedules', loadSchedules);
          break;
        case 'trigger-schedule':
          if (await act(`/v1/schedules/${enc}/trigger`, 'Schedule fired', 'fire the schedule')) soon('schedules', loadSchedules);
          break;
        case 'retry-matching':
          await retryMatching();
          break;
        case 'retry-failed':
          await retryFailedRow(id);
          break;
        case 'failed-next':
          if (S.failed.next) {
            S.failed.back.push(S.failed.cursor);
            S.failed.cursor = S.failed.next;
            soon('failed', loadFailed);
          }
          break;
        case 'failed-prev':
          if (S.failed.back.length) {
            S.failed.cursor = S.failed.back.pop();
            soon('failed', loadFailed);
          }
          break;
        case 'drain':
          if (confirm(`Drain worker ${btn.dataset.name}? It finishes what it runs and leases nothing more.`)) {
            if (await act(`/v1/workers/${enc}/drain`, `Worker ${btn.dataset.name} draining`, `drain worker ${btn.dataset.name}`)) soon('workers', loadWorkers);
          }
          break;
        case 'close-drawer':
          closeTask();
          break;
      }
    } finally {
      if (btn.isConnected) btn.disabled = false;
    }
    return;
  }
  const rect = e.target.closest('rect[data-task-id]');
  const row = e.target.closest('tr[data-task]');
  const tid = rect?.dataset.taskId || row?.dataset.task;
  if (tid && S.route.name === 'job') {
    location.hash = `#/jobs/${encodeURIComponent(S.route.id)}/tasks/${encodeURIComponent(tid)}`;
    return;
  }
  const link = e.target.closest('tr[data-href]');
  if (link && !e.target.closest('a')) location.hash = link.dataset.href;
}

function tick() {
  // "3s ago" labels, running bars and the chart move with the clock.
  for (const el of document.querySelectorAll('[data-ago]')) el.textContent = ago(el.dataset.ago);
  for (const el of document.querySelectorAll('[data-until]')) el.textContent = until(el.dataset.until);
  renderThroughput();
  renderStats();
  if (S.route.name === 'job' && S.job && (S.job.state === 'running' || S.job.state === 'queued')) renderGantt();
}

function applyTheme(t) {
  if (t) document.documentElement.dataset.theme = t;
  else delete document.documentElement.dataset.theme;
}

function init() {
  applyTheme(localStorage.getItem(THEME_KEY));
  $('#theme-btn').addEventListener('click', () => {
    const dark = matchMedia('(prefers-color-scheme: dark)').matches;
    const cur = document.documentElement.dataset.theme || (dark ? 'dark' : 'light');
    const next = cur === 'dark' ? 'light' : 'dark';
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });
  $('#login-btn').addEventListener('click', () => ($('#login').hidden ? openLogin() : ($('#login').hidden = true)));
  $('#login-close').addEventListener('click', () => ($('#login').hidden = true));
  $('#login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    $('#login').hidden = true;
    setToken($('#token-input').value.trim());
    toast('Token saved', 'Sent as a bearer token on every request.', 'ok');
  });
  $('#token-clear').addEventListener('click', () => {
    $('#login').hidden = true;
    setToken('');
    toast('Signed out', 'The token was removed from this browser.');
  });
  document.addEventListener('click', onClick);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      if (!$('#login').hidden) $('#login').hidden = true;
      else if (S.taskId) closeTask();
    }
  });
  document.addEventListener('change', (e) => {
    if (e.target.id === 'failed-state') applyFailedFilters();
    if (e.target.id === 'job-filter') {
      S.jobFilter = e.target.value;
      S.jobs = null;
      renderJobs();
      soon('jobs', loadJobs);
    }
  });
  document.addEventListener('submit', (e) => {
    if (e.target.id === 'failed-form') {
      e.preventDefault();
      applyFailedFilters();
    }
  });
  window.addEventListener('hashchange', route);
  window.addEventListener('resize', () => {
    renderThroughput();
    renderGantt();
  });
  $('#login-btn').textContent = S.token ? 'Token ✓' : 'Token';
  $('#login-btn').classList.toggle('authed', !!S.token);
  route();
  restartEvents();
  setInterval(tick, 1000);
  setInterval(() => {
    soon('workers', loadWorkers);
    soon('queues', loadQueues);
    // Log lines do not come as events: follow a running task's by polling.
    if (S.taskId && S.task && S.task.state === 'running') soon('task', loadTask);
    // A schedule's next fire moves with each fire; other servers' fires come as events too.
    if (S.route.name === 'schedules') soon('schedules', loadSchedules);
    if (S.route.name === 'failed') soon('failed', loadFailed);
  }, POLL_MS);
}

document.addEventListener('DOMContentLoaded', init);
