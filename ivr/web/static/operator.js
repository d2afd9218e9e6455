"use strict";
// The operator's screen: who is calling (the prefilled ticket with the words each
// field came from highlighted), edit and save, the queue, pending callbacks.
const FIELDS = [
  ["name", "姓名"], ["phone", "联系电话"], ["address", "地址"], ["district", "区县"],
  ["category", "分类"], ["urgency", "紧急程度"], ["urgency_reason", "紧急原因"], ["sentiment", "情绪"],
  ["beneficiary_name", "代办对象姓名"], ["beneficiary_phone", "代办对象电话"], ["beneficiary_address", "代办对象地址"],
];
// what the server sends as English words, as the operator reads them
const STATES = { free: "空闲", ringing: "振铃中", talking: "通话中", wrap_up: "话后整理", paused: "暂停" };
const CALLBACK_REASONS = { abandoned: "排队时挂断", dropped: "通话意外中断", operator_failed: "坐席线路故障" };
const CALLBACK_STATES = {
  pending: "待回拨", dialing: "正在拨打", connected: "已接通", no_answer: "无人接听，待重拨",
  busy: "占线，待重拨", failed: "回拨失败", cancelled: "已取消", done: "已完成",
};
const SOURCES = { speech: "语音识别", operator: "坐席填写", profile: "往次来电", dial_plan: "按键选择", default: "默认" };
const EMERGENCIES = { fire: "火警", gas_leak: "燃气泄漏", violence: "暴力", medical: "急救", help: "求救" };
const WHY = { "same address": "地址相同", "same district": "区县相同", "same category": "分类相同" };
const dialect = (d) => Console.named(Console.DIALECTS, d);
function why(reason) {
  const words = /^similar words ([0-9.]+)$/.exec(reason);
  return words ? `文字相似 ${words[1]}` : Console.named(WHY, reason);
}
let me = null, ticket = null, editing = false;

function text(value) { return value === null || value === undefined ? "" : (typeof value === "object" ? JSON.stringify(value) : String(value)); }

function highlighted(transcript, spans) {
  // the transcript with every evidence span marked
  const marks = spans.filter(s => s && s.end > s.start && s.end <= transcript.length).sort((a, b) => a.start - b.start);
  const out = []; let at = 0;
  for (const s of marks) {
    if (s.start < at) continue;
    out.push(transcript.slice(at, s.start));
    out.push(Console.el("mark", { title: s.field }, transcript.slice(s.start, s.end)));
    at = s.end;
  }
  out.push(transcript.slice(at));
  return out;
}

function showTicket(t, call) {
  ticket = t;
  document.getElementById("no-call").classList.toggle("hidden", !!t);
  document.getElementById("ticket-form").classList.toggle("hidden", !t);
  if (!t) return;
  document.getElementById("ticket-id").textContent = "#" + t.id;
  document.getElementById("ticket-caller").textContent = t.caller;
  const flags = document.getElementById("ticket-flags");
  flags.replaceChildren();
  if (call && call.dialect) flags.append(Console.el("span", { class: "badge" }, dialect(call.dialect)), " ");
  if (call && call.elderly) flags.append(Console.el("span", { class: "badge elderly" }, "老年人"), " ");
  if (call && typeof call.enterprise === "string") {
    const business = call.enterprise ? "企业 " + call.enterprise : "企业服务";
    flags.append(Console.el("span", { class: "badge", id: "enterprise" }, business), " ");
  }
  if (t.fields.proxy && t.fields.proxy.value) flags.append(Console.el("span", { class: "badge" }, "亲友代办"), " ");
  if (t.emergency) flags.append(Console.el("span", { class: "badge urgent" }, "紧急 " + Console.named(EMERGENCIES, t.emergency)), " ");
  if (needsCounsellor(t)) flags.append(Console.el("span", { class: "badge urgent" }, "需心理援助"));
  const box = document.getElementById("fields");
  const spans = [];
  if (!editing) {
    box.replaceChildren();
    for (const [name, label] of FIELDS) {
      const entry = t.fields[name];
      if (name.startsWith("beneficiary_") && !(t.fields.proxy && t.fields.proxy.value)) continue;
      box.append(Console.el("label", { for: "f-" + name }, label));
      box.append(Console.el("input", { id: "f-" + name, name, value: text(entry && entry.value), "data-original": text(entry && entry.value) }));
      if (entry && entry.evidence && entry.evidence.length) {
        box.append(Console.el("div", { class: "evidence" }, "听到: " + entry.evidence.map(e => "「" + e.text + "」").join(" ") + (entry.source === "operator" ? " (已修改)" : "")));
      } else if (entry && entry.source && entry.source !== "default") {
        box.append(Console.el("div", { class: "evidence" }, "来源: " + Console.named(SOURCES, entry.source)));
      }
    }
    document.getElementById("status").value = t.status;
  }
  for (const [name] of FIELDS) {
    const entry = t.fields[name];
    if (!name.startsWith("beneficiary_") && entry && entry.source === "speech") for (const e of entry.evidence || []) spans.push({ ...e, field: name });
  }
  document.getElementById("transcript").replaceChildren(...highlighted(t.transcript || "", spans));
  const said = t.fields.beneficiary_said && t.fields.beneficiary_said.value;
  const bsaid = document.getElementById("beneficiary-said");
  bsaid.classList.toggle("hidden", !said);
  if (said) {
    const bspans = [];
    for (const [name] of FIELDS) if (name.startsWith("beneficiary_") && t.fields[name]) for (const e of t.fields[name].evidence || []) bspans.push({ ...e, field: name });
    bsaid.replaceChildren("代办对象: ", ...highlighted(said, bspans));
  }
  showRecordings(t);
}

