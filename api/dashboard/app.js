'use strict';
// VramCram dashboard: plain JavaScript, no build step, nothing loaded from
// elsewhere. It reads GET /health, /models and /jobs, follows GET /events and
// submits with POST /jobs. The event stream is read with fetch() rather than
// EventSource because EventSource cannot send the Authorization header.

const KEY_STORAGE = 'vramcram.apiKey';
const JOBS_SHOWN = 15;
const LOG_KEPT = 40;
const REFRESH_DEBOUNCE_MS = 200;
const FULL_REFRESH_MS = 5000;
const FINAL = new Set(['completed', 'failed', 'cancelled']);

const ui = {};
const st = {
  key: '',
  health: null, // last GET /health body, null while unreachable
  models: [], // last GET /models "models"
  jobs: [], // last GET /jobs "jobs"
  batches: null, // last GET /batches "batches"; null when the server has no batch routes
  current: null, // the job submitted from this page: {id, model, text, done, busy}
  finished: new Map(), // job_id → job_finished event, for jobs that end before POST /jobs answers
  stream: null, // AbortController of the open /events request
  lastSeq: null, // id of the last event seen: a reconnect replays from there
  debounce: 0,
  refreshing: null,
  again: false,
};

class HTTPError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// el builds an element; attrs: class, text, style (object), on* handlers,
// anything else as an attribute. Text is always set as text, never as HTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'style') Object.assign(e.style, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- formatting ----

function fmtMB(mb) {
  return `${Math.round(mb).toLocaleString('en-US')} MiB`;
}

