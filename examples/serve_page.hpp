#pragma once
// The chat page `flamingo serve` answers at GET /: one HTML document with its
// style and script inline, nothing loaded from anywhere else. It talks to
// /v1/chat/completions like any OpenAI client: the whole conversation each
// turn, images as data: URIs, the answer streamed. Model text only ever goes
// into the page as textContent.
#include <cstddef>
#include <random>
#include <string>
#include <string_view>

namespace flamingo::serve::page {

// "%NONCE%" marks the inline <style> and <script>: each answer gets a fresh
// nonce, and the Content-Security-Policy runs only what carries it.
inline constexpr std::string_view kHtml = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>flamingo</title>
<style nonce="%NONCE%">
body { font: 16px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 46rem; padding: 0 1rem; color: #222; background: #fafafa; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: baseline; justify-content: space-between; }
h1 { font-size: 1.2rem; margin: .8rem 0; }
#log { list-style: none; padding: 0; margin: 0 0 1rem; }
#log li { margin: .6rem 0; padding: .5rem .8rem; border-radius: .6rem; background: #fff; border: 1px solid #ddd; }
#log li.user { background: #e8f0fe; margin-left: 4rem; }
#log li.assistant { margin-right: 4rem; }
#log h2 { font-size: .75rem; margin: 0; color: #555; }
#log p { margin: .2rem 0 0; white-space: pre-wrap; overflow-wrap: anywhere; }
img { height: 6rem; image-rendering: pixelated; border-radius: .3rem; margin: .3rem .3rem 0 0; vertical-align: top; }
#pending img { height: 3rem; }
#pending button { vertical-align: top; }
form { position: sticky; bottom: 0; background: #fafafa; padding: .5rem 0 1rem; border-top: 1px solid #ddd; }
#drop { display: block; border: 2px dashed #aaa; border-radius: .5rem; padding: .4rem .6rem; margin-bottom: .5rem; }
#drop.over { border-color: #36c; background: #eef3ff; }
textarea { width: 100%; box-sizing: border-box; font: inherit; }
.row { display: flex; gap: .5rem; margin-top: .4rem; align-items: center; }
#status { flex: 1; color: #555; font-size: .9rem; }
#status.bad { color: #b00; }
</style>
</head>
<body>
<header>
<h1>flamingo <small id="model"></small></h1>
<p><label>API key <input id="key" type="password" autocomplete="off" size="14"
  placeholder="if the server has one"></label></p>
</header>
<main>
<ol id="log" aria-label="Conversation" aria-live="polite"></ol>
<form id="form">
<label id="drop">Images (drop them here, or choose): <input id="files" type="file" accept="image/*" multiple></label>
<div id="pending" role="group" aria-label="Images for the next message"></div>
<label for="text">Message (Enter sends, Shift+Enter for a new line)</label>
<textarea id="text" rows="2"></textarea>
<div class="row">
<button id="send" type="submit">Send</button>
<button id="reset" type="button">Start over</button>
<span id="status" role="status"></span>
</div>
</form>
</main>
<script nonce="%NONCE%">
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log"), text = $("text"), pending = $("pending"), drop = $("drop");
let history = [];  // the OpenAI messages so far, sent again each turn
let images = [];   // data: URIs for the next message
let running = null;  // the AbortController of the answer being streamed

function say(message, bad = false) {
  $("status").textContent = message;
  $("status").classList.toggle("bad", bad);
}

fetch("health").then((r) => r.json()).then((j) => { $("model").textContent = j.model; }, () => {});

function entry(role, urls, content) {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("h2");
  who.textContent = role === "user" ? "You" : "Model";
  li.append(who);
  urls.forEach((url, i) => {
    const img = new Image();
    img.src = url;
    img.alt = "image " + (i + 1);
    li.append(img);
  });
  const p = document.createElement("p");
  p.textContent = content;
  li.append(p);
  log.append(li);
  li.scrollIntoView({block: "end"});
  return p;
}

function showPending() {
  pending.replaceChildren();
  images.forEach((url, i) => {
    const img = new Image();
    img.src = url;
    img.alt = "image " + (i + 1) + " for the next message";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "\u00d7";
    remove.setAttribute("aria-label", "Remove image " + (i + 1));
    remove.onclick = () => { images.splice(i, 1); showPending(); };
    pending.append(img, remove);
  });
}

const readFile = (f) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(f);
});

async function addFiles(files) {
  for (const f of files) {
    if (!f.type.startsWith("image/")) { say(f.name + " is not an image", true); continue; }
    try { images.push(await readFile(f)); } catch (err) { say(f.name + ": " + err.message, true); }
    showPending();
  }
}

$("files").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
document.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
document.addEventListener("dragleave", () => drop.classList.remove("over"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  addFiles(e.dataTransfer.files);
});
text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("form").requestSubmit(); }
});

