// Drives VramCram's Ollama door with the official ollama npm client: list,
// ps, show, chat streamed and not, generate, embed, an alias, and
// keep_alive: 0 unloading the model.
//
//   node ollama.mjs --base-url http://127.0.0.1:8000 --model alpha \
//        [--alias NAME] [--api-key KEY] [--embeddings-model NAME] [--expect-echo]
import { Ollama } from "ollama";
import { flags, check, run } from "./common.mjs";

run("ollama client", async () => {
  const f = flags(process.argv.slice(2));
  const ollama = new Ollama({ host: f.baseURL, headers: { Authorization: `Bearer ${f.apiKey}` } });
  const prompt = "hello from the ollama client";
  const echo = "echo: " + prompt;
  let n = 0;

  const list = await ollama.list();
  const names = list.models.map((m) => m.name);
  check(names.includes(f.model), `list() has ${f.model} (got ${names.join(", ")})`);
  if (f.alias) check(names.includes(f.alias), `list() has the alias ${f.alias}`);
  n++;

  const show = await ollama.show({ model: f.model });
  check(Array.isArray(show.capabilities) && show.capabilities.includes("completion") && show.details, `show ${JSON.stringify(show).slice(0, 300)}`);
  n++;

  // Chat, not streamed: one object with the counts Ollama clients read.
  const chat = await ollama.chat({ model: f.model, messages: [{ role: "user", content: prompt }], options: { num_predict: 32, temperature: 0.2 } });
  check(chat.done === true && chat.message.role === "assistant", `chat ${JSON.stringify(chat).slice(0, 300)}`);
  check(["stop", "length"].includes(chat.done_reason) && chat.eval_count > 0 && chat.prompt_eval_count > 0 && chat.total_duration > 0, `chat counts ${JSON.stringify(chat)}`);
  if (f.expectEcho) check(chat.message.content === echo, `chat ${JSON.stringify(chat.message.content)} is ${JSON.stringify(echo)}`);
  n++;

  // ps: the model is loaded now.
  const ps = await ollama.ps();
  check(ps.models.some((m) => m.name === f.model && m.size_vram > 0), `ps() has ${f.model} (got ${JSON.stringify(ps)})`);
  n++;

  // Chat, streamed.
  const stream = await ollama.chat({ model: f.alias || f.model, messages: [{ role: "user", content: prompt }], stream: true, options: { num_predict: 32 } });
  let text = "", parts = 0, last = null;
  for await (const part of stream) {
    parts++;
    text += part.message.content;
    last = part;
  }
  check(parts > 2 && last.done && last.eval_count > 0 && last.done_reason, `stream of ${parts} parts ends done (got ${JSON.stringify(last)})`);
  if (f.expectEcho) check(text === echo, `streamed ${JSON.stringify(text)} is ${JSON.stringify(echo)}`);
  n++;

  // Generate.
  const gen = await ollama.generate({ model: f.model, prompt, options: { num_predict: 32 } });
  check(gen.done && typeof gen.response === "string" && gen.response.length > 0, `generate ${JSON.stringify(gen).slice(0, 300)}`);
  if (f.expectEcho) check(gen.response === echo, `generate ${JSON.stringify(gen.response)}`);
  n++;

  // Embed.
  if (f.embeddingsModel) {
    const emb = await ollama.embed({ model: f.embeddingsModel, input: ["one", "two"] });
    check(emb.embeddings.length === 2 && emb.embeddings[0].length > 0, `embed ${JSON.stringify(emb).slice(0, 200)}`);
    n++;
  }

  // keep_alive: 0 unloads the model once the request is done.
  const bye = await ollama.generate({ model: f.model, prompt, keep_alive: 0, options: { num_predict: 4 } });
  check(bye.done, "generate with keep_alive 0");
  const deadline = Date.now() + 30_000;
  for (;;) {
    const now = await ollama.ps();
    if (!now.models.some((m) => m.name === f.model)) break;
    check(Date.now() < deadline, `${f.model} still loaded 30 s after keep_alive 0: ${JSON.stringify(now)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  n++;

  // Models are managed in VramCram's config.
  try {
    await ollama.pull({ model: "llama3" });
    check(false, "pull is refused");
  } catch (err) {
    check(err.status_code === 403 && /config/.test(err.error), `pull refused (got ${err})`);
  }
  n++;
  return n;
});