function fmtDur(ms) {
  if (!(ms >= 0)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m ${s % 60}s`;
}

function fmtTime(t) {
  const d = t instanceof Date ? t : new Date(t);
  return isNaN(d) ? '' : d.toLocaleTimeString('en-GB', { hour12: false });
}

function ago(iso) {
  if (!iso) return 'never';
  return `${fmtDur(Date.now() - new Date(iso).getTime())} ago`;
}

function since(a, b) {
  if (!a) return NaN;
  return (b ? new Date(b).getTime() : Date.now()) - new Date(a).getTime();
}

// modelColor gives each model its own colour: hues a golden angle apart in
// the configured order, so no two models share one; a name not (yet) in
// the list gets a hue derived from the name.
function modelColor(name) {
  const k = st.models.findIndex((m) => m.name === name);
  if (k >= 0) return `hsl(${Math.round((k * 137.508) % 360)}, 55%, 42%)`;
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360}, 55%, 42%)`;
}

// ---- HTTP ----

function authHeaders() {
  return st.key ? { Authorization: `Bearer ${st.key}` } : {};
}

// api calls the API and returns its JSON body; a non-2xx answer throws an
// HTTPError carrying the API's error code and message.
async function api(method, path, body) {
  const init = { method, headers: authHeaders(), cache: 'no-store' };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch {
    // not JSON
  }
  if (res.status === 401) setNeedKey(true);
  if (!res.ok) {
    const e = data && data.error;
    throw new HTTPError(res.status, e ? e.code : '', e ? e.message : `${method} ${path}: HTTP ${res.status}`);
  }
  setNeedKey(false);
  return data;
}

// fetchHealth returns /health's body (200 healthy or 503 degraded: same
// shape), or null when the daemon cannot be reached. It needs no key.
async function fetchHealth() {
  try {
    const res = await fetch('/health', { headers: authHeaders(), cache: 'no-store' });
    return await res.json();
  } catch {
    return null;
  }
}

// ---- state refresh ----

// refresh reloads health, models and jobs. Calls made while one runs fold
// into one more run after it, so answers are never applied out of order.
async function refresh() {
  if (st.refreshing) {
    st.again = true;
    return st.refreshing;
  }
  st.refreshing = (async () => {
    do {
      st.again = false;
      await loadAll();
    } while (st.again);
  })();
  try {
    await st.refreshing;
  } finally {
    st.refreshing = null;
  }
}

async function loadAll() {
  const [health, models, jobs, batches] = await Promise.allSettled([
    fetchHealth(),
    api('GET', '/models'),
    api('GET', `/jobs?limit=${JOBS_SHOWN}`),
    api('GET', '/batches'),
  ]);
  if (batches.status === 'fulfilled') st.batches = batches.value.batches || [];
  st.health = health.value || null;
  if (models.status === 'fulfilled') st.models = models.value.models || [];
  if (jobs.status === 'fulfilled') st.jobs = jobs.value.jobs || [];
  const failed = [models, jobs].find((r) => r.status === 'rejected' && r.reason.status !== 401);
  if (!st.health) showError('Cannot reach VramCram: is the daemon running?');
  else if (failed) showError(failed.reason.message);
  else showError('');
  renderAll();
  if (st.current && !st.current.done) checkCurrent();
}

function scheduleRefresh() {
  if (st.debounce) return;
  st.debounce = setTimeout(() => {
    st.debounce = 0;
    refresh();
  }, REFRESH_DEBOUNCE_MS);
}

// ---- rendering ----

function renderAll() {
  renderHealth();
  renderVRAM();
  renderGPUs();
  renderModels();
  renderModelSelect();
  renderJobs();
  renderPlayground(); // playground.js
  renderLogView(); // logs.js
  // Swatches drawn before /models answered (replayed events) get their colour now.
  for (const e of document.querySelectorAll('.swatch[data-model]')) e.style.background = modelColor(e.dataset.model);
  renderBatches();
}

// renderBatches lists the latest OpenAI batches with their progress.
function renderBatches() {
  ui.batchesSection.hidden = !st.batches || st.batches.length === 0;
  const rows = (st.batches || []).map((b) => {
    const c = b.request_counts;
    return el('tr', { 'data-batch': b.id, 'data-status': b.status },
      el('td', { title: b.id, text: b.id.slice(0, 14) }),
      el('td', {}, el('span', { class: 'state', 'data-state': b.status, text: b.status })),
      el('td', { text: b.endpoint }),
      el('td', { text: fmtTime(new Date(b.created_at * 1000)) }),
      el('td', {}, el('progress', { max: String(c.total || 1), value: String(c.completed + c.failed) })),
      el('td', { class: 'num', text: `${c.completed} / ${c.failed} / ${c.total}` }),
    );
  });
  ui.batchesBody.replaceChildren(...rows);
}

function renderHealth() {
  const h = st.health;
  ui.health.dataset.status = h ? h.status : 'down';
  ui.health.textContent = h ? h.status : 'unreachable';
  ui.health.title = (h && h.reason) || '';
  ui.meta.textContent = h
    ? `${h.version || ''} · policy ${h.policy} · queued ${h.queue_depth} · running ${h.running} · up ${fmtDur(h.uptime_seconds * 1000)}`
    : '';
  // A rejected config reload: the daemon runs on with its old config.
  if (h && h.config_error) ui.meta.textContent += ` · config reload rejected: ${h.config_error}`;
}

function renderVRAM() {
  const h = st.health;
  const bar = ui.vramBar;
  bar.replaceChildren();
  ui.vramLegend.replaceChildren();
  ui.vramScale.replaceChildren();
  if (!h || !(h.vram_total_mb > 0)) {
    bar.append(el('div', { class: 'seg free', style: { width: '100%' } }, el('span', { text: 'no VRAM reading' })));
    return;
  }
  const total = h.vram_total_mb;
  const pct = (mb) => `${(100 * Math.max(0, mb)) / total}%`;
  const legend = (color, cls, text) =>
    ui.vramLegend.append(el('li', {}, el('span', { class: `swatch ${cls || ''}`, style: color ? { background: color } : {} }), text));
  let reserved = 0;
  let measured = 0;
  const loaded = st.models.filter((m) => m.vram_reserved_mb > 0).sort((a, b) => a.name.localeCompare(b.name));
  for (const m of loaded) {
    const color = modelColor(m.name);
    const has = typeof m.vram_measured_mb === 'number' && m.vram_measured_mb > 0;
    const title = `${m.name} (${m.state}): reserved ${fmtMB(m.vram_reserved_mb)}${has ? `, measured ${fmtMB(m.vram_measured_mb)}` : ''}`;
    const seg = el('div', { class: 'seg model', 'data-model': m.name, 'data-state': m.state, title, style: { width: pct(m.vram_reserved_mb), background: color } },
      el('span', { text: `${m.name} ${m.vram_reserved_mb}` }));
    if (has) {
      seg.prepend(el('div', { class: 'measured', style: { width: `${Math.min(100, (100 * m.vram_measured_mb) / m.vram_reserved_mb)}%` } }));
      if (m.vram_measured_mb > m.vram_reserved_mb) seg.classList.add('over');
      measured += m.vram_measured_mb;
    }
    bar.append(seg);
    reserved += m.vram_reserved_mb;
    legend(color, '', `${m.name}: ${fmtMB(m.vram_reserved_mb)} reserved${has ? `, ${fmtMB(m.vram_measured_mb)} measured` : ''} (${m.state})`);
  }
  if (measured) legend('rgba(0,0,0,.35)', '', 'dark strip: measured by NVML (red outline: above the reservation)');
  const notOurs = h.vram_not_ours_mb || 0;
  const margin = Math.max(0, total - h.vram_budget_mb);
  const free = Math.max(0, h.vram_budget_mb - reserved - notOurs);
  if (notOurs > 0) {
    bar.append(el('div', { class: 'seg notours', title: `memory used by other processes: ${fmtMB(notOurs)}`, style: { width: pct(notOurs) } }, el('span', { text: `not ours ${notOurs}` })));
    legend('', 'seg notours', `not ours: ${fmtMB(notOurs)}`);
  }
  bar.append(el('div', { class: 'seg free', title: `free within the budget: ${fmtMB(free)}`, style: { width: pct(free) } }, el('span', { text: `free ${free}` })));
  legend('var(--free)', '', `free: ${fmtMB(free)}`);
  if (margin > 0) {
    bar.append(el('div', { class: 'seg margin', title: `safety margin (vram.safety_margin_mb): ${fmtMB(margin)}`, style: { width: pct(margin) } }, el('span', { text: `margin ${margin}` })));
    legend('', 'seg margin', `safety margin: ${fmtMB(margin)}`);
  }
  bar.append(el('div', { class: 'budget-mark', title: `budget ${fmtMB(h.vram_budget_mb)}`, style: { left: pct(h.vram_budget_mb) } }));
  ui.vramScale.append(
    el('span', { text: '0' }),
    el('span', { text: `reserved ${fmtMB(reserved)}${measured ? ` (measured ${fmtMB(measured)})` : ''} of budget ${fmtMB(h.vram_budget_mb)}` }),
    el('span', { text: `total ${fmtMB(total)} · source ${h.vram_source}` }),
  );
}

// renderGPUs draws one small bar per GPU when there are several: each
// model's share of that GPU, memory not ours, and the budget left.
function renderGPUs() {
  const list = ui.vramGPUs;
  list.replaceChildren();
  const devs = (st.health && st.health.devices) || [];
  list.hidden = devs.length < 2;
  if (devs.length < 2) return;
  for (const d of devs) {
    const total = d.vram_total_mb || 1;
    const pct = (mb) => `${(100 * Math.max(0, mb)) / total}%`;
    const bar = el('div', { class: 'bar gpu-bar', 'data-gpu': String(d.index) });
    for (const m of st.models) {
      const p = (m.placement || []).find((x) => x.device === d.index);
      if (!p) continue;
      bar.append(el('div', { class: 'seg model', 'data-model': m.name, title: `${m.name}: ${fmtMB(p.vram_mb)}`, style: { width: pct(p.vram_mb), background: modelColor(m.name) } },
        el('span', { text: m.name })));
    }
    if (d.vram_not_ours_mb > 0) bar.append(el('div', { class: 'seg notours', style: { width: pct(d.vram_not_ours_mb) } }));
    bar.append(el('div', { class: 'seg free', style: { width: pct(d.vram_free_mb) } }));
    const label = `GPU ${d.index} (${d.id || 'default'}): ${fmtMB(d.vram_reserved_mb)} reserved of ${fmtMB(d.vram_budget_mb)}, ` +
      `${fmtMB(d.vram_not_ours_mb || 0)} not ours, ${fmtMB(d.vram_free_mb)} free${d.lost ? ` — LOST: ${d.lost}` : ''}`;
    list.append(el('li', { class: d.lost ? 'lost' : '' }, el('div', { class: 'gpu-label', text: label }), bar));
  }
}

function renderModels() {
  const rows = st.models.map((m) => {
    const has = m.vram_measured_mb > 0; // absent (no NVML, not loaded): shown as —
    const config = m.vram_mb > 0 ? `${m.vram_mb}` : m.vram_estimate_mb > 0 ? `est. ${m.vram_estimate_mb}` : 'whole budget';
    const loaded = ['ready', 'busy', 'loading'].includes(m.state);
    const action = loaded ? 'unload' : 'load';
    const button = el('button', { class: 'small', type: 'button', disabled: m.state === 'unavailable', text: action,
      onclick: () => modelAction(m.name, action) });
    return el('tr', { 'data-model': m.name },
      el('td', {}, el('span', { class: 'swatch', style: { background: modelColor(m.name) } }), m.name, ' ',
        el('span', { class: 'muted small', text: m.type + (m.pinned ? ' · pinned' : '') })),
      el('td', {}, el('span', { class: 'state', 'data-state': m.state, text: m.state }),
        m.reason ? el('div', { class: 'muted small', text: m.reason }) : null),
      el('td', { class: 'num', text: `${m.vram_reserved_mb} · ${has ? m.vram_measured_mb : '—'} · ${config}` }),
      el('td', { class: 'num', text: `${m.running}/${m.slots}` }),
      el('td', { class: 'num', 'data-field': 'tps', title: m.generated_tokens ? `${m.prompt_tokens || 0} prompt · ${m.generated_tokens} generated tokens` : '',
        text: m.tokens_per_second > 0 ? m.tokens_per_second.toFixed(1) : '—' }),
      el('td', { class: 'num', 'data-field': 'queued', text: String(m.queued) }),
      el('td', { text: ago(m.last_used) }),
      el('td', {}, button),
    );
  });
  ui.modelsBody.replaceChildren(...rows);
}

function renderModelSelect() {
  const want = ui.model.value || localStorage.getItem('vramcram.model') || '';
  const opts = st.models.map((m) =>
    el('option', { value: m.name, text: m.state === 'unavailable' ? `${m.name} (unavailable)` : m.name }));
  const same = opts.length === ui.model.options.length &&
    opts.every((o, i) => o.value === ui.model.options[i].value && o.text === ui.model.options[i].text);
  if (!same) {
    ui.model.replaceChildren(...opts);
    if (st.models.some((m) => m.name === want)) ui.model.value = want;
  }
  showTypeFields();
}

function showTypeFields() {
  const m = st.models.find((x) => x.name === ui.model.value);
  const llm = !m || m.type === 'llm';
  for (const e of document.querySelectorAll('.llm-only')) e.hidden = !llm;
}

function renderJobs() {
  const rows = st.jobs.map((j) => {
    let detail = j.error || '';
    if (j.status === 'queued' && j.queue_position !== undefined) {
      detail = `position ${j.queue_position}${j.eta_seconds !== undefined ? `, ~${j.eta_seconds} s` : ''}`;
    }
    if (j.status === 'running' && j.progress) {
      detail = j.progress.steps ? `step ${j.progress.step}/${j.progress.steps}` : `${j.progress.tokens || 0} tokens`;
    }
    const waited = j.started_at ? since(j.created_at, j.started_at) : j.status === 'queued' ? since(j.created_at) : NaN;
    const ran = j.started_at ? since(j.started_at, j.finished_at) : NaN;
    return el('tr', { 'data-job': j.job_id, 'data-status': j.status },
      el('td', { title: j.job_id, text: j.job_id.slice(0, 8) }),
      el('td', { text: j.model }),
      el('td', {}, el('span', { class: 'state', 'data-state': j.status, text: j.status }),
        j.attempts > 1 ? el('span', { class: 'muted small', text: ` (attempt ${j.attempts})` }) : null),
      el('td', { text: fmtTime(j.created_at) }),
      el('td', { class: 'num', text: fmtDur(waited) }),
      el('td', { class: 'num', 'data-field': 'duration', text: fmtDur(ran) + (j.status === 'running' ? '…' : '') }),
      el('td', { class: 'detail', text: detail }),
    );
  });
  ui.jobsBody.replaceChildren(...rows);
}

function showError(msg) {
  ui.loadError.hidden = !msg;
  ui.loadError.textContent = msg;
}

function setNeedKey(need) {
  ui.authNeeded.hidden = !need;
}

function setConn(state, text) {
  ui.conn.dataset.state = state;
  ui.conn.textContent = text;
}

// ---- events ----

function describe(ev) {
  const parts = [ev.model, ev.job_id && ev.job_id.slice(0, 8), ev.state, ev.reason, ev.error];
  if (ev.type === 'model_loading' || ev.type === 'model_ready') parts.push(fmtMB(ev.vram_mb || 0));
  if (ev.seconds) parts.push(fmtDur(ev.seconds * 1000));
  return parts.filter(Boolean).join(' · ');
}

function prependLog(list, item) {
  const empty = list.querySelector('.empty');
  if (empty) empty.remove();
  list.prepend(item);
  while (list.children.length > LOG_KEPT) list.lastElementChild.remove();
}

function modelSwatch(name) {
  return name ? el('span', { class: 'swatch', 'data-model': name, style: { background: modelColor(name) } }) : null;
}

function logEvent(ev) {
  prependLog(ui.events, el('li', { 'data-type': ev.type },
    el('time', { text: fmtTime(ev.time) }), modelSwatch(ev.model), el('b', { text: ev.type }), describe(ev)));
}

function logModelChange(ev, kind, text) {
  prependLog(ui.evictions, el('li', { 'data-kind': kind, 'data-model': ev.model },
    el('time', { text: fmtTime(ev.time) }), modelSwatch(ev.model), el('b', { text: ev.model }), text));
}

function onEvent(ev) {
  if (ev.type === 'job_progress') {
    onProgress(ev);
    return;
  }
  logEvent(ev);
  switch (ev.type) {
    case 'model_evicted':
      logModelChange(ev, 'evicted', ev.reason || 'evicted');
      break;
    case 'model_unloaded':
      // An eviction was already listed when it was decided.
      if (!(ev.reason || '').startsWith('evicted for')) logModelChange(ev, 'unloaded', ev.reason ? `unloaded: ${ev.reason}` : 'unloaded');
      break;
    case 'model_failed':
      logModelChange(ev, 'failed', `failed: ${ev.error || 'unknown error'}`);
      break;
    case 'vram_release_timeout':
      logModelChange(ev, 'timeout', `VRAM not released in time: ${ev.error || ''}`);
      break;
    case 'job_started':
      if (st.current && st.current.id === ev.job_id) ui.jobStatus.textContent = `job ${ev.job_id} running on ${ev.model}`;
      break;
    case 'job_finished':
      st.finished.set(ev.job_id, ev);
      if (st.finished.size > 200) st.finished.delete(st.finished.keys().next().value);
      if (st.current && st.current.id === ev.job_id) checkCurrent();
      break;
  }
  scheduleRefresh();
}

function onProgress(ev) {
  const cur = st.current;
  if (!cur || cur.id !== ev.job_id || cur.done) return;
  if (ev.steps) {
    ui.jobStatus.textContent = `job ${ev.job_id}: step ${ev.step}/${ev.steps}`;
    return;
  }
  if (ev.chunk) {
    cur.text += ev.chunk;
    setAnswer('streaming', cur.text);
  }
}

// readSSE reads a text/event-stream body and calls handle with each event's
// parsed data.
async function readSSE(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r/g, '');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (!data) continue; // a comment (": keep-alive")
      let ev;
      try {
        ev = JSON.parse(data);
      } catch {
        continue;
      }
      handle(ev);
    }
  }
}

