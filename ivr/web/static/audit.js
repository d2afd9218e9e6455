"use strict";
// The audit page (admins): alerts as they come (the event stream's audit_alert),
// accounts and addresses locked now (unlock), the audit log searched and paged.
const $ = (id) => document.getElementById(id);
const el = (...a) => Console.el(...a);
const OUTCOMES = { allowed: "允许", refused: "拒绝", failed: "失败" };
const KINDS = { account: "账号", address: "地址" };
const ALERTS = { account_locked: "账号已锁定", address_locked: "地址已锁定登录", account_unlocked: "账号已解锁", address_unlocked: "地址已解锁" };
let nextBefore = null, shownRows = 0;

function alertLine(a) {
  const what = ALERTS[a.kind] || a.kind;
  return el("li", {}, `${Console.when(a.at)} ${what}：${a.subject}${a.reason ? "（" + a.reason + "）" : ""}${a.by ? "，由 " + a.by : ""}`);
}

async function loadLocks() {
  const data = await Console.api("GET", "/api/admin/audit/locks");
  $("locks-none").classList.toggle("hidden", data.locks.length > 0);
  $("locks").replaceChildren(...data.locks.map(l => el("tr", { "data-subject": l.subject },
    el("td", {}, KINDS[l.kind] || l.kind), el("td", {}, l.subject), el("td", {}, Console.when(l.locked_at)),
    el("td", {}, l.reason),
    el("td", {}, el("button", { type: "button", class: "small", onclick: () => unlock(l) }, "解锁 Unlock")))));
}

async function unlock(lock) {
  try {
    await Console.api("POST", "/api/admin/audit/unlock", { kind: lock.kind, subject: lock.subject });
    $("lock-status").textContent = `已解锁 ${KINDS[lock.kind] || lock.kind} ${lock.subject}`;
  } catch (e) { $("lock-status").textContent = e.message; }
  await loadLocks();
  await search(false);
}

function query() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("audit-filter"))) if (v) params.set(k, v);
  return params;
}

async function search(more) {
  const params = query();
  if (more && nextBefore !== null) params.set("before", nextBefore);
  const data = await Console.api("GET", "/api/admin/audit?" + params.toString());
  const rows = data.entries.map(r => el("tr", { "data-id": r.id },
    el("td", {}, r.id), el("td", {}, Console.when(r.at)), el("td", {}, r.node), el("td", {}, r.user || "—"),
    el("td", {}, r.role), el("td", {}, r.action), el("td", {}, [r.object_type, r.object_id].filter(Boolean).join(" ")),
    el("td", {}, r.items || ""), el("td", {}, r.address),
    el("td", { class: r.outcome }, Console.named(OUTCOMES, r.outcome) + (r.status ? ` ${r.status}` : "")),
    el("td", { class: "detail" }, r.detail)));
  if (more) $("audit-rows").append(...rows); else $("audit-rows").replaceChildren(...rows);
  shownRows = (more ? shownRows : 0) + rows.length;
  nextBefore = data.next_before;
  $("audit-more").classList.toggle("hidden", nextBefore === null);
  $("audit-none").classList.toggle("hidden", shownRows > 0);
  $("audit-count").textContent = `${shownRows} 条`;
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("audit_alert", (e) => {
    const a = JSON.parse(e.data);
    $("alerts-box").classList.remove("hidden");
    $("alerts").prepend(alertLine(a));
    loadLocks();
  });
}

(async () => {
  if (!(await Console.adminPage())) return;
  $("audit-filter").addEventListener("submit", (e) => { e.preventDefault(); search(false); });
  $("audit-more").addEventListener("click", () => search(true));
  listen();
  await loadLocks();
  await search(false);
})();
