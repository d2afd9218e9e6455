// Quality inspection (双重质检): the reviewers' page (/quality) and the admins'
// results per operator (/admin/quality). Reviewers see samples by number and a
// seat code of the day only: no call id, caller's number or operator's name.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = Console.el.bind(Console);
  const CHECK_NAMES = {
    greeting: "开头问候语", closing: "结束语", phone_confirmed: "核对电话号码",
    long_silence: "长时间静默", talk_over: "抢话", end_sentiment: "结束时来电人情绪",
  };
  const STATES = { passed: "通过", failed: "未通过", not_run: "未运行" };
  const page = document.body.dataset.page;
  let items = [], itemMax = 25, chosen = null;

  function failedCount(s) {
    if (s.check_state === "pending") return "检查中";
    if (s.check_state === "error") return "无法检查";
    const ran = Object.entries(s.checks).filter(([k, c]) => CHECK_NAMES[k] && c.state !== "not_run");
    const failed = ran.filter(([, c]) => c.state === "failed").length;
    return failed ? `${failed} 项未通过` : `${ran.length} 项通过`;
  }

  async function loadSamples() {
    const data = await Console.api("GET", "/api/quality/samples");
    items = data.items; itemMax = data.item_max;
    const rows = $("samples"); rows.replaceChildren();
    $("none").classList.toggle("hidden", data.samples.length > 0);
    for (const s of data.samples) {
      rows.append(el("tr", { class: "sample" + (chosen === s.id ? " chosen" : ""), "data-sample": s.id, onclick: () => show(s.id) },
        el("td", {}, `#${s.id}`), el("td", {}, s.day), el("td", {}, s.seat),
        el("td", {}, s.seconds ? Console.seconds(s.seconds) : "—"), el("td", {}, failedCount(s)),
        el("td", {}, s.my_review ? `${s.my_review.score} 分` : (s.reviews ? `${s.reviews} 人已评` : "未评"))));
    }
  }

  async function show(id) {
    chosen = id;
    const s = await Console.api("GET", `/api/quality/samples/${id}`);
    $("sample").classList.remove("hidden");
    $("sample-id").textContent = `#${s.id}`; $("sample-seat").textContent = s.seat; $("sample-day").textContent = s.day;
    const player = $("player");
    player.src = s.kept ? `/api/quality/samples/${s.id}/recording.wav` : "";
    const checks = $("checks"); checks.replaceChildren();
    if (s.checks.error) checks.append(el("tr", {}, el("td", {}, "无法检查"), el("td", {}, s.checks.error)));
    for (const [name, label] of Object.entries(CHECK_NAMES)) {
      const c = s.checks[name];
      if (!c) continue;
      checks.append(el("tr", { "data-check": name }, el("td", {}, label),
        el("td", {}, el("span", { class: `state ${c.state}` }, STATES[c.state] || c.state)), el("td", {}, c.reason)));
    }
    const box = $("items"); box.replaceChildren();
    for (const name of items) {
      const value = s.my_review ? s.my_review.items[name] : itemMax;
      box.append(el("label", {}, `${name}（0–${itemMax}）`,
        el("input", { type: "number", min: 0, max: itemMax, step: 1, name, value, oninput: total })));
    }
    $("comment").value = s.my_review ? s.my_review.comment : "";
    $("status").textContent = s.my_review ? `您已评 ${s.my_review.score} 分，可修改` : "";
    total();
    for (const tr of document.querySelectorAll("tr.sample")) tr.classList.toggle("chosen", Number(tr.dataset.sample) === id);
  }

  function total() {
    let sum = 0;
    for (const input of $("items").querySelectorAll("input")) sum += Number(input.value) || 0;
    $("total").textContent = String(sum);
  }

  async function submit(event) {
    event.preventDefault();
    const scores = {};
    for (const input of $("items").querySelectorAll("input")) scores[input.name] = Number(input.value);
    try {
      const saved = await Console.api("POST", `/api/quality/samples/${chosen}/review`, { items: scores, comment: $("comment").value });
      $("status").textContent = `已评分：${saved.score} 分`;
      await loadSamples();
    } catch (e) {
      $("status").textContent = `未保存：${e.message}`;
    }
  }

  function percent(c) {
    if (!c.ran) return "—";
    return `${Math.round(c.failed_share * 100)}%（${c.failed}/${c.ran}）`;
  }

  async function loadResults(event) {
    if (event) event.preventDefault();
    const query = new URLSearchParams();
    if ($("from").value) query.set("from", $("from").value);
    if ($("to").value) query.set("to", $("to").value);
    const data = await Console.api("GET", `/api/admin/quality/results?${query}`);
    $("from").value = data.from; $("to").value = data.to;
    // the export of the same days: per sample and per operator, no caller details
    $("results-csv").href = `/api/admin/quality/results.csv?${new URLSearchParams({ from: data.from, to: data.to })}`;
    $("results-head").replaceChildren(...["坐席", "抽检", "已自动检查", "已评分", "平均分"].map((t) => el("th", {}, t)),
      ...data.checks.map((c) => el("th", {}, `${CHECK_NAMES[c]}未通过`)));
    const rows = $("results"); rows.replaceChildren();
    $("none").classList.toggle("hidden", data.operators.length > 0);
    for (const o of data.operators) {
      rows.append(el("tr", { "data-operator": o.operator },
        el("td", {}, o.name ? `${o.name}（${o.operator}）` : o.operator),
        el("td", { class: "num" }, o.sampled), el("td", { class: "num" }, o.checked), el("td", { class: "num" }, o.reviews),
        el("td", { class: "num" }, o.average_score === null ? "—" : o.average_score),
        ...data.checks.map((c) => el("td", { class: "num" }, percent(o.checks[c])))));
    }
  }

  async function start() {
    $("logout").addEventListener("click", () => Console.logout());
    const me = await Console.whoami();
    $("who").textContent = me.name;
    const allowed = page === "results" ? ["admin"] : ["reviewer", "supervisor", "admin"];
    if (!allowed.includes(me.role)) {
      $("denied-why").textContent = `账号 ${me.name}（${me.role}）不能使用此页面。`;
      $("denied").classList.remove("hidden");
      return;
    }
    document.querySelector("main").classList.remove("hidden");
    if (page === "results") {
      $("range").addEventListener("submit", loadResults);
      await loadResults();
    } else {
      $("review").addEventListener("submit", submit);
      await loadSamples();
    }
  }
  start();
})();
