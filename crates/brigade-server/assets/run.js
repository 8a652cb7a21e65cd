// brigade dashboard, Run page (#/run) and judge view (#/judge/<job id>): write a program,
// run it against tests on the cluster's `code` workers, see per-test verdicts.
// Uses app.js's helpers (api, esc, S, toast, showError, badge, workerName) and loads the
// CodeMirror bundle (/assets/codemirror.js, from this server) only when the page opens.
'use strict';

const RUN_HISTORY_KEY = 'brigade.run.history';
const RUN_DRAFT_KEY = 'brigade.run.draft';
const RUN_ASSET_V = (document.currentScript?.src.match(/[?&]v=([^&]+)/) || [])[1] || '';

const TEMPLATES = {
  python: 'a, b = map(int, input().split())\nprint(a + b)\n',
  c: '#include <stdio.h>\n\nint main(void) {\n    long a, b;\n    if (scanf("%ld %ld", &a, &b) != 2) return 1;\n    printf("%ld\\n", a + b);\n    return 0;\n}\n',
  cpp: '#include <iostream>\n\nint main() {\n    long a, b;\n    std::cin >> a >> b;\n    std::cout << a + b << "\\n";\n}\n',
  java: 'import java.util.*;\n\npublic class Main {\n    public static void main(String[] args) {\n        Scanner in = new Scanner(System.in);\n        long a = in.nextLong(), b = in.nextLong();\n        System.out.println(a + b);\n    }\n}\n',
  rust: 'use std::io::Read;\n\nfn main() {\n    let mut s = String::new();\n    std::io::stdin().read_to_string(&mut s).unwrap();\n    let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();\n    println!("{}", v[0] + v[1]);\n}\n',
  javascript: "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/).map(Number);\nconsole.log(a + b);\n",
  bash: 'read a b\necho $((a + b))\n',
};
const FALLBACK_LANGS = ['python', 'c', 'cpp', 'java'];

const R = {
  langs: null, // from /v1/languages
  editor: null, // CodeMirror view, or a <textarea> until the bundle is loaded
  langConf: null,
  tests: [], // [{name, stdin, expected_output}]
  run: null, // {job, task} of the run shown
  polling: 0,
};

function runDraft() {
  try {
    return JSON.parse(localStorage.getItem(RUN_DRAFT_KEY)) || {};
  } catch {
    return {};
  }
}

function saveDraft() {
  const d = {
    language: $('#run-lang')?.value,
    source: editorText(),
    tests: R.tests,
    stdin: $('#run-stdin')?.value,
    expected: $('#run-expected')?.value,
  };
  localStorage.setItem(RUN_DRAFT_KEY, JSON.stringify(d));
}

function runHistory() {
  try {
    return JSON.parse(localStorage.getItem(RUN_HISTORY_KEY)) || [];
  } catch {
    return [];
  }
}

function pushHistory(entry) {
  const h = runHistory().filter((e) => e.job !== entry.job);
  h.unshift(entry);
  localStorage.setItem(RUN_HISTORY_KEY, JSON.stringify(h.slice(0, 30)));
}

function loadEditorBundle() {
  if (window.CM) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = `/assets/codemirror.js?v=${RUN_ASSET_V}`;
    s.onload = resolve;
    s.onerror = () => reject(new Error('could not load the editor'));
    document.head.appendChild(s);
  });
}

function langExtension(lang) {
  const CM = window.CM;
  if (lang === 'python') return CM.python();
  if (lang === 'java') return CM.java();
  if (lang === 'c' || lang === 'cpp') return CM.cpp();
  return [];
}

function editorText() {
  if (!R.editor) return '';
  return R.editor.state ? R.editor.state.doc.toString() : R.editor.value;
}

function setEditorText(text) {
  if (!R.editor) return;
  if (R.editor.state) R.editor.dispatch({ changes: { from: 0, to: R.editor.state.doc.length, insert: text } });
  else R.editor.value = text;
}

