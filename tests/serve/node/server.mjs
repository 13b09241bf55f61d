// What the client tests share: the real `flamingo serve` on a free port of
// 127.0.0.1, the `flamingo` command's own answers to compare with, and a
// watchdog so that a hang fails the test instead of stalling CI.
import { spawn, execFileSync } from 'node:child_process';
import path from 'node:path';

export const cli = process.env.FLAMINGO_CLI;
export const model = process.env.FLAMINGO_MODEL;
if (!cli || !model) throw new Error('FLAMINGO_CLI and FLAMINGO_MODEL must be set (ctest sets them)');

export const image = (name) => path.join(model, 'examples', name);

// `flamingo generate`'s stdout.
export function generate(args) {
  return execFileSync(cli, ['generate', '--model', model, '--threads', '1', ...args],
                      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000 });
}

// The chat template's prompt of one user message (images first, as the server
// places them) and the command's answer to it, as chat completions give it:
// leading blanks dropped.
export function chatAnswer(text, images, maxTokens) {
  const prompt = 'User: ' + '<image>'.repeat(images.length) + text + '<|endofchunk|>Assistant:';
  const args = ['--prompt', prompt, '--max-new-tokens', String(maxTokens)];
  for (const im of images) args.push('--image', image(im));
  return generate(args).replace(/\n$/, '').replace(/^[ \t\n]+/, '');
}

export async function startServer(options = []) {
  const proc = spawn(cli, ['serve', '--model', model, '--port', '0', ...options], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  let exited = false;
  proc.on('exit', () => { exited = true; });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server named no port within 60 s: ' + log)), 60000);
    proc.stderr.on('data', (d) => {  // read to the end, so the pipe never fills
      log += d;
      const m = log.match(/http:\/\/127\.0\.0\.1:(\d+)[^\n]*\n/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the server exited (${code}): ${log}`)); });
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; ++i) {  // it listens right after naming the port
    try { if ((await fetch(url + '/health')).ok) break; } catch (e) { if (i >= 200) throw e; }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    proc, port, url,
    log: () => log,
    // SIGTERM; the exit code (null when it had to be killed).
    async stop() {
      if (exited) return proc.exitCode;
      const done = new Promise((r) => proc.once('exit', (code) => r(code)));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20000);
      const code = await done;
      clearTimeout(timer);
      return code;
    },
  };
}

// Runs `body` against a fresh server; fails (and kills the server) past `seconds`.
export async function withServer(options, seconds, body) {
  const server = await startServer(options);
  const watchdog = setTimeout(() => {
    console.error(`timed out after ${seconds} s; server log:\n${server.log()}`);
    server.proc.kill('SIGKILL');
    process.exit(1);
  }, seconds * 1000);
  try {
    await body(server);
    const code = await server.stop();
    if (code !== 0) throw new Error(`the server exited with ${code}: ${server.log()}`);
  } catch (e) {
    server.proc.kill('SIGKILL');
    throw e;
  } finally {
    clearTimeout(watchdog);
  }
}