let shownRecordings = "";
function showRecordings(t) {
  // each answer the caller recorded, with a player; a transcript that is the
  // recogniser's loop is not shown as words: the operator listens instead
  const box = document.getElementById("recordings");
  const list = t.recordings || [];
  const key = JSON.stringify([t.id, list]);
  if (key === shownRecordings) return; // a player kept playing across refreshes
  shownRecordings = key;
  box.classList.toggle("hidden", !list.length);
  box.replaceChildren(Console.el("h2", {}, "录音"), ...list.map((r, i) => Console.el("div",
    { class: "recording" + (r.unreliable ? " unreliable" : ""), "data-recording": r.id },
    Console.el("span", {}, `录音${i + 1} · ${Math.round(r.seconds)}秒 `),
    r.unreliable ? Console.el("span", { class: "badge urgent", title: r.unreliable_reason || "" }, "转写不可靠，请听录音")
      : Console.el("span", { class: "said" }, r.transcript === null ? "转写中…" : (r.transcript ? "「" + r.transcript + "」" : "未听到话语")),
    r.path ? Console.el("audio", { controls: true, preload: "none", src: `/api/tickets/${t.id}/recordings/${r.id}.wav` })
      : Console.el("span", { class: "empty" }, "录音已过保存期"))));
}

function needsCounsellor(t) {
  const v = t && t.fields.needs_counsellor && t.fields.needs_counsellor.value;
  return v === true || (typeof v === "string" && ["true", "1", "yes", "是", "需要"].includes(v.trim().toLowerCase()));
}

function showCounsellor(c, consultation) {
  // 心理援助: why the caller needs a counsellor (the words heard), the button that
  // brings the configured counsellor into the call, and the operator's own flag
  const box = document.getElementById("counsellor");
  box.classList.toggle("needed", !!(c && c.needed));
  document.getElementById("counsellor-why").textContent = c && c.needed ? "需心理援助：" + c.why : "";
  const call = document.getElementById("counsellor-call");
  const inCall = consultation && (consultation.parties.includes(c && c.consult) || consultation.ringing.includes(c && c.consult));
  call.classList.toggle("hidden", !(c && c.consult && consultation));
  call.disabled = !!inCall;
  document.getElementById("counsellor-flag").textContent = c && c.needed ? "取消心理援助标记" : "标记需心理援助";
}