async function mountEditor(source, lang) {
  const host = $('#run-editor');
  // A plain textarea at once; the highlighting editor replaces it when loaded.
  host.innerHTML = `<textarea class="code-fallback mono" spellcheck="false" data-testid="run-source-fallback">${esc(source)}</textarea>`;
  R.editor = host.querySelector('textarea');
  try {
    await loadEditorBundle();
  } catch (e) {
    showError(e, 'Editor');
    return;
  }
  if (!host.isConnected) return;
  const CM = window.CM;
  const text = editorText();
  R.langConf = new CM.Compartment();
  const dark = document.documentElement.dataset.theme === 'dark' ||
    (!document.documentElement.dataset.theme && matchMedia('(prefers-color-scheme: dark)').matches);
  host.innerHTML = '';
  R.editor = new CM.EditorView({
    parent: host,
    state: CM.EditorState.create({
      doc: text,
      extensions: [
        CM.basicSetup,
        CM.keymap.of([CM.indentWithTab]),
        R.langConf.of(langExtension(lang)),
        dark ? CM.oneDark : [],
        CM.EditorView.updateListener.of((u) => u.docChanged && soon('run-draft', async () => saveDraft())),
      ],
    }),
  });
  host.dataset.ready = 'true';
}

function renderRun() {
  const d = runDraft();
  if (!R.tests.length && Array.isArray(d.tests)) R.tests = d.tests;
  $('#view').innerHTML = `
  <div class="crumbs"><a href="#/">Overview</a> / run code</div>
  <div class="run-grid" data-testid="run-page">
    <section class="card run-editor-card">
      <div class="card-head">
        <h2>Program</h2>
        <select id="run-lang" data-testid="run-language" title="Language"></select>
        <span class="sub" id="run-lang-info"></span>
        <div class="spacer"></div>
        <button class="btn" type="button" data-run="template" title="Replace the source with a template">Template</button>
        <button class="btn primary" type="button" data-run="go" data-testid="run-submit">Run ▶</button>
      </div>
      <div id="run-editor" class="run-editor" data-testid="run-editor"></div>
      <details class="run-more">
        <summary>Limits, comparison and checker</summary>
        <div class="run-limits">
          <label>CPU ms <input id="run-cpu" type="number" min="1" max="60000" value="2000"></label>
          <label>Wall ms <input id="run-wall" type="number" min="1" max="120000" value="5000"></label>
          <label>Memory KiB <input id="run-mem" type="number" min="1" max="4194304" value="262144"></label>
          <label>Output KiB <input id="run-out" type="number" min="1" max="65536" value="1024"></label>
          <label>Compare <select id="run-compare" data-testid="run-compare">
            <option value="trim">trim (ignore trailing spaces)</option><option value="exact">exact</option>
            <option value="tokens">tokens</option><option value="float">numbers ± tolerance</option></select></label>
          <label>Tolerance <input id="run-eps" type="number" step="any" min="0" max="1" value="0.000001"></label>
          <label class="check"><input id="run-stop" type="checkbox"> stop at the first failure</label>
        </div>
        <label class="block">Checker (Python; reads <code>input</code>, <code>expected</code>, <code>output</code>; exit 0 accepts, 1 rejects; empty: none)
          <textarea id="run-checker" class="mono" rows="4" spellcheck="false" placeholder="import sys&#10;..."></textarea></label>
      </details>
    </section>
    <section class="card run-tests-card">
      <div class="card-head">
        <h2>Tests</h2><span class="sub" id="run-tests-count"></span>
        <div class="spacer"></div>
        <label class="btn" title="Import NAME.in with NAME.out (or .ans) files">Import files<input id="run-import" type="file" multiple hidden data-testid="run-import"></label>
        <button class="btn" type="button" data-run="add-test" data-testid="run-add-test">Add test</button>
      </div>
      <div id="run-tests"></div>
      <div id="run-single" class="run-single">
        <label class="block">stdin<textarea id="run-stdin" class="mono" rows="3" spellcheck="false" data-testid="run-stdin">${esc(d.stdin || '')}</textarea></label>
        <label class="block">expected output (optional)<textarea id="run-expected" class="mono" rows="3" spellcheck="false" data-testid="run-expected">${esc(d.expected || '')}</textarea></label>
      </div>
    </section>
    <section class="card run-result-card" id="run-result" data-testid="run-result"><div class="empty">Run a program to see its verdict here.</div></section>
    <section class="card run-history-card"><div class="card-head"><h2>Your runs</h2></div><div id="run-history"></div></section>
  </div>`;
  renderRunTests();
  renderRunHistory();
  const lang = d.language || 'python';
  mountEditor(d.source || TEMPLATES[lang] || '', lang);
  loadLanguages(lang);
  if (R.run) renderRunResult();
}

