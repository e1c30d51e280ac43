'use strict';
// Chat playground: sends the conversation to POST /v1/chat/completions with
// "stream": true and shows the answer as its chunks arrive. Uses app.js's
// helpers (el, st, authHeaders, readSSE, modelColor).

const pg = {
  messages: [], // the conversation: {role, content}
  ctrl: null, // AbortController of the request in flight
  ui: {},
};

// renderPlayground keeps the model list in step with GET /models (LLMs only).
function renderPlayground() {
  const sel = pg.ui.model;
  if (!sel) return;
  const llms = st.models.filter((m) => m.type === 'llm');
  const same = llms.length === sel.options.length && llms.every((m, i) => m.name === sel.options[i].value);
  if (same) return;
  const want = sel.value || localStorage.getItem('vramcram.pgModel') || '';
  sel.replaceChildren(...llms.map((m) => el('option', { value: m.name, text: m.name })));
  if (llms.some((m) => m.name === want)) sel.value = want;
}

function pgBubble(role, text, model) {
  const b = el('div', { class: `msg ${role}`, 'data-role': role },
    el('div', { class: 'who' }, model ? el('span', { class: 'swatch', style: { background: modelColor(model) } }) : null, role === 'user' ? 'you' : model),
    el('div', { class: 'text', text }));
  pg.ui.chat.append(b);
  pg.ui.chat.scrollTop = pg.ui.chat.scrollHeight;
  return b;
}

function pgBusy(busy) {
  pg.ui.send.disabled = busy;
  pg.ui.stop.disabled = !busy;
}

// pgSend streams one answer. Each chunk's delta is appended as it arrives;
// data-chunks counts them, data-state is streaming, done or failed.
async function pgSend(e) {
  e.preventDefault();
  const model = pg.ui.model.value;
  const text = pg.ui.input.value.trim();
  if (!model || !text || pg.ctrl) return;
  localStorage.setItem('vramcram.pgModel', model);
  pg.messages.push({ role: 'user', content: text });
  pgBubble('user', text);
  pg.ui.input.value = '';
  const out = pgBubble('assistant', '', model);
  const body = out.querySelector('.text');
  out.dataset.state = 'waiting';
  out.dataset.chunks = '0';
  pg.ui.chat.dataset.state = 'streaming';
  pg.ui.status.textContent = `waiting for ${model}…`;
  pgBusy(true);
  const ctrl = new AbortController();
  pg.ctrl = ctrl;
  let answer = '';
  let timings = null;
  let failed = '';
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST', signal: ctrl.signal, cache: 'no-store',
      headers: { ...authHeaders(), 'Content-Type': 'application/json' },
      body: JSON.stringify({ model, messages: pg.messages, stream: true, stream_options: { include_usage: true } }),
    });
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
    await readSSE(res.body, (ev) => {
      if (ev.error) {
        failed = ev.error.message || 'error';
        return;
      }
      const delta = ev.choices && ev.choices[0] && ev.choices[0].delta;
      if (delta && delta.content) {
        answer += delta.content;
        body.textContent = answer;
        out.dataset.state = 'streaming';
        out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
        pg.ui.status.textContent = `${model} is answering…`;
      }
      if (ev.timings) timings = ev.timings;
    });
    if (failed) throw new Error(failed);
    pg.messages.push({ role: 'assistant', content: answer });
    out.dataset.state = 'done';
    const tps = timings && timings.predicted_per_second > 0 ? ` · ${timings.predicted_per_second.toFixed(1)} tokens/s` : '';
    pg.ui.status.textContent = `${model}: ${timings ? `${timings.predicted_n} tokens` : 'done'}${tps}`;
  } catch (err) {
    pg.messages.pop(); // the question was not answered: not part of the chat
    out.dataset.state = ctrl.signal.aborted ? 'stopped' : 'failed';
    if (!ctrl.signal.aborted) body.textContent = answer ? `${answer}\n[${err.message}]` : err.message;
    pg.ui.status.textContent = ctrl.signal.aborted ? 'stopped' : `failed: ${err.message}`;
  } finally {
    pg.ctrl = null;
    pg.ui.chat.dataset.state = out.dataset.state;
    pgBusy(false);
  }
}

function pgInit() {
  for (const [name, id] of Object.entries({ form: 'pg-form', model: 'pg-model', chat: 'pg-chat', input: 'pg-input',
    send: 'pg-send', stop: 'pg-stop', clear: 'pg-clear', status: 'pg-status' })) pg.ui[name] = document.getElementById(id);
  pg.ui.form.addEventListener('submit', pgSend);
  pg.ui.stop.addEventListener('click', () => pg.ctrl && pg.ctrl.abort());
  pg.ui.clear.addEventListener('click', () => {
    if (pg.ctrl) pg.ctrl.abort();
    pg.messages = [];
    pg.ui.chat.replaceChildren();
    pg.ui.status.textContent = '';
  });
  renderPlayground();
}

document.addEventListener('DOMContentLoaded', pgInit);
