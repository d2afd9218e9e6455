"use strict";
// The duty list (权责清单): what this node runs, a file uploaded, checked (mistakes
// at their line) and published to every node through the store, history, rollback.
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (...a) => Console.el(...a);
  let fileName = "duty_list.toml";

  function showProblems(problems) {
    $("duty-problems").replaceChildren(...problems.map(p => el("li", { "data-line": p.line },
      p.line ? `${p.file}:${p.line}: ${p.message}（第 ${p.line} 行）` : p.message)));
  }
  async function load() {
    const data = await Console.api("GET", "/api/admin/duty-list");
    const r = data.running;
    $("running-version").textContent = r.version ? "版本 " + r.version : "无 none";
    $("running-from").textContent = r.from === "store"
      ? `已发布版本 #${r.published.id}（${r.published.author}，${Console.when(r.published.published_at)}），${r.departments} 个部门，${r.duties} 条职责`
      : r.from === "file" ? `本节点文件 ${r.name}（尚未发布：各节点各用自己的文件），${r.departments} 个部门，${r.duties} 条职责`
      : "没有权责清单：派单未开启";
    $("running-error").replaceChildren(...(r.error ? [el("li", {}, r.error)] : []));
    if (!$("duty-source").value && r.text) $("duty-source").value = r.text;
    const current = r.published ? r.published.id : null;
    $("duty-history").replaceChildren(...data.history.map(v => el("tr", { "data-version": v.id },
      el("td", {}, v.id), el("td", {}, v.version), el("td", {}, v.author), el("td", {}, Console.when(v.published_at)), el("td", {}, v.note),
      el("td", {}, v.id === current ? el("span", { class: "badge" }, "运行中") :
        el("button", { type: "button", class: "secondary", onclick: () => rollback(v.id) }, "回滚 Roll back")))));
  }
  async function send(path) {
    $("duty-status").textContent = ""; showProblems([]);
    try {
      return await Console.api("POST", path, { source: $("duty-source").value, name: fileName, note: $("duty-note").value });
    } catch (e) {
      if (e.status === 422) { showProblems(e.data.problems); $("duty-status").textContent = "未发布 Not published"; return null; }
      showProblems([{ message: "失败: " + e.message }]); return null;
    }
  }
  async function rollback(id) {
    try {
      const r = await Console.api("POST", `/api/admin/duty-list/${id}/rollback`);
      await load(); $("duty-status").textContent = `已回滚 Rolled back: #${r.published.id} 版本 ${r.published.version}`;
    } catch (e) {
      showProblems(e.status === 422 ? e.data.problems : [{ message: "回滚失败: " + e.message }]);
    }
  }
  $("duty-file").addEventListener("change", async () => {
    const file = $("duty-file").files[0];
    if (!file) return;
    fileName = file.name; $("duty-source").value = await file.text();
    showProblems([]); $("duty-status").textContent = `已读取 ${file.name}，请校验或发布`;
  });
  $("duty-validate").addEventListener("click", async () => {
    const r = await send("/api/admin/duty-list/validate");
    if (r) $("duty-status").textContent = `校验通过 OK: 版本 ${r.version}，${r.departments} 个部门，${r.duties} 条职责`;
  });
  $("duty-publish").addEventListener("click", async () => {
    const r = await send("/api/admin/duty-list/publish");
    if (r) { await load(); $("duty-status").textContent = `已发布 Published: #${r.published.id} 版本 ${r.published.version}`; }
  });
  (async () => {
    if (!(await Console.adminPage())) return;
    await load();
  })();
})();