// Streams one answer into `out`; returns its whole text and why it ended.
async function complete(messages, out, signal) {
  const headers = {"Content-Type": "application/json"};
  const key = $("key").value.trim();
  if (key) headers.Authorization = "Bearer " + key;
  const res = await fetch("v1/chat/completions",
                          {method: "POST", headers, signal, body: JSON.stringify({messages, stream: true})});
  if (!res.ok) {
    let why = "HTTP " + res.status;
    try { why += ": " + (await res.json()).error.message; } catch (_) {}
    if (res.status === 401) why += " (enter the server's API key above)";
    throw new Error(why);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", answer = "", finish = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) throw new Error("the answer ended early");
    buffer += value.replace(/\r\n?/g, "\n");
    for (let end; (end = buffer.indexOf("\n\n")) >= 0;) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      let name = "message", data = [];
      for (const line of lines) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      if (data.join("\n") === "[DONE]") return {answer, finish};
      const event = JSON.parse(data.join("\n"));
      if (name === "error") throw new Error(event.error.message);
      const choice = event.choices[0];
      if (choice.delta.content) answer += choice.delta.content;
      out.textContent = answer;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
}

$("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const said = text.value.trim();
  if (running || (!said && !images.length)) return;
  const content = images.map((url) => ({type: "image_url", image_url: {url}}));
  if (said) content.push({type: "text", text: said});
  const user = {role: "user", content}, sent = images;
  const asked = entry("user", images, said).parentNode;
  images = [];
  showPending();
  text.value = "";
  const out = entry("assistant", [], "");
  const controller = running = new AbortController();
  out.parentNode.setAttribute("aria-busy", "true");
  $("send").disabled = true;
  say("Answering\u2026");
  try {
    const {answer, finish} = await complete([...history, user], out, controller.signal);
    if (!controller.signal.aborted) history.push(user, {role: "assistant", content: answer});
    say(finish === "length" ? "The answer reached its length limit." : "");
  } catch (err) {
    if (controller.signal.aborted) return;
    // A failed turn is not kept: its message and images go back to be sent again.
    asked.remove();
    out.parentNode.remove();
    if (!text.value && !images.length) {
      text.value = said;
      images = sent;
      showPending();
    }
    say(err.message, true);
  } finally {
    out.parentNode.setAttribute("aria-busy", "false");
    if (running === controller) {
      running = null;
      $("send").disabled = false;
    }
  }
});

$("reset").addEventListener("click", () => {
  if (running) running.abort();
  running = null;
  history = [];
  images = [];
  log.replaceChildren();
  showPending();
  $("send").disabled = false;
  say("");
  text.focus();
});
</script>
</body>
</html>
)page";

inline std::string nonce() {
    std::random_device random;
    std::string hex;
    for (int i = 0; i < 4; ++i) {
        const unsigned v = random();
        for (int b = 0; b < 8; ++b) hex += "0123456789abcdef"[(v >> (4 * b)) & 15];
    }
    return hex;
}

// Nothing from elsewhere: no scripts, styles, fonts, frames or forms but the
// page's own; images only as data: URIs; requests only to this server.
inline std::string csp(const std::string& nonce) {
    return "default-src 'none'; script-src 'nonce-" + nonce + "'; style-src 'nonce-" + nonce +
           "'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

inline std::string html(const std::string& nonce) {
    std::string page(kHtml);
    for (std::size_t at; (at = page.find("%NONCE%")) != std::string::npos;) page.replace(at, 7, nonce);
    return page;
}

}  // namespace flamingo::serve::page
