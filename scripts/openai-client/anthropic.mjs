// Drives VramCram's Anthropic door with the official @anthropic-ai/sdk:
// messages.create plain and streamed, messages.countTokens, an alias, and a
// wrong key's 401 in Anthropic's error shape.
//
//   node anthropic.mjs --base-url http://127.0.0.1:8000 --model alpha \
//        --api-key KEY [--alias NAME] [--expect-echo]
import Anthropic from "@anthropic-ai/sdk";
import { flags, check, run } from "./common.mjs";

run("anthropic client", async () => {
  const f = flags(process.argv.slice(2));
  const client = new Anthropic({ baseURL: f.baseURL, apiKey: f.apiKey, maxRetries: 0, timeout: 60_000 });
  const prompt = "hello from the anthropic client";
  const echo = "echo: " + prompt;
  let n = 0;

  for (const model of f.alias ? [f.model, f.alias] : [f.model]) {
    const msg = await client.messages.create({ model, max_tokens: 32, messages: [{ role: "user", content: prompt }] });
    const text = msg.content.filter((b) => b.type === "text").map((b) => b.text).join("");
    check(msg.type === "message" && msg.role === "assistant", `message (got ${JSON.stringify(msg).slice(0, 300)})`);
    check(["end_turn", "max_tokens"].includes(msg.stop_reason), `stop_reason ${msg.stop_reason}`);
    check(msg.usage.output_tokens > 0, `usage ${JSON.stringify(msg.usage)}`);
    if (f.expectEcho) check(text === echo, `text ${JSON.stringify(text)} is ${JSON.stringify(echo)}`);
    else check(text.length > 0, "text is not empty");
    n++;
  }

  // Streamed.
  const stream = client.messages.stream({ model: f.model, max_tokens: 32, messages: [{ role: "user", content: prompt }] });
  let streamed = "", events = 0;
  for await (const ev of stream) {
    events++;
    if (ev.type === "content_block_delta" && ev.delta.type === "text_delta") streamed += ev.delta.text;
  }
  const final = await stream.finalMessage();
  check(events > 3 && final.stop_reason, `stream of ${events} events ends with ${final.stop_reason}`);
  if (f.expectEcho) check(streamed === echo, `streamed ${JSON.stringify(streamed)} is ${JSON.stringify(echo)}`);
  else check(streamed.length > 0, "streamed text is not empty");
  n++;

  // Token counting.
  const count = await client.messages.countTokens({ model: f.model, messages: [{ role: "user", content: prompt }] });
  check(count.input_tokens > 0, `countTokens ${JSON.stringify(count)}`);
  if (f.expectEcho) check(count.input_tokens === prompt.split(" ").length, `countTokens ${count.input_tokens}`);
  n++;

  // A wrong key: 401 in Anthropic's shape.
  const wrong = new Anthropic({ baseURL: f.baseURL, apiKey: "sk-wrong", maxRetries: 0 });
  try {
    await wrong.messages.create({ model: f.model, max_tokens: 8, messages: [{ role: "user", content: "x" }] });
    check(false, "a wrong key is refused");
  } catch (err) {
    check(err instanceof Anthropic.AuthenticationError && err.status === 401, `wrong key raises AuthenticationError (got ${err})`);
    check(err.error?.type === "error" && err.error?.error?.type === "authentication_error", `error body ${JSON.stringify(err.error)}`);
  }
  n++;
  return n;
});
