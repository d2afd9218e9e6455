// The spike alerts (未诉先办预警) as a banner on the admin, supervisor and situation
// pages: GET /api/situation/spikes, again on every ticket or spike event (from any
// node) and every 60 s. Each alert says district x category, the count in the
// window and its baseline's mean; a fresh one has a 确认 button (with an optional
// note: POST /api/situation/episodes/{id}/acknowledge), an acknowledged one says
// who acknowledged it and is no longer shown as an alarm.
"use strict";
(() => {
  const el = (...args) => Console.el(...args);
  const header = document.querySelector("header");
  const banner = el("section", { id: "spike-alert", class: "spikes hidden", role: "alert" });
  header.after(banner);
  let pending = null;

  async function acknowledge(id, note, button) {
    button.disabled = true;
    try {
      await Console.api("POST", `/api/situation/episodes/${id}/acknowledge`, { note });
    } catch (e) {
      button.disabled = false;
      button.after(el("span", { class: "error ack-error" }, "确认失败：" + e.message));
    }
    await refresh();
    document.dispatchEvent(new CustomEvent("spike-acknowledged", { detail: id }));
  }

  function item(s, hours) {
    const e = s.episode, state = !e ? "pending" : e.acknowledged_at ? "acknowledged" : "fresh";
    const said = `${s.district} · ${s.category}：最近 ${hours} 小时 ${s.count} 件，前 ${s.baseline.length} 天同时段平均 ${s.mean} 件`;
    const li = el("li", { "data-district": s.district, "data-category": s.category, "data-state": state, class: state }, said);
    if (state === "fresh") {
      const note = el("input", { class: "ack-note", type: "text", maxlength: "500", placeholder: "备注（可选）", "aria-label": `${s.district} ${s.category} 确认备注` });
      const button = el("button", { type: "button", class: "ack" }, "确认");
      button.addEventListener("click", () => acknowledge(e.id, note.value, button));
      li.append(" ", note, " ", button);
    } else if (state === "acknowledged") {
      li.append(el("span", { class: "acknowledged-by" },
        ` — 已由 ${e.acknowledged_by} 于 ${Console.when(e.acknowledged_at)} 确认` + (e.note ? `：${e.note}` : "")));
    }
    return li;
  }

  async function refresh() {
    let data;
    try { data = await Console.api("GET", "/api/situation/spikes"); } catch (e) { return; }
    const spikes = data.spikes, hours = data.rule.window_hours;
    const fresh = spikes.filter(s => !(s.episode && s.episode.acknowledged_at)).length;
    banner.classList.toggle("hidden", spikes.length === 0);
    banner.classList.toggle("acknowledged", spikes.length > 0 && fresh === 0);
    banner.setAttribute("role", fresh ? "alert" : "status");
    banner.dataset.fresh = String(fresh);
    const link = location.pathname === "/situation" ? [] : [el("a", { href: "/situation" }, "查看态势地图")];
    const title = fresh
      ? `未诉先办预警：${spikes.length} 个区县·分类的工单激增` + (fresh < spikes.length ? `（${spikes.length - fresh} 个已确认）` : "") + " "
      : `未诉先办：${spikes.length} 个区县·分类的工单激增，均已确认 `;
    banner.replaceChildren(el("strong", {}, title), ...link, el("ul", {}, ...spikes.map(s => item(s, hours))));
  }
  Console.whoami().then((user) => {
    if (user.role !== "admin" && user.role !== "supervisor") return;
    refresh();
    const events = new EventSource("/api/events");
    for (const kind of ["created", "prefilled", "edited", "spike"]) events.addEventListener(kind, () => { clearTimeout(pending); pending = setTimeout(refresh, 1000); });
    setInterval(refresh, 60000);
  }).catch(() => {});
})();
