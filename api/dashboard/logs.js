'use strict';
// Log view: the daemon's log lines (GET /logs/stream) or a model's engine
// output (GET /logs/stream/{model}), recent lines first, then live. Uses
// app.js's helpers (el, st, authHeaders).

const LOG_LINES_SHOWN = 500;

const lv = {
  ctrl: null, // AbortController of the open stream
  source: '', // '' = the daemon, else a model name
  ui: {},
};

// renderLogView keeps the source list in step with GET /models.
function renderLogView() {
  const sel = lv.ui.source;
  if (!sel) return;
  const names = st.models.map((m) => m.name);
  const same = names.length + 1 === sel.options.length && names.every((n, i) => n === sel.options[i + 1].value);
  if (same) return;
  sel.replaceChildren(el('option', { value: '', text: 'VramCram (daemon)' }), ...names.map((n) => el('option', { value: n, text: `${n} (engine output)` })));
  sel.value = names.includes(lv.source) ? lv.source : '';
}

function lvAppend(lines) {
  const out = lv.ui.out;
  const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
  out.textContent += lines;
  // Keep the last LOG_LINES_SHOWN lines.
  const all = out.textContent.split('\n');
  if (all.length > LOG_LINES_SHOWN + 1) out.textContent = all.slice(all.length - LOG_LINES_SHOWN - 1).join('\n');
  if (atEnd) out.scrollTop = out.scrollHeight;
}

// lvFollow opens the stream of the selected source, closing the last one.
async function lvFollow() {
  if (lv.ctrl) lv.ctrl.abort();
  const ctrl = new AbortController();
  lv.ctrl = ctrl;
  lv.source = lv.ui.source.value;
  lv.ui.out.textContent = '';
  lv.ui.out.dataset.source = lv.source;
  lv.ui.out.dataset.state = 'connecting';
  const path = lv.source ? `/logs/stream/${encodeURIComponent(lv.source)}?tail=200` : '/logs/stream?tail=200';
  try {
    const res = await fetch(path, { headers: authHeaders(), signal: ctrl.signal, cache: 'no-store' });
    if (!res.ok || !res.body) {
      let msg = `HTTP ${res.status}`;
      try {
        const j = await res.json();
        if (j && j.error && j.error.message) msg = j.error.message;
      } catch {
        // not JSON
      }
      throw new Error(msg);
    }
    lv.ui.out.dataset.state = 'live';
    lv.ui.status.textContent = lv.source ? `following ${lv.source}'s engine` : 'following the daemon';
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      lvAppend(value);
    }
    lv.ui.out.dataset.state = 'ended';
    lv.ui.status.textContent = lv.source ? `${lv.source}'s engine exited (press follow to read it again)` : 'stream ended';
  } catch (err) {
    if (ctrl.signal.aborted) return;
    lv.ui.out.dataset.state = 'failed';
    lv.ui.status.textContent = err.message;
  }
}

function lvInit() {
  for (const [name, id] of Object.entries({ source: 'log-source', out: 'log-lines', follow: 'log-follow', status: 'log-status' })) {
    lv.ui[name] = document.getElementById(id);
  }
  lv.ui.source.addEventListener('change', lvFollow);
  lv.ui.follow.addEventListener('click', lvFollow);
  renderLogView();
  lvFollow();
}

document.addEventListener('DOMContentLoaded', lvInit);