// followEvents keeps one /events stream open, reconnecting with backoff; a
// new API key aborts the stream and reconnects at once.
async function followEvents() {
  let delay = 500;
  for (;;) {
    const ctrl = new AbortController();
    st.stream = ctrl;
    try {
      // The first connection asks for the recent events the server keeps
      // (a reloaded page shows what happened before it); a reconnect asks
      // for those it missed.
      const headers = authHeaders();
      let path = '/events?since=0';
      if (st.lastSeq !== null) {
        path = '/events';
        headers['Last-Event-ID'] = String(st.lastSeq);
      }
      const res = await fetch(path, { headers, signal: ctrl.signal, cache: 'no-store' });
      if (res.status === 401) {
        setNeedKey(true);
        setConn('needs-key', 'events: need API key');
        await new Promise((resolve) => ctrl.signal.addEventListener('abort', resolve, { once: true }));
        continue;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      setConn('live', 'live');
      delay = 500;
      refresh(); // catch up on what happened while not connected
      await readSSE(res.body, (ev) => {
        if (typeof ev.seq === 'number') st.lastSeq = ev.seq;
        onEvent(ev);
      });
    } catch (err) {
      if (ctrl.signal.aborted) continue;
    }
    setConn('reconnecting', 'reconnecting');
    await sleep(delay);
    delay = Math.min(delay * 2, 10000);
  }
}

// ---- submitting ----

function setAnswer(state, text) {
  ui.answer.dataset.state = state;
  ui.answer.replaceChildren();
  if (text) ui.answer.append(el('div', { class: 'text', text }));
}

function renderResult(res) {
  if (res && res.type === 'diffusion' && Array.isArray(res.images)) {
    ui.answer.dataset.state = 'completed';
    ui.answer.replaceChildren();
    res.images.forEach((img, n) => {
      const fmt = ['png', 'jpeg', 'webp'].includes(img.format) ? img.format : 'png';
      if (typeof img.b64 !== 'string' || !/^[A-Za-z0-9+/=]+$/.test(img.b64)) return;
      ui.answer.append(el('img', { src: `data:image/${fmt};base64,${img.b64}`, alt: `image ${n + 1} for job ${st.current.id}` }));
    });
    const meta = Object.entries(res).filter(([k, v]) => k !== 'images' && k !== 'type' && typeof v !== 'object');
    if (meta.length) ui.answer.append(el('div', { class: 'muted small', text: meta.map(([k, v]) => `${k} ${v}`).join(' · ') }));
    return;
  }
  setAnswer('completed', (res && res.text) || '');
  const meta = [];
  if (res && res.tokens_predicted !== undefined) meta.push(`${res.tokens_predicted} tokens`);
  if (res && res.stop_type) meta.push(`stop: ${res.stop_type}`);
  if (meta.length) ui.answer.append(el('div', { class: 'muted small', text: meta.join(' · ') }));
}

// checkCurrent looks up the submitted job and, once it is final, shows its
// result or error. Called on its job_finished event and on every refresh (in
// case the stream missed the event).
async function checkCurrent() {
  const cur = st.current;
  if (!cur || cur.done || cur.busy) return;
  cur.busy = true;
  try {
    const job = await api('GET', `/jobs/${encodeURIComponent(cur.id)}`);
    if (st.current !== cur) return;
    if (!FINAL.has(job.status)) {
      if (job.status === 'queued') {
        const retry = job.attempts > 0 ? `, retry after: ${job.error || 'an engine failure'}` : '';
        const eta = job.eta_seconds !== undefined ? `, done in ~${job.eta_seconds} s` : '';
        ui.jobStatus.textContent = `job ${cur.id} queued (position ${job.queue_position ?? '?'}${eta}${retry})`;
      }
      return;
    }
    cur.done = true;
    const took = `waited ${fmtDur(since(job.created_at, job.started_at))}, ran ${fmtDur(since(job.started_at, job.finished_at))}`;
    if (job.status !== 'completed') {
      setAnswer('failed', job.error || `job ${job.status}`);
      ui.jobStatus.textContent = `job ${cur.id} ${job.status}`;
      return;
    }
    const res = await api('GET', `/jobs/${encodeURIComponent(cur.id)}/result`);
    if (st.current !== cur) return;
    renderResult(res);
    ui.jobStatus.textContent = `job ${cur.id} completed (${took})`;
  } catch (err) {
    ui.jobStatus.textContent = `job ${cur.id}: ${err.message}`;
  } finally {
    cur.busy = false;
  }
}

async function submitPrompt(e) {
  e.preventDefault();
  const model = ui.model.value;
  const m = st.models.find((x) => x.name === model);
  const body = { model, prompt: ui.prompt.value };
  const maxTokens = parseInt(ui.maxTokens.value, 10);
  if ((!m || m.type === 'llm') && maxTokens > 0) body.params = { max_tokens: maxTokens };
  localStorage.setItem('vramcram.model', model);
  ui.submit.disabled = true;
  setAnswer('empty');
  ui.jobStatus.textContent = 'submitting…';
  try {
    const r = await api('POST', '/jobs', body);
    st.current = { id: r.job_id, model, text: '', done: false, busy: false };
    ui.answer.dataset.job = r.job_id;
    ui.jobStatus.textContent = `job ${r.job_id} queued for ${model}`;
    if (st.finished.has(r.job_id)) checkCurrent();
    scheduleRefresh();
  } catch (err) {
    st.current = null;
    ui.jobStatus.textContent = '';
    setAnswer('failed', err.message);
  } finally {
    ui.submit.disabled = false;
  }
}

async function modelAction(name, action) {
  try {
    await api('POST', `/models/${encodeURIComponent(name)}/${action}`);
  } catch (err) {
    showError(`${action} ${name}: ${err.message}`);
  }
  scheduleRefresh();
}

function saveKey(e) {
  e.preventDefault();
  st.key = ui.key.value.trim();
  if (st.key) localStorage.setItem(KEY_STORAGE, st.key);
  else localStorage.removeItem(KEY_STORAGE);
  setNeedKey(false);
  if (st.stream) st.stream.abort(); // reconnect with the new key
  refresh();
}

function init() {
  for (const [name, id] of Object.entries({
    health: 'health', conn: 'conn', meta: 'meta', key: 'key', keyForm: 'key-form', authNeeded: 'auth-needed',
    loadError: 'load-error', vramBar: 'vram-bar', vramScale: 'vram-scale', vramLegend: 'vram-legend', vramGPUs: 'vram-gpus',
    model: 'model', prompt: 'prompt', maxTokens: 'max-tokens', submit: 'submit', submitForm: 'submit-form',
    jobStatus: 'job-status', answer: 'answer', evictions: 'evictions', events: 'events',
  })) ui[name] = document.getElementById(id);
  ui.modelsBody = document.querySelector('#models tbody');
  ui.jobsBody = document.querySelector('#jobs tbody');
  ui.batchesBody = document.querySelector('#batches tbody');
  ui.batchesSection = document.getElementById('batches-section');
  st.key = localStorage.getItem(KEY_STORAGE) || '';
  ui.key.value = st.key;
  ui.keyForm.addEventListener('submit', saveKey);
  ui.submitForm.addEventListener('submit', submitPrompt);
  ui.model.addEventListener('change', showTypeFields);
  refresh();
  followEvents();
  setInterval(refresh, FULL_REFRESH_MS);
  // Running and queued jobs' durations move between refreshes.
  setInterval(() => {
    if (st.jobs.some((j) => j.status === 'running' || j.status === 'queued')) renderJobs();
  }, 1000);
}

// DOMContentLoaded comes after every deferred script (playground.js, …) ran.
document.addEventListener('DOMContentLoaded', init);