async function loadLanguages(want) {
  try {
    R.langs = await api('/v1/languages');
  } catch (e) {
    R.langs = [];
    if (e.status !== 401) showError(e, 'Languages');
  }
  const sel = $('#run-lang');
  if (!sel) return;
  const names = R.langs.length ? R.langs.map((l) => l.language) : FALLBACK_LANGS;
  sel.innerHTML = names
    .map((n) => {
      const l = R.langs.find((x) => x.language === n);
      const label = l ? `${n}${l.version ? ' ' + l.version : ''}` : n;
      return `<option value="${esc(n)}">${esc(label)}</option>`;
    })
    .join('');
  sel.value = names.includes(want) ? want : names[0];
  langInfo();
}

function langInfo() {
  const l = (R.langs || []).find((x) => x.language === $('#run-lang').value);
  $('#run-lang-info').textContent = l
    ? `${l.workers} worker${l.workers === 1 ? '' : 's'}, ${l.slots_free} free slot${l.slots_free === 1 ? '' : 's'}`
    : R.langs && R.langs.length ? '' : 'no code worker has joined';
}

function renderRunTests() {
  const box = $('#run-tests');
  if (!box) return;
  $('#run-single').hidden = R.tests.length > 0;
  $('#run-tests-count').textContent = R.tests.length ? `${R.tests.length}` : 'none: one run with the stdin below';
  box.innerHTML = R.tests.length
    ? `<table class="tbl run-tests" data-testid="run-tests"><thead><tr><th>name</th><th>stdin</th><th>expected output</th><th></th></tr></thead><tbody>
      ${R.tests
        .map(
          (t, i) => `<tr data-testid="run-test-row">
        <td><input class="mono" data-test="${i}" data-field="name" value="${esc(t.name)}" data-testid="run-test-name"></td>
        <td><textarea class="mono" rows="2" spellcheck="false" data-test="${i}" data-field="stdin" data-testid="run-test-stdin">${esc(t.stdin)}</textarea></td>
        <td><textarea class="mono" rows="2" spellcheck="false" data-test="${i}" data-field="expected_output" data-testid="run-test-expected">${esc(t.expected_output)}</textarea></td>
        <td><button class="btn ghost" type="button" data-run="del-test" data-i="${i}" title="Remove" data-testid="run-test-remove">✕</button></td></tr>`,
        )
        .join('')}</tbody></table>`
    : '';
}

function renderRunHistory() {
  const box = $('#run-history');
  if (!box) return;
  const h = runHistory();
  box.innerHTML = h.length
    ? `<table class="tbl"><thead><tr><th>when</th><th>language</th><th>verdict</th><th>passed</th><th></th></tr></thead><tbody>
      ${h
        .map(
          (e) => `<tr class="click" data-run="open" data-job="${esc(e.job)}" data-testid="run-history-row">
          <td data-ago="${esc(e.at)}">${esc(ago(e.at))}</td><td>${esc(e.language)}</td>
          <td>${e.verdict ? verdictBadge(e.verdict) : '<span class="sub">…</span>'}</td>
          <td>${e.total ? `${e.passed}/${e.total}` : ''}</td>
          <td><a href="#/judge/${esc(e.job)}" title="Judge view of this job">judge view</a></td></tr>`,
        )
        .join('')}</tbody></table>`
    : '<div class="empty">Runs you start from this browser are listed here.</div>';
}

function verdictBadge(v) {
  const kind = v === 'accepted' ? 'ok' : v === 'internal_error' ? 'warn' : 'bad';
  return `<span class="verdict ${kind}" data-verdict="${esc(v)}">${esc(v.replace(/_/g, ' '))}</span>`;
}

