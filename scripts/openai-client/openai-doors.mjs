// Drives VramCram's other OpenAI doors with the official openai npm client:
// the Responses API (plain and streamed), a chat with tools (with
// --expect-echo the stand-in engine answers with a call whose arguments
// are the tools as it received them), embeddings, and an alias.
//
//   node openai-doors.mjs --base-url http://127.0.0.1:8000/v1 --model alpha \
//        [--alias NAME] [--api-key KEY] [--embeddings-model NAME] [--expect-echo]
import OpenAI from "openai";
import { flags, check, run } from "./common.mjs";

run("openai doors", async () => {
  const f = flags(process.argv.slice(2));
  const client = new OpenAI({ baseURL: f.baseURL, apiKey: f.apiKey, maxRetries: 0, timeout: 60_000 });
  const prompt = "hello from the responses api";
  const echo = "echo: " + prompt;
  let n = 0;

  // Responses API, plain.
  const resp = await client.responses.create({ model: f.model, input: prompt, max_output_tokens: 32 });
  check(resp.object === "response" && resp.status === "completed", `response object (got ${JSON.stringify(resp).slice(0, 300)})`);
  check(typeof resp.output_text === "string" && resp.output_text.length > 0, `response has output_text`);
  if (f.expectEcho) check(resp.output_text === echo, `output_text ${JSON.stringify(resp.output_text)} is ${JSON.stringify(echo)}`);
  n++;

  // Responses API, streamed.
  const stream = await client.responses.create({ model: f.model, input: prompt, max_output_tokens: 32, stream: true });
  let text = "", types = new Set(), completed = null;
  for await (const ev of stream) {
    types.add(ev.type);
    if (ev.type === "response.output_text.delta") text += ev.delta;
    if (ev.type === "response.completed") completed = ev.response;
  }
  check(types.has("response.created") && completed?.status === "completed", `stream events ${[...types].join(", ")}`);
  check(text.length > 0, "streamed text is not empty");
  if (f.expectEcho) check(text === echo, `streamed ${JSON.stringify(text)} is ${JSON.stringify(echo)}`);
  n++;

  // Chat with tools: the tools reach the engine unchanged.
  const tools = [{ type: "function", function: { name: "get_weather", description: "Weather of a city",
    parameters: { type: "object", properties: { city: { type: "string", enum: ["Oslo", "Lima"] } }, required: ["city"] } } }];
  const chat = await client.chat.completions.create({
    model: f.model, messages: [{ role: "user", content: "weather in Oslo?" }], tools, max_tokens: 32,
  });
  const msg = chat.choices[0]?.message;
  if (f.expectEcho) {
    const call = msg?.tool_calls?.[0];
    check(chat.choices[0].finish_reason === "tool_calls" && call?.function?.name === "get_weather", `tool call (got ${JSON.stringify(msg)})`);
    const args = JSON.parse(call.function.arguments);
    check(JSON.stringify(args.tools) === JSON.stringify(tools), `the engine got the tools unchanged (got ${call.function.arguments})`);
  } else {
    check(msg && (msg.content || msg.tool_calls), `chat with tools answers (got ${JSON.stringify(chat).slice(0, 300)})`);
  }
  n++;

  // Embeddings.
  if (f.embeddingsModel) {
    const emb = await client.embeddings.create({ model: f.embeddingsModel, input: ["one", "two"], encoding_format: "float" });
    check(emb.data.length === 2 && emb.data[1].embedding.length > 0, `two embeddings`);
    n++;
  }

  // An alias works like the model's name.
  if (f.alias) {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    check(ids.includes(f.alias), `models.list() has the alias ${f.alias} (got ${ids.join(", ")})`);
    const r = await client.responses.create({ model: f.alias, input: prompt, max_output_tokens: 32 });
    check(r.status === "completed" && r.output_text.length > 0, `response through the alias`);
    const c = await client.chat.completions.create({ model: f.alias, messages: [{ role: "user", content: prompt }], max_tokens: 32 });
    check(c.choices[0].message.content.length > 0, "chat through the alias");
    n++;
  }
  return n;
});
