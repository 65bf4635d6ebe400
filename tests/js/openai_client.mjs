// Drives a running braid server with the official OpenAI client: node openai_client.mjs
// BASE_URL API_KEY MODEL. Prints one JSON object with what the client saw.
import OpenAI from 'openai';

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const out = {};

const whole = await client.completions.create({ model, prompt: 'And God said', max_tokens: 8, temperature: 0 });
out.whole = { text: whole.choices[0].text, finish: whole.choices[0].finish_reason, usage: whole.usage };

const stream = await client.completions.create({
  model, prompt: 'And God said', max_tokens: 8, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
let text = '';
let finish = null;
let usage = null;
for await (const chunk of stream) {
  for (const c of chunk.choices) {
    text += c.text;
    if (c.finish_reason) finish = c.finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
}
out.streamed = { text, finish, usage };

const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'And God said' },
];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
out.chat = { content: chat.choices[0].message.content, role: chat.choices[0].message.role,
  finish: chat.choices[0].finish_reason, usage: chat.usage, object: chat.object };
const chatStream = await client.chat.completions.create({
  model, messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let chatText = '';
let chatRole = null;
let chatFinish = null;
let chatUsage = null;
for await (const chunk of chatStream) {
  for (const c of chunk.choices) {
    if (c.delta.role) chatRole = c.delta.role;
    if (c.delta.content) chatText += c.delta.content;
    if (c.finish_reason) chatFinish = c.finish_reason;
  }
  if (chunk.usage) chatUsage = chunk.usage;
}
out.chatStreamed = { content: chatText, role: chatRole, finish: chatFinish, usage: chatUsage };

out.models = (await client.models.list()).data.map((m) => m.id);

try {
  await client.completions.create({ model, prompt: 'x', max_tokens: -1 });
  out.error = null;
} catch (e) {
  out.error = { status: e.status, param: e.param ?? null, message: e.message };
}

try {
  await new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 }).models.list();
  out.unauthorized = null;
} catch (e) {
  out.unauthorized = { status: e.status };
}

console.log(JSON.stringify(out));
