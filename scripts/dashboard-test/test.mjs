// Headless-browser test of the VramCram dashboard. endtoend_dashboard_test.go
// starts VramCram with stand-in engines (two models that do not fit together)
// and runs this script with:
//
//   DASHBOARD_URL         base URL of the running daemon (required)
//   DASHBOARD_SCREENSHOT  where to save the screenshot (required)
//   DASHBOARD_API_KEY     a configured API key, entered through the page's key field
//   MODEL_A, MODEL_B      the two models (default alpha, beta)
//   CHROMIUM_PATH         the browser (default /usr/bin/chromium)
//
// It loads the page, submits a prompt for A and sees the answer, submits one
// for B and sees A's eviction appear, and checks the VRAM bar; reloads the page
// and finds the eviction again (replayed events), unmeasured VRAM as "—", a
// colour per model, and a streamed playground answer; then, on a page
// whose API answers are fixed, it checks what the stand-ins cannot produce
// (measured and not-ours memory, an image result). Exit status 0 means every
// check passed.
import { chromium } from 'playwright-core';

const url = process.env.DASHBOARD_URL;
const shot = process.env.DASHBOARD_SCREENSHOT;
const key = process.env.DASHBOARD_API_KEY || '';
const modelA = process.env.MODEL_A || 'alpha';
const modelB = process.env.MODEL_B || 'beta';
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
if (!url || !shot) {
  console.error('DASHBOARD_URL and DASHBOARD_SCREENSHOT are required');
  process.exit(2);
}

let passed = 0;
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  passed++;
  console.log(`ok ${passed} - ${what}`);
}

// submit sends prompt for model through the form and waits for the answer.
async function submit(page, model, prompt) {
  await page.selectOption('#model', model);
  await page.fill('#prompt', prompt);
  const before = await page.getAttribute('#answer', 'data-job');
  await page.click('#submit');
  await page.waitForFunction((prev) => {
    const a = document.getElementById('answer');
    return a.dataset.job && a.dataset.job !== prev && (a.dataset.state === 'completed' || a.dataset.state === 'failed');
  }, before);
  const state = await page.getAttribute('#answer', 'data-state');
  const text = (await page.textContent('#answer .text')) || '';
  const id = await page.getAttribute('#answer', 'data-job');
  return { state, text, id };
}

// A 1×1 PNG, as a diffusion result carries it.
const PNG_1PX = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