const PARTY_NAMES = { caller: "来电人", operator: "坐席" };
function showConsultation(c) {
  // 多方协同: a button per department / emergency service; who is in the call
  const box = document.getElementById("consult");
  box.classList.toggle("hidden", !c);
  if (!c) return;
  document.getElementById("consult-parties").textContent =
    "通话中: " + c.parties.map((p) => PARTY_NAMES[p] || p).join("、");
  const buttons = document.getElementById("consult-buttons");
  const want = c.directory.map((e) => e.name + (c.parties.includes(e.name) || c.ringing.includes(e.name))).join("|")
    + "/" + c.parties.join("|") + "/" + c.ringing.join("|");
  if (buttons.dataset.shown === want) return;
  buttons.dataset.shown = want;
  buttons.replaceChildren(...c.directory.map((e) => {
    const busy = c.parties.includes(e.name) || c.ringing.includes(e.name);
    const button = Console.el("button", { type: "button", class: e.kind === "emergency" ? "urgent" : "secondary",
      title: `*7${e.number}`, "data-name": e.name }, (e.kind === "emergency" ? "转 " : "邀请 ") + e.name);
    button.disabled = busy;
    button.addEventListener("click", async () => {
      button.disabled = true;
      const said = document.getElementById("consult-said");
      try { await Console.api("POST", "/api/console/consultation", { name: e.name }); }  // the outcome comes as an event
      catch (err) { said.textContent = e.name + ": " + err.message; button.disabled = false; }
    });
    return button;
  }));
  // each one brought in (or being rung) can be dropped; the others go on
  const guests = [...c.parties, ...c.ringing].filter((n) => !(n in PARTY_NAMES));
  document.getElementById("consult-drop").replaceChildren(...guests.map((name) => {
    const button = Console.el("button", { type: "button", class: "secondary", "data-drop": name },
      (c.ringing.includes(name) ? "取消呼叫 " : "移出 ") + name);
    button.addEventListener("click", async () => {
      button.disabled = true;
      const said = document.getElementById("consult-said");
      try { await Console.api("POST", "/api/console/consultation/drop", { name }); }
      catch (err) { said.textContent = name + ": " + err.message; button.disabled = false; }
    });
    return button;
  }));
}

async function refreshMe() {
  const data = await Console.api("GET", "/api/console/me");
  me = data;
  document.getElementById("state").textContent = data.state ? Console.named(STATES, data.state) : "未登记坐席电话";
  const button = document.getElementById("availability");
  button.textContent = data.ready ? "暂停接听" : "开始接听";
  button.disabled = !data.operator;
  const info = document.getElementById("call-info");
  info.textContent = data.call ? (data.state === "ringing" ? "振铃中" : "通话中") : "";
  if (data.ticket && (!ticket || ticket.id !== data.ticket.id)) { editing = false; showTicket(data.ticket, data.call); loadDuplicates(); }
  else if (data.ticket && !editing) showTicket(data.ticket, data.call);
  showConsultation(data.consultation);
  showCounsellor(data.counsellor, data.consultation);
}

async function refreshQueue() {
  const data = await Console.api("GET", "/api/console/queue");
  const rows = [];
  for (const q of data.queues) for (const w of q.waiting) {
    rows.push(Console.el("tr", {},
      Console.el("td", {}, w.position), Console.el("td", {}, w.caller),
      Console.el("td", {}, Console.seconds(w.waited)),
      Console.el("td", {}, w.estimated_wait == null ? "—" : "约" + Math.max(1, Math.ceil(w.estimated_wait / 60)) + "分钟"),
      Console.el("td", {}, dialect(w.dialect)),
      Console.el("td", {}, w.elderly ? Console.el("span", { class: "badge elderly" }, "老年人") : "",
        w.urgency === "紧急" ? Console.el("span", { class: "badge urgent" }, "紧急") : (w.urgency || ""),
        w.counsellor ? Console.el("span", { class: "badge urgent" }, "心理援助") : "")));
  }
  document.getElementById("queue").replaceChildren(...(rows.length ? rows : [Console.el("tr", {}, Console.el("td", { colspan: 6, class: "empty" }, "无人排队"))]));
  const cbs = await Console.api("GET", "/api/console/callbacks");
  const cbRows = cbs.callbacks.map(c => Console.el("tr", {}, Console.el("td", {}, c.id), Console.el("td", {}, c.number),
    Console.el("td", {}, Console.named(CALLBACK_REASONS, c.reason)), Console.el("td", {}, Console.named(CALLBACK_STATES, c.state))));
  document.getElementById("callbacks").replaceChildren(...(cbRows.length ? cbRows : [Console.el("tr", {}, Console.el("td", { colspan: 4, class: "empty" }, "无"))]));
}

