"use strict";
// On the admin page: a link to the audit page, and a banner while any account or
// address is locked (kept up to date by the event stream's audit_alert, from any node).
(() => {
  const header = document.querySelector("header");
  // styled by console.css (#audit-alert): the pages' CSP refuses inline style attributes
  const banner = Console.el("section", { id: "audit-alert", class: "hidden", role: "alert" });
  header.after(banner);
  async function refresh() {
    let data;
    try { data = await Console.api("GET", "/api/admin/audit/locks"); } catch (e) { return; }
    const locks = data.locks;
    banner.classList.toggle("hidden", locks.length === 0);
    banner.replaceChildren(
      Console.el("strong", {}, `告警：${locks.length} 个账号或地址已被锁定 `),
      ...locks.map(l => Console.el("span", { class: "badge urgent lock" },
        `${l.kind === "account" ? "账号" : "地址"} ${l.subject}：${l.reason}`)),
      Console.el("a", { href: "/admin/audit" }, "去审计页面解锁"));
  }
  Console.whoami().then((user) => {
    if (user.role !== "admin") return;
    const link = Console.el("a", { id: "to-audit", href: "/admin/audit" },
      Console.el("button", { type: "button", class: "secondary" }, "审计 Audit"));
    header.insertBefore(link, document.getElementById("logout"));
    refresh();
    new EventSource("/api/events").addEventListener("audit_alert", refresh);
  }).catch(() => {});
})();