// syntheticChecks renders figures the stand-in engines cannot produce (NVML's
// measured and not-ours memory, a diffusion result) by answering the page's
// API calls with fixed bodies.
async function syntheticChecks() {
  const p = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  open = p;
  p.setDefaultTimeout(30000);
  p.on('pageerror', (err) => problems.push(`page error (synthetic): ${err.message}`));
  const now = new Date().toISOString();
  const model = (name, type, state, reserved, measured) => ({
    name, type, state, vram_mb: 4000, vram_estimate_mb: 0, vram_reserved_mb: reserved, pinned: false,
    slots: 1, running: 0, queued: 0, last_used: now, ...(measured === undefined ? {} : { vram_measured_mb: measured }),
  });
  await p.route('**/health', (r) => r.fulfill({ json: {
    status: 'healthy', version: 'synthetic', uptime_seconds: 1, vram_source: 'nvml', vram_total_mb: 12000, vram_budget_mb: 11000,
    vram_reserved_mb: 7000, vram_free_mb: 2500, vram_not_ours_mb: 1500, loaded_models: ['alpha', 'beta'], queue_depth: 0, running: 0, policy: 'batch',
    devices: [
      { index: 0, id: 'GPU-a', vram_total_mb: 6000, vram_budget_mb: 5500, vram_reserved_mb: 4000, vram_not_ours_mb: 1500, vram_free_mb: 0 },
      { index: 1, id: 'GPU-b', vram_total_mb: 6000, vram_budget_mb: 5500, vram_reserved_mb: 3000, vram_not_ours_mb: 0, vram_free_mb: 2500, lost: 'reading GPU GPU-b failed' },
    ],
  } }));
  await p.route('**/models', (r) => r.fulfill({ json: { models: [
    { ...model('alpha', 'llm', 'ready', 4000, 3500), placement: [{ device: 0, id: 'GPU-a', vram_mb: 4000 }] },
    { ...model('beta', 'llm', 'ready', 3000, 3300), placement: [{ device: 1, id: 'GPU-b', vram_mb: 3000 }] },
    model('sd', 'diffusion', 'unloaded', 0),
  ], vram_budget_mb: 11000, vram_reserved_mb: 7000, vram_free_mb: 2500 } }));
  let posted = null;
  const job = { job_id: 'synthjob000000000001', status: 'completed', model: 'sd', type: 'diffusion', priority: 0, attempts: 1, max_attempts: 3,
    created_at: now, started_at: now, finished_at: now };
  const queued = { job_id: 'synthqueued000000001', status: 'queued', model: 'alpha', type: 'llm', priority: 0, attempts: 0, max_attempts: 3,
    created_at: now, queue_position: 2, eta_seconds: 7.5 };
  await p.route((u) => u.pathname === '/jobs', (r) => {
    if (r.request().method() !== 'POST') return r.fulfill({ json: { jobs: posted ? [job, queued] : [queued] } });
    posted = r.request().postDataJSON();
    return r.fulfill({ status: 202, json: { job_id: job.job_id, status: 'queued' } });
  });
  await p.route(`**/jobs/${job.job_id}`, (r) => r.fulfill({ json: job }));
  await p.route(`**/jobs/${job.job_id}/result`, (r) => r.fulfill({ json: { type: 'diffusion', images: [{ format: 'png', b64: PNG_1PX }], seed: 7 } }));
  await p.goto(url + '/');
  if (key) {
    await p.fill('#key', key);
    await p.click('#key-form button');
  }
  // The page redraws on every refresh, so measure within one evaluation.
  const ratio = await (await p.waitForFunction(() => {
    const e = document.querySelector('#vram-bar .seg.model[data-model="alpha"] .measured');
    return e && e.getBoundingClientRect().width / e.parentElement.getBoundingClientRect().width;
  })).jsonValue();
  check(Math.abs(ratio - 3500 / 4000) < 0.02, `measured memory is drawn inside the reservation (${ratio.toFixed(3)} of alpha's segment)`);
  check(await p.$('#vram-bar .seg.model.over[data-model="beta"]'), 'a model measured above its reservation is flagged');
  check(await p.$('#vram-bar .seg.notours'), 'memory not ours has its own segment');
  const legend = await p.textContent('#vram-legend');
  check(legend.includes('3,500 MiB measured') && legend.includes('not ours: 1,500 MiB'), `legend gives measured and not-ours figures (${legend})`);
  check((await p.$$('#vram-gpus li')).length === 2, 'one bar per GPU when there are several');
  check(await p.$('#vram-gpus .gpu-bar[data-gpu="0"] .seg.model[data-model="alpha"]') && await p.$('#vram-gpus .gpu-bar[data-gpu="1"] .seg.model[data-model="beta"]'),
    'each GPU bar shows the models placed on it');
  const gpuText = await p.textContent('#vram-gpus');
  check(gpuText.includes('GPU 1 (GPU-b)') && gpuText.includes('LOST'), `a lost GPU is flagged (${gpuText})`);

  await p.selectOption('#model', 'sd');
  check(await p.isHidden('#max-tokens'), 'max tokens is hidden for a diffusion model');
  await p.fill('#prompt', 'a lighthouse at dusk');
  await p.click('#submit');
  const size = await (await p.waitForFunction(() => {
    const e = document.querySelector('#answer[data-state="completed"] img');
    return e && e.complete && [e.naturalWidth, e.naturalHeight, e.getAttribute('src').slice(0, 22)];
  })).jsonValue();
  check(size[0] === 1 && size[1] === 1 && size[2] === 'data:image/png;base64,', `diffusion result is shown as an image (${size})`);
  check(posted && posted.model === 'sd' && posted.prompt === 'a lighthouse at dusk' && posted.params === undefined,
    `diffusion submit sends model and prompt only (${JSON.stringify(posted)})`);
  await p.waitForSelector(`#jobs tr[data-job="${job.job_id}"][data-status="completed"]`);
  check(true, 'recent jobs list the submitted job');
  const queuedRow = await p.textContent(`#jobs tr[data-job="${queued.job_id}"]`);
  check(queuedRow.includes('position 2, ~7.5 s'), `a queued job shows its position and ETA (${queuedRow})`);
  check(problems.length === 0, `no page errors on the synthetic page${problems.length ? ': ' + problems.join('; ') : ''}`);
  const synthShot = shot.replace(/(\.png)?$/, '-synthetic.png');
  await p.screenshot({ path: synthShot, fullPage: true });
  console.log(`screenshot: ${synthShot}`);
  await p.close();
}

