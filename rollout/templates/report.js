"use strict";
// The episode table with its filters, and the conversation viewer.
// Conversations are stored in gzip blocks (base64 text of <script class="block">):
// a block is inflated with the browser's DecompressionStream the first time one of its episodes is opened.
// Every text from the dataset goes into the page with textContent, never as HTML.

const readJson = id => JSON.parse(document.getElementById(id).textContent);
const index = readJson("episode-index");
const shared = readJson("shared-texts");
const episodes = index.rows.map(row => Object.fromEntries(index.columns.map((name, i) => [name, row[i]])));
const byId = new Map(episodes.map(e => [e.id, e]));
const blocks = new Map();
const TABLE_LIMIT = 500;
const isPass = e => !e.error && e.reward !== null && e.reward >= 1 - 1e-6;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function folded(summary, body, className) {
  const details = el("details", className);
  details.append(el("summary", null, summary), el("pre", null, body));
  return details;
}

function loadBlock(n) {
  if (!blocks.has(n)) {
    const base64 = document.getElementById("block-" + n).textContent.trim();
    const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    blocks.set(n, new Response(stream).text().then(JSON.parse));
  }
  return blocks.get(n);
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

function preview(text, length = 90) {
  const flat = (text || "").replace(/\s+/g, " ").trim();
  return flat.length > length ? flat.slice(0, length - 1) + "…" : flat;
}

// ------------------------------------------------------------ the table
const form = document.getElementById("filters");
const tableBody = document.querySelector("#episode-table tbody");

function fillSelect(name, values) {
  const select = form.elements[name];
  for (const value of [...new Set(values)].sort()) select.append(new Option(value, value));
}
fillSelect("domain", episodes.map(e => e.domain));
fillSelect("termination", episodes.map(e => e.termination));

function matches(e, f) {
  if (f.domain && e.domain !== f.domain) return false;
  if (f.task && !e.task.includes(f.task.trim())) return false;
  if (f.termination && e.termination !== f.termination) return false;
  if (f.reward === "pass") return isPass(e);
  if (f.reward === "fail") return !isPass(e);
  if (f.reward === "error") return e.error;
  return true;
}

function tableRow(e) {
  const tr = el("tr", e.error ? "error" : isPass(e) ? "pass" : "fail");
  tr.dataset.id = e.id;
  const reward = e.error ? "error" : e.reward === null ? "–" : e.reward.toFixed(2);
  for (const value of [e.domain, e.task, e.trial, reward, e.termination, e.failed, e.steps]) tr.append(el("td", null, value));
  tr.addEventListener("click", () => { location.hash = "episode=" + encodeURIComponent(e.id); });
  return tr;
}

function renderTable() {
  const filter = Object.fromEntries(new FormData(form));
  const shown = episodes.filter(e => matches(e, filter));
  tableBody.replaceChildren(...shown.slice(0, TABLE_LIMIT).map(tableRow));
  document.getElementById("episode-count").textContent = shown.length > TABLE_LIMIT
    ? `${shown.length} of ${episodes.length} episodes match; the first ${TABLE_LIMIT} are listed`
    : `${shown.length} of ${episodes.length} episodes`;
  markSelected();
}
form.addEventListener("input", renderTable);
form.addEventListener("submit", event => event.preventDefault());

function markSelected() {
  const id = selectedId();
  for (const tr of tableBody.rows) tr.classList.toggle("selected", tr.dataset.id === id);
}

// ----------------------------------------------------------- the viewer
const viewer = document.getElementById("viewer");
const viewerBody = document.getElementById("viewer-body");

function selectedId() {
  const match = location.hash.match(/^#episode=(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function facts(e) {
  const dl = el("dl", "facts");
  const items = [
    ["domain", e.domain], ["task", e.task], ["trial", e.trial], ["agent", e.agent],
    ["reward", e.error ? "error (scored 0)" : e.reward], ["termination", e.termination], ["steps", e.steps],
    ["duration", e.duration_s === null ? null : e.duration_s + " s"], ["LLM calls", e.llm_calls], ["tokens", e.tokens],
    ["cost", e.cost_usd === null ? null : "$" + e.cost_usd], ["error", e.error_cause],
  ];
  for (const [name, value] of items) {
    if (value === null || value === undefined || value === "") continue;
    dl.append(el("dt", null, name), el("dd", name === "error" ? "error-cause" : null, value));
  }
  return dl;
}

function checksView(checks, e) {
  const box = el("div", "checks");
  box.append(el("h4", null, "Reward breakdown"));
  const parts = Object.entries(checks.parts || {});
  if (parts.length) box.append(el("p", "parts", parts.map(([k, v]) => `${k}: ${v}`).join(" · ")));
  if (!checks.checks.length) box.append(el("p", "hint", "The backend gave no checks for this episode."));
  const list = el("ul");
  const unscored = el("ul");
  for (const check of checks.checks) {
    const failed = check.scored && !check.ok;
    const li = el("li", failed ? "failed" : check.ok ? "met" : "unscored");
    li.append(el("span", "mark", check.ok ? "✓" : "✗"), el("span", "kind", check.kind), el("span", null, check.label));
    (check.scored ? list : unscored).append(li);
  }
  box.append(list);
  if (unscored.children.length) {
    // checks outside the task's reward basis (tau2's action checks in retail, say): shown folded, they do not change the reward
    const details = el("details", "unscored");
    details.append(el("summary", null, `${unscored.children.length} check${unscored.children.length === 1 ? "" : "s"} outside the reward basis (not scored)`), unscored);
    box.append(details);
  }
  for (const note of checks.notes || []) box.append(el("p", "note", note));
  if (e.failed) box.prepend(el("p", "verdict", "Failed: " + e.failed));
  return box;
}

function messageView(m, text) {
  if (m.r === "tool") {
    const result = text(m.c);
    return folded(`↳ ${m.n || "tool"} result: ${preview(result)}`, pretty(result), "tool-result");
  }
  const box = el("div", "message " + m.r);
  box.append(el("div", "role", m.r));
  if (m.c !== undefined && m.c !== null) box.append(el("div", "content", text(m.c)));
  for (const call of m.t || []) {
    const args = text(call.a);
    box.append(folded(`call ${call.n}(${preview(args, 70)})`, pretty(args), "tool-call"));
  }
  return box;
}

async function showEpisode(id) {
  const e = byId.get(id);
  viewer.hidden = false;
  if (!e) {
    viewerBody.replaceChildren(el("p", "hint", `No episode ${id} in this run.`));
    return;
  }
  const block = await loadBlock(e.block);
  const conversation = block.e[id];
  const text = i => (i === undefined || i === null ? "" : block.s[i]);
  const domainTexts = shared[e.domain] || [];
  const parts = [el("h3", null, `${e.task} · trial ${e.trial}`), el("p", "episode-id", e.id), facts(e), checksView(conversation.checks, e)];
  const thread = el("div", "thread");
  thread.append(el("h4", null, "Conversation"));
  if (conversation.sys !== undefined) {
    const prompt = domainTexts[conversation.sys].text;
    thread.append(folded(`System prompt (${prompt.length} characters, the same for ${domainTexts[conversation.sys].episodes} episodes)`, prompt, "system"));
  }
  if (conversation.tools !== undefined) {
    const tools = domainTexts[conversation.tools].text;
    let names = [];
    try { names = JSON.parse(tools).map(t => (t.function || t).name); } catch (_) { /* shown as text */ }
    thread.append(folded(`Tools (${names.length}): ${preview(names.join(", "), 120)}`, pretty(tools), "system"));
  }
  for (const m of conversation.m) thread.append(messageView(m, text));
  parts.push(thread);
  viewerBody.replaceChildren(...parts);
  viewer.scrollTop = 0;
  markSelected();
}

function showFromHash() {
  const id = selectedId();
  if (id === null) {
    viewer.hidden = true;
    markSelected();
  } else {
    showEpisode(id);
  }
}

function closeViewer() {
  history.replaceState(null, "", location.pathname + location.search);
  showFromHash();
}
window.addEventListener("hashchange", showFromHash);
document.getElementById("close-viewer").addEventListener("click", closeViewer);
document.addEventListener("keydown", event => { if (event.key === "Escape") closeViewer(); });
renderTable();
showFromHash();
