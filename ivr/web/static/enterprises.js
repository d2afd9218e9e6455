"use strict";
// The enterprise registry page (admins): the registered business numbers, a CSV
// import (a bad line is named file:line and nothing is imported), removal.
const $ = (id) => document.getElementById(id);
const el = (...a) => Console.el(...a);
let all = [];

function draw() {
  const want = $("filter").value.trim();
  const shown = all.filter(e => !want || e.number.includes(want) || e.name.includes(want));
  $("count").textContent = all.length;
  $("none").classList.toggle("hidden", all.length > 0);
  $("rows").replaceChildren(...shown.map(e => el("tr", { "data-number": e.number },
    el("td", {}, e.number), el("td", {}, e.name), el("td", {}, e.credit_code || "—"),
    el("td", {}, Console.when(e.added_at)), el("td", { class: "empty" }, e.source),
    el("td", {}, el("button", { type: "button", class: "small secondary", onclick: () => remove(e) }, "移除 Remove")))));
}

async function load() {
  const data = await Console.api("GET", "/api/admin/enterprises");
  all = data.enterprises;
  draw();
}

async function remove(e) {
  if (!confirm(`从名录中移除 ${e.number}（${e.name}）？`)) return;
  try {
    await Console.api("POST", "/api/admin/enterprises/remove", { number: e.number });
    $("remove-status").textContent = `已移除 ${e.number}（${e.name}）`;
  } catch (err) { $("remove-status").textContent = err.message; }
  await load();
}

async function upload(event) {
  event.preventDefault();
  $("import-problems").replaceChildren();
  $("import-status").textContent = "导入中…";
  try {
    const r = await Console.api("POST", "/api/admin/enterprises/import", new FormData($("import-form")));
    $("import-status").textContent = `已导入 ${r.file}：${r.imported} 个号码，新增 ${r.added}，更新 ${r.updated}，移除 ${r.removed}`;
    $("import-form").reset();
  } catch (err) {
    $("import-status").textContent = `未导入：${err.message}`;
    const problems = (err.data && err.data.problems) || [];
    $("import-problems").replaceChildren(...problems.map(p => el("li", {}, p)));
  }
  await load();
}

(async () => {
  if (!(await Console.adminPage())) return;
  $("import-form").addEventListener("submit", upload);
  $("filter").addEventListener("input", draw);
  await load();
})();