async function loadDuplicates() {
  const list = document.getElementById("duplicates");
  if (!ticket) { list.replaceChildren(Console.el("li", { class: "empty" }, "—")); return; }
  const data = await Console.api("GET", `/api/tickets/${ticket.id}/duplicates`);
  if (!data.duplicates.length) { list.replaceChildren(Console.el("li", { class: "empty" }, "无")); return; }
  list.replaceChildren(...data.duplicates.map(d => Console.el("li", {},
    `#${d.id} ${d.summary}（${d.why.map(why).join("，")}） `,
    Console.el("button", { type: "button", class: "secondary", "data-of": d.id, onclick: async () => {
      const updated = await Console.api("POST", `/api/tickets/${ticket.id}/duplicate`, { of: d.id });
      showTicket(updated, me && me.call); document.getElementById("saved").textContent = `已关联到 #${d.id}`;
    } }, "标为重复"))));
}

document.getElementById("ticket-form").addEventListener("input", () => { editing = true; });
document.getElementById("ticket-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!ticket) return;
  const fields = {};
  for (const input of document.querySelectorAll("#fields input")) {
    if (input.value !== input.dataset.original) fields[input.name] = input.value;
  }
  const body = { fields };
  const status = document.getElementById("status").value;
  if (status !== ticket.status) body.status = status;
  const saved = document.getElementById("saved");
  try {
    const updated = await Console.api("POST", `/api/tickets/${ticket.id}`, body);
    editing = false; showTicket(updated, me && me.call);
    saved.textContent = "已保存 " + new Date().toLocaleTimeString("zh-CN", { hour12: false });
  } catch (e) { saved.textContent = ""; saved.append(Console.el("span", { class: "error" }, "保存失败: " + e.message)); }
});
document.getElementById("availability").addEventListener("click", async () => {
  await Console.api("POST", "/api/console/availability", { ready: !me.ready });
  await refreshMe();
});
document.getElementById("counsellor-call").addEventListener("click", async (event) => {
  const button = event.currentTarget, said = document.getElementById("counsellor-said");
  button.disabled = true;
  said.textContent = "正在呼叫心理咨询师";  // the outcome comes as an event (it may beat the answer)
  try { await Console.api("POST", "/api/console/counsellor", {}); }
  catch (err) { said.textContent = ""; said.append(Console.el("span", { class: "error" }, err.message)); button.disabled = false; }
  await refreshMe();
});
document.getElementById("counsellor-flag").addEventListener("click", async () => {
  if (!ticket) return;
  const updated = await Console.api("POST", `/api/tickets/${ticket.id}`, { fields: { needs_counsellor: needsCounsellor(ticket) ? "false" : "true" } });
  if (!editing) showTicket(updated, me && me.call);
  await refreshMe();
});
document.getElementById("logout").addEventListener("click", () => Console.logout());

(async () => {
  const user = await Console.whoami();
  document.getElementById("who").textContent = user.name;
  await refreshMe(); await refreshQueue();
  const events = new EventSource("/api/events");
  for (const kind of ["screen_pop", "prefilled", "edited", "created", "emergency"]) {
    events.addEventListener(kind, (e) => {
      const t = JSON.parse(e.data);
      if (ticket && t.id === ticket.id && !editing) showTicket(t, me && me.call);
      refreshMe();
    });
  }
  events.addEventListener("consultation", (e) => {
    const c = JSON.parse(e.data);
    if (!me || c.operator !== me.sip_uri) return;  // another operator's call
    document.getElementById("consult-said").textContent = c.words;
    if (me.counsellor && c.name === me.counsellor.consult) document.getElementById("counsellor-said").textContent = c.words;
    refreshMe();
  });
  setInterval(refreshMe, 1500);
  setInterval(refreshQueue, 2000);
})();
