"use strict";
// The dispatch pages (ivr/web/dispatch.py): the operators' 派单 (the department the
// duty list proposes), the departments' 待办 (签收, 退回, 申请延期, 答复) and the
// supervisors' 分级督办 (levels, counts per department, extensions to decide).
const $ = (id) => document.getElementById(id);
const el = (...a) => Console.el(...a);
const STATES = { dispatched: "待签收", accepted: "办理中", returned: "已退回", replied: "已答复" };
const LEVELS = { 1: "初级预警", 2: "中级警示", 3: "高级督办" };
const NEEDS = { dispatch: "operator", department: "department", supervisor: "supervisor" };
const RANK = ["department", "operator", "supervisor", "admin"];

function said(t) { const s = t.transcript || ""; return s.length > 60 ? s.slice(0, 60) + "…" : s; }
function level(d) { return d && d.level ? el("span", { class: `level l${d.level}` }, LEVELS[d.level]) : ""; }
function due(d) {
  const left = d.seconds_left;  // the server's clock, not the browser's
  const text = `${Console.when(d.due_at)}（${left >= 0 ? "剩" + hours(left) : "已超" + hours(-left)}）`;
  return el("span", { class: d.overdue ? "overdue" : "" }, text);
}
function hours(s) { return s >= 3600 ? `${(s / 3600).toFixed(1)}小时` : `${Math.round(s / 60)}分钟`; }
function say(text, bad) { $("status").textContent = text; $("status").classList.toggle("error", !!bad); }

async function dispatchPage() {
  const duty = await Console.api("GET", "/api/dispatch/duty-list");
  if (duty.error) { $("duty-error").textContent = `权责清单有误，仍用运行中的版本：${duty.error}`; $("duty-error").classList.remove("hidden"); }
  const departments = duty.duty_list ? duty.duty_list.departments.map(d => d.name) : [];
  $("duty-version").textContent = duty.duty_list ? `版本 ${duty.duty_list.version}` : "未配置";
  const data = await Console.api("GET", "/api/dispatch/tickets");
  $("waiting-none").classList.toggle("hidden", data.tickets.length > 0);
  $("waiting").replaceChildren(...data.tickets.map(t => {
    const f = t.fields;
    const choose = el("select", { "aria-label": "承办部门" },
      el("option", { value: "" }, "（请选择）"),
      ...departments.map(name => el("option", { value: name, selected: name === t.proposal.department }, name)));
    const back = t.dispatch && t.dispatch.state === "returned" ? el("span", { class: "badge urgent" }, `已退回（${t.dispatch.department}）`) : "";
    const together = t.case && t.case.with.length
      ? el("span", { class: "badge case", title: t.case.with.map(id => `#${id}`).join(" ") }, `同案 ${t.case.with.length + 1} 件`) : "";
    return el("tr", { "data-ticket": t.id },
      el("td", {}, `#${t.id} `, back, together), el("td", {}, f.category || ""), el("td", {}, f.district || ""),
      el("td", {}, f.address || ""), el("td", {}, f.urgency || ""), el("td", { class: "said" }, said(t)),
      el("td", {}, choose), el("td", {}, `${t.proposal.hours}小时`),
      el("td", {}, el("button", { type: "button", class: "small", onclick: () => send(t, choose.value) }, "派单")));
  }));
}

async function send(t, department) {
  if (!department) { say("请选择承办部门", true); return; }
  try {
    await Console.api("POST", `/api/dispatch/tickets/${t.id}`, { department });
    say(`工单 #${t.id} 已派至 ${department}`);
    await dispatchPage();
  } catch (e) { say(e.message, true); }
}