const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
let open = page; // the page a failure screenshot is taken of
page.setDefaultTimeout(30000);
const problems = [];
page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
page.on('console', (msg) => {
  // Before the key is entered the API answers 401, which Chromium logs.
  if (msg.type() === 'error' && !(key && /status of 401/.test(msg.text()))) problems.push(`console error: ${msg.text()}`);
});

let failed = false;
try {
  await page.goto(url + '/');
  check((await page.title()) === 'VramCram', 'page loads with its title');

  if (key) {
    await page.waitForSelector('#auth-needed', { state: 'visible' });
    check(true, 'page asks for the API key');
    await page.fill('#key', key);
    await page.click('#key-form button');
    await page.waitForSelector('#auth-needed', { state: 'hidden' });
  }
  await page.waitForSelector('#conn[data-state="live"]');
  check(true, 'event stream is live');
  await page.waitForSelector(`#models tbody tr[data-model="${modelA}"]`);
  await page.waitForSelector(`#models tbody tr[data-model="${modelB}"]`);
  check(true, `models table lists ${modelA} and ${modelB}`);
  await page.waitForSelector('#health[data-status="healthy"]');
  check(true, 'health shows healthy');

  const promptA = 'Hello from the dashboard test';
  const a = await submit(page, modelA, promptA);
  check(a.state === 'completed' && a.text === `echo: ${promptA}`, `answer for ${modelA} is shown (got ${a.state} "${a.text}")`);
  check(/completed/.test(await page.textContent('#job-status')), 'job status line says completed');
  await page.waitForSelector(`#jobs tr[data-job="${a.id}"][data-status="completed"]`);
  check(true, 'recent jobs list the completed job');

  // The page redraws the bar on every refresh, so measure within one evaluation.
  const boxA = await (await page.waitForFunction((m) => {
    const e = document.querySelector(`#vram-bar .seg.model[data-model="${m}"]`);
    return e && { width: e.getBoundingClientRect().width };
  }, modelA)).jsonValue();
  const bar = await (await page.$('#vram-bar')).boundingBox();
  check(boxA && boxA.width > bar.width * 0.2, `VRAM bar has a segment for ${modelA} (${boxA && Math.round(boxA.width)} of ${Math.round(bar.width)} px)`);
  check((await page.$('#vram-bar .seg.free')) && (await page.$('#vram-bar .seg.margin')) && (await page.$('#vram-bar .budget-mark')),
    'VRAM bar shows free memory, the safety margin and the budget mark');

  const promptB = 'And now the other model';
  const b = await submit(page, modelB, promptB);
  check(b.state === 'completed' && b.text === `echo: ${promptB}`, `answer for ${modelB} is shown (got ${b.state} "${b.text}")`);
  const ev = await page.waitForSelector(`#evictions li[data-kind="evicted"][data-model="${modelA}"]`);
  const evText = await ev.textContent();
  check(evText.includes(`evicted for ${modelB}`), `eviction of ${modelA} appears with its reason ("${evText}")`);
  await page.waitForFunction(([x, y]) =>
    document.querySelector(`#vram-bar .seg.model[data-model="${y}"]`) && !document.querySelector(`#vram-bar .seg.model[data-model="${x}"]`),
  [modelA, modelB]);
  check(true, `VRAM bar now shows ${modelB} and no longer ${modelA}`);
  await page.waitForSelector(`#models tbody tr[data-model="${modelA}"] .state[data-state="unloaded"]`);
  check(true, `models table shows ${modelA} unloaded`);
  await page.waitForSelector(`#jobs tr[data-job="${b.id}"][data-status="completed"]`);
  const durations = await page.$$eval('#jobs tr[data-status="completed"] td[data-field="duration"]', (tds) => tds.map((td) => td.textContent));
  check(durations.length >= 2 && durations.every((d) => /\d/.test(d)), `completed jobs show durations (${durations.join(', ')})`);
  check((await page.$$('#events li[data-type="model_evicted"]')).length >= 1, 'event log lists the eviction');

  // A reloaded page remembers: the server replays its recent events.
  await page.reload();
  await page.waitForSelector('#conn[data-state="live"]');
  const evAgain = await page.waitForSelector(`#evictions li[data-kind="evicted"][data-model="${modelA}"]`);
  check((await evAgain.textContent()).includes(`evicted for ${modelB}`), 'after a reload the eviction is still listed (replayed by /events?since=0)');
  check((await page.$$('#events li[data-type="model_evicted"]')).length >= 1, 'after a reload the event log lists the eviction');
  const vramCell = await (await page.waitForSelector(`#models tbody tr[data-model="${modelB}"] td:nth-child(3)`)).textContent();
  check(vramCell.split(' · ')[1] === '—', `unmeasured VRAM shows as — without NVML, not 0 ("${vramCell}")`);
  const colors = await page.$$eval('#models tbody tr td:first-child .swatch', (s) => s.map((e) => getComputedStyle(e).backgroundColor));
  check(colors.length >= 2 && new Set(colors).size === colors.length, `each model has its own colour (${colors.join(', ')})`);

  // The playground streams an answer through /v1/chat/completions.
  await page.waitForSelector(`#pg-model option[value="${modelB}"]`, { state: 'attached' });
  await page.selectOption('#pg-model', modelB); // loaded: nothing is evicted
  const chatText = 'stream me five words please';
  await page.fill('#pg-input', chatText);
  await page.click('#pg-send');
  const reply = await page.waitForSelector('#pg-chat .msg.assistant[data-state="done"]');
  const replyText = await (await reply.$('.text')).textContent();
  const chunks = Number(await reply.getAttribute('data-chunks'));
  check(replyText === `echo: ${chatText}` && chunks >= 5, `playground streams the answer in chunks ("${replyText}", ${chunks} chunks)`);
  check(/tokens\/s/.test(await page.textContent('#pg-status')), `playground shows the engine's tokens/s (${await page.textContent('#pg-status')})`);
  await page.waitForFunction((m) => /\d/.test(document.querySelector(`#models tbody tr[data-model="${m}"] td[data-field="tps"]`).textContent), modelB);
  check(true, `models table shows ${modelB}'s tokens/s`);

  // The log view: the daemon's lines, then a model's engine output.
  await page.waitForFunction(() => /msg=/.test(document.getElementById('log-lines').textContent));
  check(true, 'log view shows the daemon\'s log lines');
  await page.waitForSelector(`#log-source option[value="${modelB}"]`, { state: 'attached' });
  await page.selectOption('#log-source', modelB);
  await page.waitForFunction((m) => {
    const e = document.getElementById('log-lines');
    return e.dataset.source === m && /log_server_r: done request: POST \/v1\/chat\/completions/.test(e.textContent);
  }, modelB);
  check(true, `log view shows ${modelB}'s engine output (the playground's request)`);

  check(problems.length === 0, `no page or console errors${problems.length ? ': ' + problems.join('; ') : ''}`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  await page.close();
  await syntheticChecks();
} catch (err) {
  failed = true;
  console.error(`FAIL: ${err.message}`);
  if (problems.length) console.error(`page problems: ${problems.join('; ')}`);
  const failShot = shot.replace(/(\.png)?$/, '-failure.png');
  try {
    await open.screenshot({ path: failShot, fullPage: true });
    console.error(`screenshot of the failure: ${failShot}`);
    console.error(`page text:\n${(await open.innerText('body')).slice(0, 3000)}`);
  } catch (e) {
    console.error(`no failure screenshot: ${e.message}`);
  }
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed ? 1 : 0} failed`);
process.exit(failed ? 1 : 0);
