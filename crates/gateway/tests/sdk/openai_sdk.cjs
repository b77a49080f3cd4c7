// The official `openai` Node package against the gateway, as users run it.
// Reads OPENAI_BASE_URL and OPENAI_API_KEY; prints what each call gave as
// one JSON object, which the Rust test checks.
const { OpenAI, toFile } = require('openai');

async function main() {
  const client = new OpenAI({ maxRetries: 0 });
  const out = {};
  const messages = [{ role: 'user', content: 'Say hello.' }];

  const chat = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
  out.chat = chat.choices[0].message.content;

  let text = '';
  const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
  for await (const c of stream) {
    if (c.choices.length > 0) text += c.choices[0].delta.content || '';
  }
  out.chat_stream = text;

  const response = await client.responses.create({ model: 'gpt-4o-mini', input: 'Say hello.', max_output_tokens: 6 });
  out.response = response.output_text;
  out.response_id = response.id;
  out.response_output_tokens = response.usage.output_tokens;

  // Follow-ups reach the key that made the response (another key's
  // upstream account would not find it).
  out.follow_ups = [];
  for (let i = 0; i < 3; i++) {
    const follow = await client.responses.create({
      model: 'gpt-4o-mini', input: 'And then?', previous_response_id: response.id,
    });
    out.follow_ups.push(follow.output_text);
  }

  const kinds = [];
  text = '';
  const events = await client.responses.create({ model: 'gpt-4o-mini', input: 'Say hello.', stream: true });
  for await (const event of events) {
    kinds.push(event.type);
    if (event.type === 'response.output_text.delta') text += event.delta;
    if (event.type === 'response.completed') out.response_stream_usage = event.response.usage.total_tokens;
  }
  out.response_stream = text;
  out.response_stream_events = kinds;

  const embedding = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello' });
  out.embedding = embedding.data[0].embedding.length;

  const completion = await client.completions.create({ model: 'gpt-4o-mini', prompt: 'Say hello.', max_tokens: 5 });
  out.completion = completion.choices[0].text;

  const uploaded = await client.files.create({
    file: await toFile(Buffer.from('the notes'), 'notes.txt'), purpose: 'assistants',
  });
  out.file_id = uploaded.id;
  out.file_content = await (await client.files.content(uploaded.id)).text();

  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