function runInput() {
  const language = $('#run-lang').value;
  const num = (id) => {
    const v = Number($(id).value);
    return Number.isFinite(v) && v > 0 ? v : undefined;
  };
  const input = {
    language,
    source: editorText(),
    limits: { cpu_ms: num('#run-cpu'), wall_ms: num('#run-wall'), memory_kb: num('#run-mem'), output_kb: num('#run-out') },
  };
  const cmp = $('#run-compare').value;
  input.compare = cmp === 'float' ? { float: Number($('#run-eps').value) || 0 } : cmp;
  if ($('#run-stop').checked) input.stop_on_failure = true;
  const checker = $('#run-checker').value;
  if (checker.trim()) input.checker = { language: 'python', source: checker };
  if (R.tests.length) {
    input.tests = R.tests.map((t, i) => {
      const o = { name: t.name || `t${i + 1}`, stdin: t.stdin };
      if (t.expected_output !== '') o.expected_output = t.expected_output;
      return o;
    });
  } else {
    input.stdin = $('#run-stdin').value;
    const exp = $('#run-expected').value;
    if (exp !== '') input.expected_output = exp;
  }
  return input;
}

async function startRun() {
  saveDraft();
  const input = runInput();
  let job;
  try {
    job = await api('/v1/jobs', {
      method: 'POST',
      body: { name: `run ${input.language}`, tasks: [{ kind: 'code', input, requires: { lang: input.language } }] },
    });
  } catch (e) {
    showError(e, 'Could not submit the run');
    return;
  }
  pushHistory({ job: job.id, language: input.language, at: new Date().toISOString() });
  R.run = { job, task: null };
  renderRunResult();
  renderRunHistory();
  followRun(job.id);
}

async function openRun(jobId) {
  R.run = { job: { id: jobId, state: 'queued' }, task: null };
  renderRunResult();
  followRun(jobId);
}

// Long-poll the job until it finishes; show the task's state as it moves.
async function followRun(jobId) {
  const me = ++R.polling;
  for (;;) {
    let job, tasks;
    try {
      job = await api(`/v1/jobs/${encodeURIComponent(jobId)}?wait_ms=2000`);
      tasks = await api(`/v1/jobs/${encodeURIComponent(jobId)}/tasks`);
    } catch (e) {
      if (me === R.polling) showError(e, 'Following the run');
      return;
    }
    if (me !== R.polling || S.route.name !== 'run') return;
    const items = Array.isArray(tasks) ? tasks : tasks?.items || [];
    R.run = { job, task: items[0] || null };
    renderRunResult();
    const done = ['succeeded', 'failed', 'cancelled'].includes(job.state);
    if (done) {
      const out = R.run.task?.output || {};
      const h = runHistory();
      const e = h.find((x) => x.job === jobId);
      if (e) {
        e.verdict = out.verdict || R.run.task?.error?.kind || job.state;
        e.passed = out.passed;
        e.total = out.total;
        localStorage.setItem(RUN_HISTORY_KEY, JSON.stringify(h));
        renderRunHistory();
      }
      return;
    }
  }
}

function streamText(v, enc, cut) {
  let s = v || '';
  if (enc === 'base64') s = `[not UTF-8: ${Math.floor((s.length * 3) / 4)} bytes, base64]\n${s}`;
  if (cut) s += '\n[… cut to fit the result]';
  return s;
}

function outBlock(title, text, testid) {
  if (!text) return '';
  return `<details class="run-out" open><summary>${esc(title)}</summary><pre class="mono" data-testid="${testid}">${esc(text)}</pre></details>`;
}

