// Drives a forgepipe server with the official openai npm client.
// Run by openai_test.go, which starts the server and passes:
//   FORGEPIPE_URL       the server's base URL (http://127.0.0.1:PORT)
//   FORGEPIPE_EXPECT    JSON: {"chat": {"messages", "max_tokens", "text"},
//                              "completion": {"prompt", "max_tokens", "text"}}
// The texts are the greedy continuations `pipeline run --temperature 0`
// gives for the same rendered prompt. Exits non-zero on any mismatch.
import assert from "node:assert/strict";
import OpenAI from "openai";

const expect = JSON.parse(process.env.FORGEPIPE_EXPECT);
const client = new OpenAI({
  baseURL: process.env.FORGEPIPE_URL + "/v1",
  apiKey: "unused",
  maxRetries: 0,
  timeout: 60_000,
});

// The model list.
const models = await client.models.list();
assert.equal(models.data.length, 1);
const model = models.data[0].id;

// A streaming chat completion.
const stream = await client.chat.completions.create({
  model,
  messages: expect.chat.messages,
  max_tokens: expect.chat.max_tokens,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let chatText = "";
let finish = null;
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks++;
  assert.equal(chunk.object, "chat.completion.chunk");
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    chatText += choice.delta?.content ?? "";
    if (choice.finish_reason) finish = choice.finish_reason;
  }
}
assert.equal(chatText, expect.chat.text, "streamed chat text");
assert.ok(finish === "length" || finish === "stop", `finish_reason ${finish}`);
assert.ok(usage && usage.completion_tokens > 0 && usage.total_tokens === usage.prompt_tokens + usage.completion_tokens,
  `usage ${JSON.stringify(usage)}`);

// A non-streaming completion.
const completion = await client.completions.create({
  model,
  prompt: expect.completion.prompt,
  max_tokens: expect.completion.max_tokens,
  temperature: 0,
});
assert.equal(completion.object, "text_completion");
assert.equal(completion.choices.length, 1);
assert.equal(completion.choices[0].text, expect.completion.text, "completion text");
assert.equal(completion.usage.completion_tokens, expect.completion.max_tokens);

// A bad request surfaces as the client's BadRequestError.
await assert.rejects(
  client.chat.completions.create({ model, messages: [], max_tokens: 4 }),
  (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && /messages/.test(err.message),
);

console.log(JSON.stringify({ ok: true, model, chunks, chat: chatText, completion: completion.choices[0].text }));
