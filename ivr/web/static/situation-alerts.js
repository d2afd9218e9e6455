// The spike alerts (未诉先办预警) as a banner on the admin, supervisor and situation
// pages: GET /api/situation/spikes, again on every ticket event (from any node)
// and every 60 s. Each alert says district x category, the count in the window
// and its baseline's mean.
"use strict";
(() => {
  const el = (...args) => Console.el(...args);
  const header = document.querySelector("header");
  const banner = el("section", { id: "spike-alert", class: "spikes hidden", role: "alert" });
  header.after(banner);
  let pending = null;
  async function refresh() {
    let data;
    try { data = await Console.api("GET", "/api/situation/spikes"); } catch (e) { return; }
    const spikes = data.spikes, hours = data.rule.window_hours;
    banner.classList.toggle("hidden", spikes.length === 0);
    const link = location.pathname === "/situation" ? [] : [el("a", { href: "/situation" }, "查看态势地图")];
    banner.replaceChildren(
      el("strong", {}, `未诉先办预警：${spikes.length} 个区县·分类的工单激增 `), ...link,
      el("ul", {}, ...spikes.map(s => el("li", { "data-district": s.district, "data-category": s.category },
        `${s.district} · ${s.category}：最近 ${hours} 小时 ${s.count} 件，前 ${s.baseline.length} 天同时段平均 ${s.mean} 件`))));
  }
  Console.whoami().then((user) => {
    if (user.role !== "admin" && user.role !== "supervisor") return;
    refresh();
    const events = new EventSource("/api/events");
    for (const kind of ["created", "prefilled", "edited"]) events.addEventListener(kind, () => { clearTimeout(pending); pending = setTimeout(refresh, 1000); });
    setInterval(refresh, 60000);
  }).catch(() => {});
})();