function renderRunResult() {
  const box = $('#run-result');
  if (!box || !R.run) return;
  const { job, task } = R.run;
  const state = task?.state || job.state || 'queued';
  const out = task?.output || {};
  const finished = ['succeeded', 'failed', 'cancelled'].includes(state);
  let head = `<div class="card-head"><h2>Result</h2>${badge(state)}
    <span class="sub mono">job <a href="#/jobs/${esc(job.id)}">${esc(shortId(job.id))}</a></span>
    ${task?.worker_id ? `<span class="sub" data-testid="run-worker">on ${esc(workerName(task.worker_id))}</span>` : ''}
    <div class="spacer"></div>${finished ? '' : '<span class="spin" title="running"></span>'}</div>`;
  if (!finished) {
    box.innerHTML = `${head}<div class="empty" data-testid="run-status">${esc(state)}…</div>`;
    return;
  }
  if (state !== 'succeeded') {
    const err = task?.error;
    box.innerHTML = `${head}<div class="run-verdict" data-testid="run-verdict">${verdictBadge(err?.kind || state)}</div>
      <pre class="mono err">${esc(err ? `${err.kind}: ${err.message}` : state)}</pre>`;
    return;
  }
  const figures = `<span class="fig"><b>${esc(out.time_ms ?? '–')}</b> ms CPU</span>
    <span class="fig"><b>${esc(out.wall_ms ?? '–')}</b> ms wall</span>
    <span class="fig"><b>${esc(out.memory_kb != null ? Math.round(out.memory_kb / 1024) : '–')}</b> MiB</span>
    ${out.total != null ? `<span class="fig" data-testid="run-passed"><b>${out.passed}/${out.total}</b> passed</span>` : ''}`;
  let tests = '';
  if (Array.isArray(out.tests) && out.tests.length) {
    tests = `<table class="tbl run-verdicts" data-testid="run-test-results"><thead><tr><th>test</th><th>verdict</th><th>time</th><th>memory</th><th>comment</th></tr></thead><tbody>
      ${out.tests
        .map(
          (t, i) => `<tr class="click" data-run="toggle-out" data-i="${i}" data-testid="run-test-result" data-verdict="${esc(t.verdict)}">
        <td class="mono">${esc(t.name)}</td><td>${verdictBadge(t.verdict)}</td><td>${esc(t.time_ms)} ms</td>
        <td>${esc(Math.round((t.memory_kb || 0) / 1024))} MiB</td><td class="mono">${esc(t.comment || '')}</td></tr>
        <tr class="run-test-out" data-out="${i}" hidden><td colspan="5">${outBlock('stdout', streamText(t.stdout, t.stdout_encoding, t.stdout_truncated), 'run-test-stdout')}${outBlock('stderr', streamText(t.stderr, t.stderr_encoding, t.stderr_truncated), 'run-test-stderr')}</td></tr>`,
        )
        .join('')}</tbody></table>`;
    if (out.total > out.tests.length) tests += `<p class="sub">${out.total - out.tests.length} test(s) not run (stopped at the first failure).</p>`;
  }
  box.innerHTML = `${head}
    <div class="run-verdict" data-testid="run-verdict" data-verdict="${esc(out.verdict)}">${verdictBadge(out.verdict || '?')} ${figures}</div>
    ${out.message ? `<pre class="mono err">${esc(out.message)}</pre>` : ''}
    ${tests}
    ${outBlock('compile output', out.compile_output, 'run-compile-output')}
    ${outBlock('stdout', streamText(out.stdout, out.stdout_encoding, out.stdout_truncated), 'run-stdout')}
    ${outBlock('stderr', streamText(out.stderr, out.stderr_encoding, out.stderr_truncated), 'run-stderr')}`;
}

async function importTests(files) {
  const byName = new Map();
  for (const f of files) {
    const m = f.name.match(/^(.*)\.(in|out|ans|txt)$/i);
    const base = m ? m[1] : f.name;
    const kind = m ? m[2].toLowerCase() : 'in';
    const e = byName.get(base) || { name: base, stdin: '', expected_output: '' };
    const text = await f.text();
    if (kind === 'in' || kind === 'txt') e.stdin = text;
    else e.expected_output = text;
    byName.set(base, e);
  }
  const added = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  R.tests.push(...added);
  renderRunTests();
  saveDraft();
  toast(`${added.length} test(s) imported`, '', 'ok');
}

function onRunClick(e) {
  const el = e.target.closest('[data-run]');
  if (!el || S.route.name !== 'run') return;
  switch (el.dataset.run) {
    case 'go':
      startRun();
      break;
    case 'template':
      setEditorText(TEMPLATES[$('#run-lang').value] || '');
      break;
    case 'add-test':
      R.tests.push({ name: `t${R.tests.length + 1}`, stdin: '', expected_output: '' });
      renderRunTests();
      saveDraft();
      break;
    case 'del-test':
      R.tests.splice(Number(el.dataset.i), 1);
      renderRunTests();
      saveDraft();
      break;
    case 'open':
      if (!e.target.closest('a')) openRun(el.dataset.job);
      break;
    case 'toggle-out': {
      const row = $(`tr[data-out="${el.dataset.i}"]`);
      if (row) row.hidden = !row.hidden;
      break;
    }
  }
}

