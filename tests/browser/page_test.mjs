// The chat page of `flamingo serve` in headless Chromium: a picked image and a
// question, the streamed answer against the non-streamed one for the very
// request the page sent (and `flamingo chat`'s), a second turn carrying the
// history, "Start over", and a dropped image in the new conversation. Leaves
// a screenshot in OUT_DIR.
//   node page_test.mjs FLAMINGO MODEL_DIR OUT_DIR
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [flamingo, modelDir, outDir] = process.argv.slice(2);
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const imagePath = join(modelDir, "examples", "yellow_diamond.png");
const imageUri = "data:image/png;base64," + readFileSync(imagePath).toString("base64");
const key = "page-test-key";
const step = (what) => console.log("page test: " + what);

// The server, on a free port with an API key (the page must send it).
function startServer() {
  const server = spawn(flamingo, ["serve", "--model", modelDir, "--port", "0", "--api-key", key],
                       { stdio: ["ignore", "inherit", "pipe"] });
  let log = "";
  const port = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no port after 60 s:\n" + log)), 60000);
    server.stderr.on("data", (d) => {
      log += d;
      const m = /on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    server.on("exit", (code) => reject(new Error("flamingo serve exited (" + code + "):\n" + log)));
  });
  return { server, port, log: () => log };
}

async function main() {
  const { server, port: portPromise, log } = startServer();
  const userData = mkdtempSync(join(tmpdir(), "flamingo-page-"));
  let context = null;
  try {
    const base = "http://127.0.0.1:" + await portPromise + "/";
    const api = async (body) => {
      const r = await fetch(base + "v1/chat/completions", {
        method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + key } });
      assert.equal(r.status, 200, await r.clone().text());
      return r.json();
    };

    step("GET / without a key");
    const front = await fetch(base);
    assert.equal(front.status, 200);
    assert.equal(front.headers.get("content-type"), "text/html; charset=utf-8");
    const csp = front.headers.get("content-security-policy");
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /connect-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|\*/);
    assert.equal((await fetch(base + "v1/chat/completions", { method: "POST", body: "{}" })).status, 401);

    context = await chromium.launchPersistentContext(userData, {
      executablePath: chromiumPath,
      headless: true,
      viewport: { width: 720, height: 640 },
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    const page = context.pages()[0] || await context.newPage();
    const problems = [];  // console errors (CSP violations among them) and uncaught exceptions
    page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
    page.on("pageerror", (e) => problems.push(String(e)));
    const elsewhere = [];  // any request not to this server
    page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith("data:")) elsewhere.push(r.url()); });

    step("open the page in " + chromiumPath);
    await page.goto(base);
    const message = page.getByLabel(/^Message/);
    const answers = page.locator("#log li.assistant");

    // One turn: sends `question` with Enter, waits for the streamed answer;
    // returns the request the page sent and the text it shows.
    const turn = async (question, n) => {
      await message.fill(question);
      const sent = page.waitForRequest((r) => r.url() === base + "v1/chat/completions");
      await message.press("Enter");
      const body = (await sent).postDataJSON();
      await page.waitForFunction((n) => {
        const li = document.querySelectorAll("#log li.assistant");
        return li.length === n && li[n - 1].getAttribute("aria-busy") === "false";
      }, n, { timeout: 60000 });
      const shown = answers.nth(n - 1);
      assert.equal(await shown.getAttribute("class"), "assistant", await shown.textContent());
      return { body, text: await shown.locator("p").textContent() };
    };
    // What the page shows equals the non-streamed answer to the same messages.
    const same = async ({ body, text }) => {
      assert.equal(body.stream, true);
      const whole = await api({ ...body, stream: false });
      assert.equal(text, whole.choices[0].message.content);
      assert.ok(text.length > 0);
      return text;
    };

    step("pick an image, ask with Enter");
    await page.getByLabel(/^Images \(drop/).setInputFiles(imagePath);
    await page.locator("#pending img").waitFor();
    const q1 = "Question: What shape is in the picture? Answer:";
    step("without the key: 401, the message and image kept to send again");
    await message.fill(q1);
    await message.press("Enter");
    await page.getByRole("status").filter({ hasText: "HTTP 401" }).waitFor();
    assert.equal(await page.locator("#log li").count(), 0);
    assert.equal(await message.inputValue(), q1);
    assert.equal(await page.locator("#pending img").count(), 1);
    await page.getByLabel("API key").fill(key);
    const t1 = await turn(q1, 1);
    assert.equal(await page.getByRole("status").textContent(), "");
    assert.deepEqual(t1.body.messages, [{ role: "user", content: [
      { type: "image_url", image_url: { url: imageUri } }, { type: "text", text: q1 }] }]);
    const a1 = await same(t1);
    step("answer: " + JSON.stringify(a1));
    assert.equal(await page.locator("#log li.user img").count(), 1);
    assert.equal(await page.locator("#log li.user img").getAttribute("src"), imageUri);
    assert.equal(await page.locator("#pending img").count(), 0);

    step("second turn with the history");
    const q2 = "Question: What colour is the shape? Answer:";
    const t2 = await turn(q2, 2);
    assert.deepEqual(t2.body.messages.slice(1), [{ role: "assistant", content: a1 },
                                                 { role: "user", content: [{ type: "text", text: q2 }] }]);
    assert.deepEqual(t2.body.messages[0], t1.body.messages[0]);
    const a2 = await same(t2);
    step("answer: " + JSON.stringify(a2));
    // ... and both answers equal `flamingo chat`'s to the same two lines.
    const chat = execFileSync(flamingo, ["chat", "--model", modelDir, "--image", imagePath],
                              { input: q1 + "\n" + q2 + "\n", encoding: "utf8", timeout: 60000 });
    assert.deepEqual(chat.split("\n").filter((l) => l), [a1, a2]);
    await page.screenshot({ path: join(outDir, "serve_page.png") });

    step("start over, then drop an image");
    await page.getByRole("button", { name: "Start over" }).click();
    assert.equal(await page.locator("#log li").count(), 0);
    const drop = await page.evaluateHandle((uri) => {
      const bytes = Uint8Array.from(atob(uri.split(",")[1]), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([bytes], "shape.png", { type: "image/png" }));
      return data;
    }, imageUri);
    await page.dispatchEvent("#drop", "drop", { dataTransfer: drop });
    await page.locator("#pending img").waitFor();
    const t3 = await turn(q1, 1);
    assert.deepEqual(t3.body.messages, t1.body.messages);  // nothing of the old conversation
    assert.equal(await same(t3), a1);
    assert.equal(await page.locator("#log li").count(), 2);

    // Chromium reports the 401 asked for above; nothing else.
    assert.deepEqual(problems, ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]);
    assert.deepEqual(elsewhere, []);
  } catch (e) {
    console.error("flamingo serve's log:\n" + log());
    throw e;
  } finally {
    if (context) await context.close();
    rmSync(userData, { recursive: true, force: true });
    server.kill("SIGTERM");
  }
  const [code] = await new Promise((resolve) => server.exitCode !== null ? resolve([server.exitCode])
                                                                           : server.on("exit", (...a) => resolve(a)));
  assert.equal(code, 0, "flamingo serve's exit status");
  step("passed");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
