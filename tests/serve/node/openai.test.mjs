// `flamingo serve` against the official OpenAI Node client (the `openai`
// package, pinned in package-lock.json): chat completions, streamed and not,
// must equal the `flamingo generate` command's answer on the chat template's
// prompt, and errors must surface as the client's typed errors.
import assert from 'node:assert/strict';
import fs from 'node:fs';
const OpenAI = await import('openai').then((m) => m.default, (e) => {
  throw new Error(`the openai package is missing (${e.message}): run npm ci in tests/serve/node (tools/run.sh test does)`);
});
import { withServer, chatAnswer, image } from './server.mjs';

const key = 'test-key';
const dataUri = (name) => 'data:image/png;base64,' + fs.readFileSync(image(name)).toString('base64');
const question = 'Question: What colour are the shapes? Answer:';

await withServer(['--parallel', '2', '--threads', '2', '--api-key', key], 180, async (server) => {
  const client = new OpenAI({ baseURL: server.url + '/v1', apiKey: key, timeout: 60000, maxRetries: 0 });
  const cases = [
    { name: 'an image and a question', images: ['four_dotted_orange_squares.png'], text: question, max: 12 },
    { name: 'two images', images: ['two_red_circles.png', 'yellow_diamond.png'], text: 'Two photos of', max: 8 },
    { name: 'text only, cut at max_tokens', images: [], text: 'A photo of', max: 3 },
  ];
  for (const c of cases) {
    const expected = chatAnswer(c.text, c.images, c.max);
    assert.notEqual(expected, '', c.name);
    const content = [...c.images.map((im) => ({ type: 'image_url', image_url: { url: dataUri(im) } })),
                     { type: 'text', text: c.text }];
    const request = { model: 'shapes-flamingo', max_tokens: c.max, messages: [{ role: 'user', content }] };

    const r = await client.chat.completions.create(request);
    assert.equal(r.object, 'chat.completion', c.name);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].message.content, expected, c.name);
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.ok(r.usage.completion_tokens <= c.max);

    const stream = await client.chat.completions.create({ ...request, stream: true });
    let text = '', finish = null, chunks = 0;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      const choice = chunk.choices[0];
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
      ++chunks;
    }
    assert.equal(text, expected, c.name + ' (streamed)');
    assert.equal(finish, r.choices[0].finish_reason);
    assert.ok(chunks >= 3, 'the role, some content and the finish are chunks of their own');
    console.log(`ok: ${c.name}: ${JSON.stringify(expected)}`);
  }

  // The client's typed errors carry the server's status and message.
  const wrong = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'wrong', timeout: 60000, maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
                       (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  await assert.rejects(client.chat.completions.create({ model: 'm', messages: [] }),
                       (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /messages/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model: 'm', max_tokens: -1, messages: [{ role: 'user', content: 'hi' }] }),
                       (e) => e instanceof OpenAI.BadRequestError && /max_tokens/.test(e.message));
  console.log('ok: errors');
});