function onRunInput(e) {
  if (S.route.name !== 'run') return;
  const t = e.target;
  if (t.dataset.test != null) {
    R.tests[Number(t.dataset.test)][t.dataset.field] = t.value;
    soon('run-draft', async () => saveDraft());
  }
}

function onRunChange(e) {
  if (S.route.name !== 'run') return;
  if (e.target.id === 'run-lang') {
    const lang = e.target.value;
    if (R.editor?.state && R.langConf) R.editor.dispatch({ effects: R.langConf.reconfigure(langExtension(lang)) });
    const cur = editorText();
    if (!cur.trim() || Object.values(TEMPLATES).includes(cur)) setEditorText(TEMPLATES[lang] || '');
    langInfo();
    saveDraft();
  } else if (e.target.id === 'run-import') {
    importTests([...e.target.files]);
    e.target.value = '';
  } else if (e.target.id === 'run-stdin' || e.target.id === 'run-expected') {
    saveDraft();
  }
}

// ---------------------------------------------------------------- judge view

// A job of many code tasks (a class's submissions): who passed what.
async function renderJudge() {
  const id = S.route.id;
  $('#view').innerHTML = `<div class="crumbs"><a href="#/">Overview</a> / <a href="#/jobs/${esc(id)}">job <span class="mono">${esc(shortId(id))}</span></a> / judge view</div>
    <section class="card" data-testid="judge-page"><div class="card-head"><h2>Judge view</h2><span class="sub" id="judge-sum"></span></div><div id="judge-body"><div class="empty">Loading…</div></div></section>`;
  let tasks;
  try {
    const all = [];
    let cursor = '';
    for (;;) {
      const page = await api(`/v1/jobs/${encodeURIComponent(id)}/tasks?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      const items = Array.isArray(page) ? page : page.items || [];
      all.push(...items);
      cursor = Array.isArray(page) ? null : page.next_cursor;
      if (!cursor) break;
    }
    tasks = all.filter((t) => t.kind === 'code');
  } catch (e) {
    showError(e, 'Judge view');
    return;
  }
  if (S.route.name !== 'judge' || S.route.id !== id) return;
  const names = [];
  for (const t of tasks) for (const r of t.output?.tests || []) if (!names.includes(r.name)) names.push(r.name);
  const accepted = tasks.filter((t) => t.output?.verdict === 'accepted').length;
  $('#judge-sum').textContent = `${tasks.length} submission(s), ${accepted} accepted`;
  $('#judge-body').innerHTML = tasks.length
    ? `<table class="tbl judge" data-testid="judge-table"><thead><tr><th>submission</th><th>language</th><th>verdict</th><th>passed</th>${names.map((n) => `<th class="mono">${esc(n)}</th>`).join('')}</tr></thead><tbody>
    ${tasks
      .map((t) => {
        const o = t.output || {};
        const per = new Map((o.tests || []).map((r) => [r.name, r.verdict]));
        return `<tr class="click" data-href="#/jobs/${esc(id)}/tasks/${esc(t.id)}" data-testid="judge-row">
          <td>${esc(t.name || shortId(t.id))}</td><td>${esc(t.input?.language || '')}</td>
          <td>${o.verdict ? verdictBadge(o.verdict) : badge(t.state)}</td><td>${o.total != null ? `${o.passed}/${o.total}` : ''}</td>
          ${names.map((n) => `<td>${per.has(n) ? `<span class="dot ${per.get(n) === 'accepted' ? 'ok' : 'bad'}" title="${esc(per.get(n))}"></span>` : ''}</td>`).join('')}</tr>`;
      })
      .join('')}</tbody></table>`
    : '<div class="empty">This job has no code tasks.</div>';
}

document.addEventListener('click', onRunClick);
document.addEventListener('input', onRunInput);
document.addEventListener('change', onRunChange);
