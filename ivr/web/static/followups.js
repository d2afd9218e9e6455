// The admin dashboard's follow-up panel (回访): coverage (closed tickets
// followed up / closed) and satisfaction by category, district and day from
// GET /api/followups/figures; the latest follow-ups with 取消 / 重新回访
// (POST /api/followups/{id}/cancel|rerun).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (...args) => Console.el(...args);
  const STATES = { pending: "待拨打", dialing: "拨打中", connected: "通话中", no_answer: "未接听", busy: "占线", done: "已完成", cancelled: "已取消" };
  const OUTCOMES = { "满意": "满意", "基本满意": "基本满意", "不满意": "不满意", no_answer: "未接通/未作答" };
  const OPEN = new Set(["pending", "dialing", "no_answer", "busy"]);
  const percent = (x) => (x === null || x === undefined ? "-" : `${Math.round(x * 1000) / 10}%`);

  function table(id, groups) {
    const head = el("tr", {}, ["", "办结", "已回访", "覆盖率", "满意", "基本满意", "不满意", "未接通/未作答", "满意率"].map((h) => el("th", {}, h)));
    const rows = Object.entries(groups).map(([name, g]) => el("tr", { "data-name": name },
      el("td", {}, name), el("td", {}, g.closed), el("td", {}, g.followed_up), el("td", { class: "coverage" }, percent(g.coverage)),
      el("td", {}, g.outcomes["满意"]), el("td", {}, g.outcomes["基本满意"]), el("td", {}, g.outcomes["不满意"]),
      el("td", {}, g.outcomes.no_answer), el("td", {}, percent(g.satisfaction))));
    $(id).replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
  }

  async function change(id, what) {
    const body = what === "cancel" ? { reason: prompt("取消回访的原因 Why cancel?") || "" } : undefined;
    if (what === "cancel" && !body.reason) return;
    try {
      await Console.api("POST", `/api/followups/${id}/${what}`, body);
    } catch (err) {
      $("fu-error").textContent = `回访 ${id}: ${err.message}`; $("fu-error").classList.remove("hidden");
    }
    await load();
  }

  async function load() {
    $("fu-error").classList.add("hidden");
    let figures, list;
    try {
      figures = await Console.api("GET", "/api/followups/figures?days=30");
      list = await Console.api("GET", "/api/followups?limit=50");
    } catch (err) {
      $("fu-coverage").textContent = "回访未开启"; $("fu-error").textContent = err.message; $("fu-error").classList.remove("hidden");
      return;
    }
    $("fu-coverage").textContent = `覆盖率 ${percent(figures.coverage)}：已回访 ${figures.followed_up} / 办结 ${figures.closed}`;
    $("fu-satisfaction").textContent = `满意率 ${percent(figures.satisfaction)}`;
    table("fu-category", figures.by_category); table("fu-district", figures.by_district); table("fu-day", figures.by_day);
    $("fu-rows").replaceChildren(...list.followups.map((f) => el("tr", { "data-id": f.id, "data-state": f.state },
      el("td", {}, f.id), el("td", {}, f.ticket_id), el("td", {}, f.number),
      el("td", { class: "state" }, Console.named(STATES, f.state)), el("td", { class: "outcome" }, Console.named(OUTCOMES, f.outcome)),
      el("td", {}, f.attempts), el("td", {}, f.comment || ""),
      el("td", {},
        OPEN.has(f.state) ? el("button", { type: "button", class: "secondary cancel", onclick: () => change(f.id, "cancel") }, "取消") : null,
        f.state !== "dialing" && f.state !== "connected" ? el("button", { type: "button", class: "secondary rerun", onclick: () => change(f.id, "rerun") }, "重新回访") : null))));
  }

  const before = loaders.dashboard;
  loaders.dashboard = async () => { await before(); await load(); };
})();
