// Drives a VramCram with the official openai npm client: model list, chat
// completion, streamed chat completion, legacy completion, embeddings and an
// unknown model's error. Exits 1 on the first failed check.
//
//   node test.mjs --base-url http://127.0.0.1:8000/v1 --model alpha \
//        [--api-key KEY] [--embeddings-model NAME] [--slow-model NAME] [--expect-echo]
//
// --slow-model names a model that takes seconds to load: a streamed chat to
// it waits for the load, with VramCram's keep-alive comments in the stream.
//
// Flags may also come from the environment: OPENAI_BASE_URL, OPENAI_MODEL,
// OPENAI_API_KEY, OPENAI_EMBEDDINGS_MODEL, OPENAI_EXPECT_ECHO=1.
// --expect-echo checks the exact answers of VramCram's stand-in engine
// ("echo: " + prompt); without it any non-empty answer passes.
import OpenAI from "openai";

function flags(argv) {
  const out = {
    baseURL: process.env.OPENAI_BASE_URL,
    model: process.env.OPENAI_MODEL,
    apiKey: process.env.OPENAI_API_KEY || "unused",
    embeddingsModel: process.env.OPENAI_EMBEDDINGS_MODEL,
    expectEcho: process.env.OPENAI_EXPECT_ECHO === "1",
    slowModel: process.env.OPENAI_SLOW_MODEL,
  };
  for (let i = 0; i < argv.length; i++) {
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case "--base-url": out.baseURL = next(); break;
      case "--model": out.model = next(); break;
      case "--api-key": out.apiKey = next(); break;
      case "--embeddings-model": out.embeddingsModel = next(); break;
      case "--expect-echo": out.expectEcho = true; break;
      case "--slow-model": out.slowModel = next(); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!out.baseURL || !out.model) throw new Error("--base-url and --model are required");
  return out;
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function main() {
  const f = flags(process.argv.slice(2));
  const client = new OpenAI({ baseURL: f.baseURL, apiKey: f.apiKey, maxRetries: 0, timeout: 60_000 });
  const prompt = "hello from the openai client";
  const echo = "echo: " + prompt;
  let n = 0;

  // Model list.
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  check(ids.includes(f.model), `models.list() has ${f.model} (got ${ids.join(", ")})`);
  n++;

  // Chat completion.
  const chat = await client.chat.completions.create({
    model: f.model, messages: [{ role: "user", content: prompt }], max_tokens: 32,
  });
  const text = chat.choices[0]?.message?.content;
  check(typeof text === "string" && text.length > 0, `chat answer is text (got ${JSON.stringify(chat)})`);
  check(chat.model === f.model, `chat answer names model ${f.model} (got ${chat.model})`);
  if (f.expectEcho) check(text === echo, `chat answer ${JSON.stringify(text)} is ${JSON.stringify(echo)}`);
  n++;

  // Streamed chat completion (and, with --slow-model, one that waits for a
  // load first: the stream opens at once with comments the client skips).
  for (const model of f.slowModel ? [f.model, f.slowModel] : [f.model]) {
    const stream = await client.chat.completions.create({
      model, messages: [{ role: "user", content: prompt }], max_tokens: 32, stream: true,
    });
    let streamed = "", chunks = 0, finish = null;
    for await (const chunk of stream) {
      chunks++;
      const c = chunk.choices[0];
      if (c?.delta?.content) streamed += c.delta.content;
      if (c?.finish_reason) finish = c.finish_reason;
    }
    check(chunks > 2, `stream from ${model} has several chunks (got ${chunks})`);
    check(finish === "stop" || finish === "length", `stream from ${model} ends with a finish_reason (got ${finish})`);
    if (f.expectEcho) check(streamed === echo, `streamed text ${JSON.stringify(streamed)} is ${JSON.stringify(echo)}`);
    else check(streamed.length > 0, "streamed text is not empty");
    n++;
  }

  // Legacy completion.
  const cmpl = await client.completions.create({ model: f.model, prompt, max_tokens: 32 });
  check(typeof cmpl.choices[0]?.text === "string", `completion has text (got ${JSON.stringify(cmpl)})`);
  if (f.expectEcho) check(cmpl.choices[0].text === echo, `completion ${JSON.stringify(cmpl.choices[0].text)}`);
  n++;

  // Embeddings.
  if (f.embeddingsModel) {
    const emb = await client.embeddings.create({ model: f.embeddingsModel, input: ["one", "two"], encoding_format: "float" });
    check(emb.data.length === 2 && emb.data[0].embedding.length > 0, `two embeddings (got ${JSON.stringify(emb).slice(0, 200)})`);
    n++;
  }

  // An unknown model is OpenAI's 404 model_not_found, which the client parses.
  try {
    await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] });
    check(false, "unknown model is refused");
  } catch (err) {
    check(err instanceof OpenAI.NotFoundError, `unknown model raises NotFoundError (got ${err})`);
    check(err.code === "model_not_found" && err.param === "model", `error code ${err.code}, param ${err.param}`);
    check(typeof err.message === "string" && err.message.includes("no-such-model"), `error message ${err.message}`);
  }
  n++;

  console.log(`openai client: all ${n} checks passed against ${f.baseURL}`);
}

main().catch((err) => {
  console.error(`openai client: ${err.stack || err}`);
  process.exit(1);
});