async function departmentPage() {
  const data = await Console.api("GET", "/api/department/tickets");
  $("department").textContent = data.department;
  $("mine-none").classList.toggle("hidden", data.tickets.length > 0);
  $("mine").replaceChildren(...data.tickets.map(t => {
    const d = t.dispatch, f = t.fields;
    const note = el("input", { class: "note", placeholder: "退回理由 / 延期理由 / 办理结果", "aria-label": "说明" });
    const more = el("input", { class: "hours", type: "number", min: "1", value: "24", "aria-label": "延期小时" });
    const step = (name, body) => async () => {
      try {
        await Console.api("POST", `/api/department/tickets/${t.id}/${name}`, body());
        say(`工单 #${t.id}：${{ accept: "已签收", return: "已退回", extension: "已申请延期", reply: "已答复" }[name]}`);
        await departmentPage();
      } catch (e) { say(e.message, true); }
    };
    const asked = d.extension_hours ? el("span", { class: "badge" }, `已申请延期${d.extension_hours}小时`) : "";
    return el("tr", { "data-ticket": t.id },
      el("td", {}, `#${t.id}`), el("td", {}, f.category || ""), el("td", {}, `${f.district || ""} ${f.address || ""}`),
      el("td", { class: "said" }, said(t)), el("td", {}, STATES[d.state] || d.state, " ", asked), el("td", {}, due(d)),
      el("td", {}, level(d)), el("td", {}, note), el("td", {}, more),
      el("td", {},
        d.state === "dispatched" ? el("button", { type: "button", class: "small", onclick: step("accept", () => ({})) }, "签收") : "",
        el("button", { type: "button", class: "small secondary", onclick: step("return", () => ({ reason: note.value })) }, "退回"),
        el("button", { type: "button", class: "small secondary", onclick: step("extension", () => ({ hours: Number(more.value), reason: note.value })) }, "申请延期"),
        el("button", { type: "button", class: "small", onclick: step("reply", () => ({ result: note.value })) }, "答复")));
  }));
  $("replied").replaceChildren(...data.replied.map(t => el("tr", {},
    el("td", {}, `#${t.id}`), el("td", {}, t.fields.category || ""), el("td", {}, t.fields.address || ""),
    el("td", {}, Console.when(t.dispatch.replied_at)), el("td", {}, t.dispatch.result || ""))));
}

async function supervisorPage() {
  const data = await Console.api("GET", "/api/supervision");
  $("rounds").textContent = data.rounds_on ? `督办轮询节点 ${data.rounds_on}` : "督办轮询未运行";
  const n = (v, bad) => el("td", { class: `n${bad && v ? " bad" : ""}` }, String(v));
  $("counts").replaceChildren(...data.departments.map(c => el("tr", { "data-department": c.department },
    el("td", {}, c.department), n(c.open), n(c.overdue, true), n(c.replied), n(c.returned, true),
    n(c.level1), n(c.level2, true), n(c.level3, true))));
  for (const lv of ["1", "2", "3"]) {
    const box = $(`level-${lv}`), rows = data.levels[lv];
    box.querySelector(".none").classList.toggle("hidden", rows.length > 0);
    box.querySelector(".rows").replaceChildren(...rows.map(t => el("tr", { "data-ticket": t.id },
      el("td", {}, `#${t.id}`), el("td", {}, t.dispatch.department), el("td", {}, t.fields.category || ""),
      el("td", {}, `${t.fields.district || ""} ${t.fields.address || ""}`), el("td", {}, STATES[t.dispatch.state] || ""),
      el("td", {}, `退回/改派${t.dispatch.passes}次`), el("td", {}, due(t.dispatch)))));
  }
  $("extensions-none").classList.toggle("hidden", data.extensions.length > 0);
  $("extensions").replaceChildren(...data.extensions.map(t => {
    const decide = (grant) => async () => {
      try {
        await Console.api("POST", `/api/dispatch/tickets/${t.id}/extension`, { grant });
        say(`工单 #${t.id}：${grant ? "同意" : "不同意"}延期`);
        await supervisorPage();
      } catch (e) { say(e.message, true); }
    };
    return el("tr", { "data-ticket": t.id },
      el("td", {}, `#${t.id}`), el("td", {}, t.dispatch.department), el("td", {}, `${t.dispatch.extension_hours}小时`),
      el("td", {}, t.dispatch.extension_reason || ""), el("td", {}, due(t.dispatch)),
      el("td", {}, el("button", { type: "button", class: "small", onclick: decide(true) }, "同意"),
        el("button", { type: "button", class: "small secondary", onclick: decide(false) }, "不同意")));
  }));
  $("raises").replaceChildren(...data.raises.map(r => el("tr", {},
    el("td", {}, Console.when(r.at)), el("td", {}, `#${r.ticket_id}`), el("td", {}, level(r)), el("td", {}, r.reason))));
}

(async () => {
  const page = document.body.dataset.page;
  const me = await Console.whoami();
  $("who").textContent = me.name;
  $("logout").addEventListener("click", () => Console.logout());
  const need = NEEDS[page];
  const allowed = page === "department" ? me.role === "department" : RANK.indexOf(me.role) >= RANK.indexOf(need);
  if (!allowed) {
    $("denied-why").textContent = `账号 ${me.name}（${me.role}）不能使用此页面。`;
    $("denied").classList.remove("hidden");
    return;
  }
  document.querySelector("main").classList.remove("hidden");
  const load = { dispatch: dispatchPage, department: departmentPage, supervisor: supervisorPage }[page];
  try { await load(); } catch (e) { say(e.message, true); }
  setInterval(() => load().catch(e => say(e.message, true)), 10000);
})();
