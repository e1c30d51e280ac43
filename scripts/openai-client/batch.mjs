// Drives VramCram's OpenAI Batch API with the official openai npm client:
// uploads a JSONL file of chat requests spread over several models
// (files.create), creates a batch (batches.create), polls batches.retrieve
// until it completes, downloads the output (files.content) and checks that
// every custom_id appears exactly once with its own answer and that
// request_counts match. Exits 1 on the first failed check.
//
//   node batch.mjs --base-url http://127.0.0.1:8000/v1 --models alpha,beta,gamma \
//        [--lines 300] [--api-key KEY] [--timeout-seconds 150]
//
// The answers checked are those of VramCram's stand-in engine ("echo: " +
// the last user message).
import OpenAI, { toFile } from "openai";

function flags(argv) {
  const out = { apiKey: process.env.OPENAI_API_KEY || "unused", lines: 300, timeoutSeconds: 150 };
  for (let i = 0; i < argv.length; i++) {
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case "--base-url": out.baseURL = next(); break;
      case "--models": out.models = next().split(","); break;
      case "--lines": out.lines = Number(next()); break;
      case "--api-key": out.apiKey = next(); break;
      case "--timeout-seconds": out.timeoutSeconds = Number(next()); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!out.baseURL || !out.models) throw new Error("--base-url and --models are required");
  return out;
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const f = flags(process.argv.slice(2));
  const client = new OpenAI({ baseURL: f.baseURL, apiKey: f.apiKey, maxRetries: 0, timeout: 60_000 });

  const lines = [];
  for (let k = 0; k < f.lines; k++) {
    lines.push(JSON.stringify({
      custom_id: `req-${k}`, method: "POST", url: "/v1/chat/completions",
      body: { model: f.models[k % f.models.length], messages: [{ role: "user", content: `question ${k}` }] },
    }));
  }
  const file = await client.files.create({
    file: await toFile(Buffer.from(lines.join("\n") + "\n"), "input.jsonl"),
    purpose: "batch",
  });
  check(file.object === "file" && file.purpose === "batch" && file.bytes > 0, `files.create: ${JSON.stringify(file)}`);
  const again = await client.files.retrieve(file.id);
  check(again.id === file.id && again.bytes === file.bytes, "files.retrieve gives the uploaded file");

  let batch = await client.batches.create({
    input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h",
    metadata: { test: "batch.mjs" },
  });
  check(batch.object === "batch" && batch.status === "validating", `batches.create: ${batch.status}`);
  const deadline = Date.now() + f.timeoutSeconds * 1000;
  const seen = new Set();
  while (!["completed", "failed", "cancelled", "expired"].includes(batch.status)) {
    check(Date.now() < deadline, `batch done within ${f.timeoutSeconds} s (status ${batch.status})`);
    await sleep(200);
    batch = await client.batches.retrieve(batch.id);
    seen.add(batch.status);
  }
  check(batch.status === "completed", `batch completed (got ${batch.status}: ${JSON.stringify(batch.errors)})`);
  check(batch.metadata?.test === "batch.mjs", "metadata kept");
  const rc = batch.request_counts;
  check(rc.total === f.lines && rc.completed === f.lines && rc.failed === 0, `request_counts ${JSON.stringify(rc)}`);
  check(batch.output_file_id && !batch.error_file_id, "an output file and no error file");

  const content = await client.files.content(batch.output_file_id);
  const text = await content.text();
  const out = text.trim().split("\n").map((l) => JSON.parse(l));
  check(out.length === f.lines, `${out.length} output lines, want ${f.lines}`);
  const ids = new Set();
  for (const l of out) {
    check(!ids.has(l.custom_id), `custom_id ${l.custom_id} once`);
    ids.add(l.custom_id);
    const k = Number(l.custom_id.slice(4));
    check(l.response?.status_code === 200 && l.error === null, `${l.custom_id}: status 200, no error`);
    const answer = l.response.body.choices?.[0]?.message?.content;
    check(answer === `echo: question ${k}`, `${l.custom_id}: its own answer (got ${JSON.stringify(answer)})`);
    check(l.response.body.model === f.models[k % f.models.length], `${l.custom_id}: answered by its model`);
  }
  for (let k = 0; k < f.lines; k++) check(ids.has(`req-${k}`), `req-${k} in the output`);

  const list = await client.batches.list({ limit: 10 });
  check(list.data.some((b) => b.id === batch.id), "batches.list has the batch");
  const deleted = await client.files.delete(file.id);
  check(deleted.deleted === true, "files.delete");
  console.log(`ok: ${f.lines} lines over ${f.models.length} models, statuses seen: ${[...seen].join(" → ")}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
