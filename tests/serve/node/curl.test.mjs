// `flamingo serve` through Debian's curl, as the README shows it: generate,
// streamed and not, equals the `flamingo generate` command's answer; chat
// completions stream; a body sent with curl -d's default type is taken too.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { withServer, generate, image } from './server.mjs';

const b64 = (name) => fs.readFileSync(image(name)).toString('base64');

// curl's stdout; the body goes through stdin (it holds base64 images).
function curl(url, body, extra = []) {
  const r = spawnSync('curl', ['-sS', '--fail-with-body', '--max-time', '60', ...extra, '--data-binary', '@-', url],
                      { input: body, encoding: 'utf8', timeout: 90000 });
  if (r.error) throw new Error(`curl did not run (${r.error.message}): apt-get install curl`);
  assert.equal(r.status, 0, `curl ${url}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
const json = ['-H', 'Content-Type: application/json'];

// data: payloads of Server-Sent Events, with their event names.
function events(text) {
  return text.split('\n\n').filter((b) => b.includes('data: ')).map((b) => ({
    event: (b.match(/^event: (.*)$/m) || [])[1] ?? null,
    data: b.match(/^data: (.*)$/m)[1],
  }));
}

await withServer(['--parallel', '1', '--threads', '1'], 120, async (server) => {
  const prompt = '<image>A photo of two red circles.<|endofchunk|><image>A photo of';
  const images = ['two_red_circles.png', 'three_green_triangles.png'];
  const args = ['--prompt', prompt, '--json'];
  for (const im of images) args.push('--image', image(im));
  const expected = JSON.parse(generate(args));
  const body = JSON.stringify({ prompt, images: images.map(b64) });

  const r = JSON.parse(curl(server.url + '/v1/generate', body, json));
  assert.equal(r.text, expected.text);
  assert.deepEqual(r.tokens, expected.tokens);
  console.log(`ok: generate: ${JSON.stringify(r.text)}`);

  // curl -d without a Content-Type sends application/x-www-form-urlencoded: the JSON is still read.
  const form = JSON.parse(curl(server.url + '/v1/generate', body));
  assert.deepEqual(form.tokens, expected.tokens);
  console.log('ok: generate sent as curl -d\'s default type');

  const s = events(curl(server.url + '/v1/generate', JSON.stringify({ prompt, images: images.map(b64), stream: true }),
                        [...json, '-N']));
  const result = s.find((e) => e.event === 'result');
  assert.ok(result, 'an event: result');
  assert.deepEqual(JSON.parse(result.data), r);
  const pieces = s.filter((e) => e.event === null).map((e) => JSON.parse(e.data).text);
  assert.ok(pieces.length > 1);
  assert.equal(pieces.join(''), expected.text);
  console.log(`ok: generate streamed in ${pieces.length} pieces`);

  const chat = events(curl(server.url + '/v1/chat/completions', JSON.stringify({
    stream: true, max_tokens: 6,
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,' + b64('yellow_diamond.png') } },
                                         { type: 'text', text: 'Question: What shape is it? Answer:' }] }],
  }), [...json, '-N']));
  assert.equal(chat.at(-1).data, '[DONE]');
  const text = chat.slice(0, -1).map((e) => JSON.parse(e.data).choices[0].delta.content ?? '').join('');
  assert.notEqual(text, '');
  console.log(`ok: chat completions streamed: ${JSON.stringify(text)}`);
});
