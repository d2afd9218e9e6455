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
  // layered layout: breadth-first depth from the start node, one column per depth
  const box = $("plan-graph");
  if (!graph) { box.replaceChildren(); return; }
  const depth = { [graph.start]: 0 }; const order = [graph.start];
  for (let i = 0; i < order.length; i++) for (const e of graph.edges) if (e.from === order[i] && !(e.to in depth)) { depth[e.to] = depth[e.from] + 1; order.push(e.to); }
  for (const n of graph.nodes) if (!(n.id in depth)) { depth[n.id] = 0; order.push(n.id); }
  const columns = {}; const pos = {};
  for (const id of order) { const d = depth[id]; columns[d] = (columns[d] || 0) + 1; pos[id] = { x: 20 + d * 210, y: 20 + (columns[d] - 1) * 54 }; }
  const width = 200 + Math.max(...Object.values(depth)) * 210, height = 40 + Math.max(...Object.values(columns)) * 54;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "plan-graph-svg" });
  const defs = svg("defs"); const marker = svg("marker", { id: "arrow", markerWidth: 8, markerHeight: 8, refX: 8, refY: 4, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#8c959f" })); defs.append(marker); root.append(defs);
  for (const e of graph.edges) {
    const a = pos[e.from], b = pos[e.to]; if (!a || !b) continue;
    root.append(svg("line", { x1: a.x + 130, y1: a.y + 16, x2: b.x, y2: b.y + 16, stroke: "#8c959f", "marker-end": "url(#arrow)" }));
    // the label just after the edge leaves its node, where edges do not yet overlap
    const t = 0.18, lx = a.x + 130 + (b.x - a.x - 130) * t, ly = a.y + 16 + (b.y - a.y) * t;
    root.append(svg("text", { x: lx + 3, y: ly - 4, fill: "#57606a" }, e.label));
  }
  const types = Object.fromEntries(graph.nodes.map(n => [n.id, n]));
  for (const id of order) {
    const p = pos[id], n = types[id] || { type: "?" };
    const g = svg("g", { class: "node", "data-node": id });
    g.append(svg("rect", { x: p.x, y: p.y, width: 130, height: 32, rx: 5, fill: id === graph.start ? "#dbeafe" : "#fff", stroke: "#0b4f8a" }));
    g.append(svg("text", { x: p.x + 6, y: p.y + 14 }, id));
    g.append(svg("text", { x: p.x + 6, y: p.y + 27, fill: "#57606a" }, n.type + (n.label ? " · " + n.label : "")));
    root.append(g);
  }
  box.replaceChildren(root);
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
async function loadPrompts() {
  const data = await Console.api("GET", "/api/admin/prompts");
  const counts = {};
  for (const p of data.prompts) { counts[p.dialect] = counts[p.dialect] || { recorded: 0, synthesised: 0, missing: 0 }; counts[p.dialect][p.state]++; }
  $("prompt-summary").textContent = Object.entries(counts).map(([d, c]) => `${d}: ${c.recorded} recorded, ${c.synthesised} synthesised, ${c.missing} missing`).join(" · ");
  $("prompt-rows").replaceChildren(...data.prompts.map(p => {
    const file = el("input", { type: "file", accept: "audio/*", "data-upload": `${p.dialect}/${p.key}` });
    file.addEventListener("change", async () => {
      if (!file.files.length) return;
      const form = new FormData(); form.append("file", file.files[0]);
      try {
        const r = await Console.api("POST", `/api/admin/prompts/${p.dialect}/${p.key}`, form);
        $("prompt-status").textContent = `${p.dialect}/${p.key}: 已安装 installed (${r.changes.join(", ") || "as is"})`; await loadPrompts();
      } catch (e) {
        $("prompt-status").textContent = ""; $("prompt-status").append(el("span", { class: "error" }, `${p.dialect}/${p.key}: 拒绝 rejected — ${e.data && e.data.reasons ? e.data.reasons.join("; ") : e.message}`));
      }
    });
    return el("tr", { "data-prompt": `${p.dialect}/${p.key}` }, el("td", {}, p.dialect), el("td", {}, p.key), el("td", {}, p.state + (p.note ? ` (${p.note})` : "")),
      el("td", {}, el("audio", { controls: true, preload: "none", src: `/api/admin/prompts/${p.dialect}/${p.key}.wav` })),
      el("td", {}, file),
      el("td", {}, p.state === "recorded" ? el("button", { type: "button", class: "secondary", onclick: async () => {
        await Console.api("POST", `/api/admin/prompts/${p.dialect}/${p.key}/synthesise`); await loadPrompts();
      } }, "改用合成") : ""));
  }));
}
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
(async () => { const user = await Console.whoami(); $("who").textContent = user.name; await loadPlans(); })();
