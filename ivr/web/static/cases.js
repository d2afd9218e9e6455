// The operator's case box (案件): the ticket on screen merged into a case with
// other reports of the same matter, a split button for each report, and the
// closing of the whole case (every report closed, every caller followed up).
"use strict";
(() => {
  const box = document.getElementById("case-box");
  const said = document.getElementById("case-said");
  const list = document.getElementById("case-reports");
  const status = document.getElementById("case-status");
  const close = document.getElementById("case-close");
  const ticketId = document.getElementById("ticket-id");
  const saved = document.getElementById("saved");
  if (!box || !ticketId) return;
  let shown = null; // the ticket id the box is for
  let caseId = null;
  const NAMES = { open: "待处理", in_progress: "处理中", closed: "已办结", duplicate: "重复" };

  async function load() {
    const id = (ticketId.textContent || "").trim().replace(/^#/, "");  // shown as "#12"
    if (!/^[0-9]+$/.test(id)) { box.classList.add("hidden"); shown = null; return; }
    shown = id;
    let data;
    try { data = await Console.api("GET", `/api/tickets/${id}/case`); }
    catch (e) { box.classList.add("hidden"); return; }
    if (shown !== id) return; // another ticket came meanwhile
    if (!data.case) { box.classList.add("hidden"); caseId = null; return; }
    caseId = data.case.id;
    const n = data.reports.length;
    said.textContent = n > 1 ? `已并入案件 ${caseId}（共 ${n} 件反映）` : `案件 ${caseId}（仅此一件）`;
    list.replaceChildren(...data.reports.map(r => Console.el("li", { "data-ticket": r.id },
      Console.el("span", {}, `工单 ${r.id} · ${Console.named(NAMES, r.status)} · ${r.summary}`), " ",
      n > 1 ? Console.el("button", { type: "button", class: "secondary small split", onclick: () => split(r.id) }, "拆分") : null)));
    close.disabled = data.case.status !== "open";
    box.classList.remove("hidden");
  }

  async function split(id) {
    status.textContent = "";
    try {
      const data = await Console.api("POST", `/api/tickets/${id}/split`, {});
      status.textContent = `工单 ${id} 已拆分为案件 ${data.case.id}`;
    } catch (e) { status.textContent = `拆分失败：${e.message}`; }
    await load();
  }

  close.addEventListener("click", async () => {
    if (caseId === null) return;
    status.textContent = "";
    try {
      const data = await Console.api("POST", `/api/cases/${caseId}/close`, {});
      status.textContent = `案件 ${caseId} 已办结，${data.reports.length} 位来电人将回访`;
    } catch (e) { status.textContent = `办结失败：${e.message}`; }
    await load();
  });

  // the ticket on screen changes, or is saved (the save files it into a case)
  const watch = new MutationObserver(() => { load(); });
  watch.observe(ticketId, { childList: true, characterData: true, subtree: true });
  if (saved) watch.observe(saved, { childList: true, characterData: true, subtree: true });
  load();
})();
