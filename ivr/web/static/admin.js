"use strict";
// Admin pages: dial plans (edit, validate with errors at their line, diff, publish,
// history and rollback, the plan as a graph), prompts, tickets, the dashboard.
const $ = (id) => document.getElementById(id);
const el = (...a) => Console.el(...a);
const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- tabs --
const loaders = {};
for (const button of document.querySelectorAll(".tabs button")) {
  button.addEventListener("click", () => {
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b === button);
    for (const s of document.querySelectorAll("main > section")) s.classList.toggle("hidden", s.id !== "tab-" + button.dataset.tab);
    loaders[button.dataset.tab]();
  });
}

// -- dial plans --
function showProblems(problems) {
  $("plan-problems").replaceChildren(...problems.map(p => el("li", { "data-line": p.line }, `第 ${p.line} 行 (line ${p.line}): ${p.message}`)));
}
function drawGraph(graph) {
  // Graphviz dot's layout from the server; when dot is missing or failed, a plain
  // layered drawing here (and the page says why). Either way it fits the page width.
  const box = $("plan-graph"), note = $("plan-graph-note");
  if (!graph) { box.replaceChildren(); note.classList.add("hidden"); return; }
  const root = (graph.svg && graphvizSvg(graph)) || plainGraph(graph);
  const plain = !root.classList.contains("graphviz");
  note.classList.toggle("hidden", !plain);
  note.textContent = plain ? `流程图未用 Graphviz 排版（${graph.svg_error || "SVG 无法读取"}），以下为简易排版。` : "";
  const nodes = Object.fromEntries(graph.nodes.map(n => [n.id, n]));
  for (const g of root.querySelectorAll("g[data-node]")) {
    const n = nodes[g.getAttribute("data-node")];
    if (n && n.line) g.addEventListener("click", () => showLine(n.line));
  }
  box.replaceChildren(root);
}
function graphvizSvg(graph) {
  const doc = new DOMParser().parseFromString(graph.svg, "image/svg+xml");
  const root = doc.documentElement;
  if (root.nodeName !== "svg" || doc.getElementsByTagName("parsererror").length) return null;
  for (const bad of root.querySelectorAll("script, foreignObject")) bad.remove();
  for (const link of root.querySelectorAll("a")) link.replaceWith(...link.childNodes);
  // natural size in px (dot writes pt); drawn at most that wide, else scaled to the page
  const natural = parseFloat(root.getAttribute("width") || "0") * 4 / 3;
  root.removeAttribute("width"); root.removeAttribute("height");
  root.setAttribute("width", "100%");
  root.setAttribute("id", "plan-graph-svg");
  root.classList.add("graphviz");
  if (natural > 0) root.style.maxWidth = natural + "px";
  for (const g of root.querySelectorAll("g.plan-node")) {
    const n = graph.nodes[Number(g.id.replace("plan-node-", ""))];
    if (!n) continue;
    g.setAttribute("data-node", n.id);
    const title = g.querySelector("title"); if (title) title.textContent = `${n.id}（第 ${n.line} 行）`;
  }
  for (const title of root.querySelectorAll("g.plan-edge > title, g.plan-ref > title, g.graph > title")) title.remove();
  return document.importNode(root, true);
}
function plainGraph(graph) {
  // layered layout: breadth-first depth from the start node, one row per depth
  const types = (graph.names && graph.names.types) || {}, edgeNames = (graph.names && graph.names.edges) || {};
  const depth = { [graph.start]: 0 }; const order = [graph.start];
  for (let i = 0; i < order.length; i++) for (const e of graph.edges) if (e.from === order[i] && !(e.to in depth)) { depth[e.to] = depth[e.from] + 1; order.push(e.to); }
  for (const n of graph.nodes) if (!(n.id in depth)) { depth[n.id] = 0; order.push(n.id); }
  const rows = {}; const pos = {};
  for (const id of order) { const d = depth[id]; rows[d] = (rows[d] || 0) + 1; pos[id] = { x: 10 + (rows[d] - 1) * 150, y: 10 + d * 80 }; }
  const width = 20 + Math.max(...Object.values(rows)) * 150, height = 60 + Math.max(...Object.values(depth)) * 80;
  const root = svg("svg", { width: "100%", viewBox: `0 0 ${width} ${height}`, id: "plan-graph-svg", class: "plain" });
  root.style.maxWidth = width + "px";
  const defs = svg("defs"); const marker = svg("marker", { id: "arrow", markerWidth: 8, markerHeight: 8, refX: 8, refY: 4, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#8c959f" })); defs.append(marker); root.append(defs);
  for (const e of graph.edges) {
    const a = pos[e.from], b = pos[e.to]; if (!a || !b) continue;
    root.append(svg("line", { x1: a.x + 65, y1: a.y + 32, x2: b.x + 65, y2: b.y, stroke: "#8c959f", "marker-end": "url(#arrow)" }));
    const label = e.label in edgeNames ? edgeNames[e.label] : e.label;
    if (label) root.append(svg("text", { x: a.x + 65 + (b.x - a.x) * 0.25 + 3, y: a.y + 32 + (b.y - a.y - 32) * 0.25 + 10, fill: "#57606a" }, label));
  }
  const nodes = Object.fromEntries(graph.nodes.map(n => [n.id, n]));
  for (const id of order) {
    const p = pos[id], n = nodes[id] || { type: "?" };
    const g = svg("g", { class: "node", "data-node": id });
    g.append(svg("rect", { x: p.x, y: p.y, width: 130, height: 32, rx: 5, fill: id === graph.start ? "#dbeafe" : "#fff", stroke: "#0b4f8a" }));
    g.append(svg("text", { x: p.x + 6, y: p.y + 14 }, id));
    g.append(svg("text", { x: p.x + 6, y: p.y + 27, fill: "#57606a" }, (types[n.type] || n.type) + (n.label ? " · " + n.label : "")));
    root.append(g);
  }
  return root;
}
function showLine(line) {
  // select a node's line in the source, scrolled into view
  const area = $("plan-source"), lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  area.focus(); area.setSelectionRange(start, start + (lines[line - 1] || "").length);
  area.scrollTop = Math.max(0, (line - 5) * parseFloat(getComputedStyle(area).lineHeight || "18"));
  area.scrollIntoView({ block: "nearest" });
}
async function loadPlans() {
  const data = await Console.api("GET", "/api/admin/plans");
  $("plan-source").value = data.current.source;
  $("plan-version").textContent = "运行中 " + data.current.version;
  $("plan-history").replaceChildren(...data.history.map(v => el("tr", {},
    el("td", {}, v.id), el("td", {}, v.version), el("td", {}, v.author), el("td", {}, Console.when(v.published_at)), el("td", {}, v.note),
    el("td", {}, v.version === data.current.version ? el("span", { class: "badge" }, "当前") :
      el("button", { type: "button", class: "secondary", "data-rollback": v.id, onclick: async () => {
        const r = await Console.api("POST", `/api/admin/plans/${v.id}/rollback`);
        $("plan-status").textContent = "已回滚到 " + r.version; await loadPlans();
      } }, "回滚 Roll back")))));
  drawGraph(await Console.api("GET", "/api/admin/plans/graph"));
  showProblems([]);
}
async function validatePlan() {
  try {
    const r = await Console.api("POST", "/api/admin/plans/validate", { source: $("plan-source").value });
    showProblems([]); drawGraph(r.graph); $("plan-status").textContent = "校验通过 OK"; return true;
  } catch (e) {
    if (e.status === 422) { showProblems(e.data.problems); $("plan-status").textContent = ""; return false; }
    throw e;
  }
}
$("plan-validate").addEventListener("click", validatePlan);
$("plan-diff").addEventListener("click", async () => {
  const r = await Console.api("POST", "/api/admin/plans/diff", { source: $("plan-source").value });
  const out = $("plan-diff-out"); out.classList.remove("hidden");
  out.replaceChildren(...(r.diff || "(no change)\n").split("\n").map(line => el("span", { class: line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "" }, line + "\n")));
});
$("plan-publish").addEventListener("click", async () => {
  $("plan-status").textContent = "";
  try {
    const r = await Console.api("POST", "/api/admin/plans/publish", { source: $("plan-source").value, note: $("plan-note").value });
    await loadPlans(); $("plan-status").textContent = "已发布 Published " + r.version;
  } catch (e) {
    if (e.status === 422) { showProblems(e.data.problems); $("plan-status").textContent = ""; }
    else { $("plan-problems").replaceChildren(el("li", {}, "发布失败: " + e.message)); }
  }
});
$("config-reload").addEventListener("click", async () => {
  $("config-status").textContent = ""; $("config-problems").replaceChildren();
  try {
    const r = await Console.api("POST", "/api/admin/config/reload");
    const lines = [];
    if (r.applied.length) lines.push("已生效 Applied: " + r.applied.join(", "));
    if (r.needs_restart.length) lines.push("需重启 Needs a restart: " + r.needs_restart.join(", "));
    if (r.plan_error) lines.push("拨号计划未载入 Plan not loaded: " + r.plan_error);
    $("config-status").textContent = "已载入 Reloaded" + (lines.length ? "" : " (无变化 no change)");
    $("config-problems").replaceChildren(...lines.map(line => el("li", { class: "note" }, line)));
    await loadPlans();
  } catch (e) {
    $("config-status").textContent = "未载入 Not reloaded";
    const problems = (e.data && e.data.problems) || [];
    $("config-problems").replaceChildren(...(problems.length
      ? problems.map(p => el("li", {}, `config.toml:${p.line || "?"}: ${p.key}: ${p.message}`))
      : [el("li", {}, e.message)]));
  }
});
loaders.plans = loadPlans;

// -- prompts --
let prompts = { dialects: [], prompts: [] };
let listening = null;
function promptState(p) {
  if (p.state === "recorded") return "录音";
  if (p.state === "synthesised") return "合成";
  return p.dialect === "mandarin" ? "缺失（无法播放）" : "缺失（来电者听普通话）";
}
function showPrompts() {
  // the rows of the chosen dialect and state whose key or words hold the search
  const dialect = $("prompt-dialect").value, state = $("prompt-state").value;
  const words = $("prompt-filter").value.trim().toLowerCase();
  let shown = 0;
  for (const row of $("prompt-rows").children) {
    const p = row._prompt;
    const ok = (!dialect || p.dialect === dialect) && (!state || p.state === state)
      && (!words || p.key.toLowerCase().includes(words) || (p.text || "").toLowerCase().includes(words));
    row.classList.toggle("hidden", !ok); if (ok) shown++;
  }
  $("prompt-none").classList.toggle("hidden", shown > 0);
  $("prompt-count").textContent = `显示 ${shown} 条，共 ${prompts.prompts.length} 条`;
}
function listen(p) {
  if (listening) listening.pause();
  listening = new Audio(`/api/admin/prompts/${p.dialect}/${p.key}.wav`);
  listening.play().catch(e => { $("prompt-status").textContent = "无法播放: " + e.message; });
}
async function loadPrompts() {
  prompts = await Console.api("GET", "/api/admin/prompts");
  // per dialect (in the server's order), keys in natural order: queue_wait_2 before queue_wait_10
  const rank = Object.fromEntries(prompts.dialects.map((d, i) => [d, i]));
  prompts.prompts.sort((a, b) => (rank[a.dialect] - rank[b.dialect]) || a.key.localeCompare(b.key, "en", { numeric: true }));
  const name = (d) => Console.named(Console.DIALECTS, d);
  const counts = {};
  for (const p of prompts.prompts) { counts[p.dialect] = counts[p.dialect] || { recorded: 0, synthesised: 0, missing: 0 }; counts[p.dialect][p.state]++; }
  $("prompt-summary").textContent = Object.entries(counts).map(([d, c]) =>
    `${name(d)}：录音 ${c.recorded}，合成 ${c.synthesised}，缺失 ${c.missing}`).join(" · ");
  const select = $("prompt-dialect"), chosen = select.value || prompts.dialects[0] || "";
  select.replaceChildren(el("option", { value: "" }, "全部"), ...prompts.dialects.map(d => el("option", { value: d }, name(d))));
  select.value = chosen;
  $("prompt-rows").replaceChildren(...prompts.prompts.map(p => {
    const where = `${p.dialect}/${p.key}`;
    const file = el("input", { type: "file", accept: "audio/*", class: "hidden", "data-upload": where });
    file.addEventListener("change", async () => {
      if (!file.files.length) return;
      const form = new FormData(); form.append("file", file.files[0]);
      try {
        const r = await Console.api("POST", `/api/admin/prompts/${p.dialect}/${p.key}`, form);
        $("prompt-status").textContent = `${where}: 已安装 (${r.changes.join(", ") || "原样"})`; await loadPrompts();
      } catch (e) {
        $("prompt-status").textContent = ""; $("prompt-status").append(el("span", { class: "error" }, `${where}: 拒绝 — ${e.data && e.data.reasons ? e.data.reasons.join("; ") : e.message}`));
      }
    });
    const row = el("tr", { "data-prompt": where },
      el("td", {}, name(p.dialect)), el("td", { class: "key" }, p.key), el("td", { class: "words" }, p.text || "—"),
      el("td", { title: p.note || "" }, promptState(p)),
      el("td", {}, p.state === "missing" && p.dialect === "mandarin" ? "" :
        el("button", { type: "button", class: "secondary small", "data-listen": where, onclick: () => listen(p) }, "▶ 试听")),
      el("td", {}, file, el("button", { type: "button", class: "secondary small", onclick: () => file.click() }, "上传"),
        p.state === "recorded" ? el("button", { type: "button", class: "secondary small", onclick: async () => {
          await Console.api("POST", `/api/admin/prompts/${p.dialect}/${p.key}/synthesise`); await loadPrompts();
        } }, "改用合成") : ""));
    row._prompt = p;
    return row;
  }));
  showPrompts();
}
for (const id of ["prompt-dialect", "prompt-state", "prompt-filter"]) $(id).addEventListener("input", showPrompts);
loaders.prompts = loadPrompts;

// -- tickets --
function query() { const form = new FormData($("ticket-filter")); const q = new URLSearchParams(); for (const [k, v] of form) if (v) q.set(k, v); return q.toString(); }
async function loadTickets() {
  const q = query();
  $("ticket-csv").href = "/api/tickets.csv" + (q ? "?" + q : "");
  const data = await Console.api("GET", "/api/tickets" + (q ? "?" + q : ""));
  const v = (t, n) => (t.fields[n] && t.fields[n].value) || "";
  $("ticket-rows").replaceChildren(...data.tickets.map(t => el("tr", {}, el("td", {}, t.id), el("td", {}, Console.when(t.created_at)),
    el("td", {}, v(t, "category")), el("td", {}, v(t, "district")), el("td", {}, v(t, "urgency")), el("td", {}, t.summary))));
}
$("ticket-filter").addEventListener("submit", (e) => { e.preventDefault(); loadTickets(); });
loaders.tickets = loadTickets;

// -- dashboard --
function bars(counts, id) {
  const entries = Object.entries(counts); const max = Math.max(1, ...entries.map(e => e[1]));
  const root = svg("svg", { width: 420, height: 24 * entries.length + 10, class: "chart" });
  entries.forEach(([name, n], i) => {
    root.append(svg("text", { x: 0, y: 24 * i + 16 }, name));
    root.append(svg("rect", { x: 110, y: 24 * i + 4, width: Math.max(2, 260 * n / max), height: 16, fill: "#0b4f8a" }));
    root.append(svg("text", { x: 116 + 260 * n / max, y: 24 * i + 16 }, n));
  });
  $(id).replaceChildren(root);
}
async function loadDashboard() {
  const data = await Console.api("GET", "/api/stats?days=30");
  $("dash-total").textContent = data.total; $("dash-days").textContent = data.days;
  bars(data.by_district, "chart-district"); bars(data.by_category, "chart-category");
  const days = Object.fromEntries(Object.entries(data.by_day).map(([d, c]) => [d.slice(5), Object.values(c).reduce((a, b) => a + b, 0)]));
  bars(days, "chart-days");
}
loaders.dashboard = loadDashboard;

$("logout").addEventListener("click", () => Console.logout());
(async () => {
  const user = await Console.whoami();
  $("who").textContent = user.name;
  if (user.role !== "admin") {  // the API would answer 403 to everything: say so instead
    $("denied-who").textContent = user.name; $("denied").classList.remove("hidden");
    $("to-operator").focus(); return;
  }
  for (const frame of document.querySelectorAll(".tabs, main")) frame.classList.remove("hidden");
  await loadPlans();
})();
