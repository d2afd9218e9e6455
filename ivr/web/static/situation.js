// The situation map (态势地图): the districts of the gazetteer drawn from
// GET /api/situation/map, coloured by the tickets of the chosen period and
// category (GET /api/situation), districts spiking outlined in red (dashed amber
// once a supervisor acknowledged the spike). Redrawn on every ticket or spike
// event (from any node) and every 30 s; the shapes fetched again when the map
// file was reloaded (another map_version). Below: the latest spike episodes
// (GET /api/situation/episodes).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (...args) => Console.el(...args);
  const SVGNS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  // light to dark blue; 0 tickets a pale grey
  const LOW = [222, 235, 247], HIGH = [8, 81, 156], NONE = "#eef1f4";
  function shade(n, max) {
    if (!n) return NONE;
    const t = 0.15 + 0.85 * (n / Math.max(1, max));
    const c = LOW.map((lo, i) => Math.round(lo + (HIGH[i] - lo) * t));
    return `rgb(${c.join(",")})`;
  }
  let layout = null, loading = false, again = false;

  function query() {
    const q = new URLSearchParams(), period = $("period").value;
    if (period === "dates") { if ($("from").value) q.set("from", $("from").value); if ($("to").value) q.set("to", $("to").value); }
    else q.set("hours", period);
    if ($("category").value) q.set("category", $("category").value);
    return q.toString();
  }

  function draw(data) {
    const counts = data.by_district, max = Math.max(0, ...Object.values(counts));
    const shown = data.spikes.filter(s => !data.category || s.category === data.category);
    const spiking = new Set(shown.map(s => s.district));
    // a district is an alarm while any of its spikes is not acknowledged
    const fresh = new Set(shown.filter(s => !(s.episode && s.episode.acknowledged_at)).map(s => s.district));
    const mark = (name) => !spiking.has(name) ? "" : fresh.has(name) ? "spike" : "spike acknowledged";
    const root = svg("svg", { id: "map-svg", viewBox: `0 0 ${layout.width} ${layout.height}`, role: "img" });
    for (const d of layout.districts) {
      const n = counts[d.name] || 0, fill = shade(n, max);
      const g = svg("g", { "data-district": d.name, "data-count": n });
      const shape = svg("path", { d: d.path, fill, "data-fill": fill, class: mark(d.name) });
      shape.append(svg("title", {}, `${d.name}：${n} 件`));
      const dark = n && n / Math.max(1, max) > 0.5;
      g.append(shape,
        svg("text", { x: d.label[0], y: d.label[1] - 4, fill: dark ? "#fff" : "#1b1f24" }, d.name),
        svg("text", { x: d.label[0], y: d.label[1] + 12, class: "count", fill: dark ? "#fff" : "#1b1f24" }, (fresh.has(d.name) ? "⚠ " : spiking.has(d.name) ? "✓ " : "") + n));
      root.append(g);
    }
    // spiking districts drawn last, so their red outline is not covered by a neighbour
    for (const g of [...root.children]) if (g.querySelector("path.spike")) root.append(g);
    $("map").replaceChildren(root);
    $("legend").replaceChildren(...[0, 0.25, 0.5, 0.75, 1].map(t => el("span", { class: "swatch", "data-shade": t })));
    for (const s of $("legend").children) s.style.background = shade(Number(s.dataset.shade) * Math.max(1, max), Math.max(1, max));
    // the table: every district of the map, then any the map does not draw (未知 included)
    const names = [...layout.districts.map(d => d.name), ...layout.missing];
    for (const name of Object.keys(counts)) if (!names.includes(name)) names.push(name);
    $("rows").replaceChildren(...names.map(name => el("tr", { "data-district": name, class: mark(name) },
      el("td", {}, name + (layout.missing.includes(name) ? "（不在地图上）" : "")), el("td", { class: "n" }, counts[name] || 0))));
    $("missing").classList.toggle("hidden", !layout.missing.length);
    $("missing").textContent = layout.missing.length ? `地图未画出：${layout.missing.join("、")}` : "";
    $("total").textContent = `共 ${data.total} 件`;
    $("what").textContent = `${data.period} · ${data.category || "全部分类"}`;
    $("updated").textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN", { hour12: false });
    const r = data.rule;
    $("rule").textContent = `最近 ${r.window_hours} 小时内某区县某分类工单不少于 ${r.min_count} 件，且超过前 ${r.baseline_days} 天同时段的均值 + ${r.sd_factor} 倍标准差，并不低于均值的 ${r.ratio} 倍时预警。`;
  }

  function categories(data) {
    const select = $("category"), chosen = select.value;
    const names = Object.keys(data.categories);
    if (chosen && !names.includes(chosen)) names.push(chosen);
    select.replaceChildren(el("option", { value: "" }, "全部分类"),
      ...names.map(c => el("option", { value: c }, `${c}（${data.categories[c] || 0}）`)));
    select.value = chosen;
  }

  function history(episodes) {
    const rows = episodes.map(e => el("tr", { "data-episode": e.id, "data-district": e.district, "data-category": e.category },
      el("td", {}, `${e.district} · ${e.category}`),
      el("td", {}, Console.when(e.began_at)),
      el("td", { class: e.ended_at ? "" : "open" }, e.ended_at ? Console.when(e.ended_at) : "进行中"),
      el("td", { class: "n" }, `${e.peak}（起 ${e.began_count}，基线均 ${e.began_mean}）`),
      el("td", { class: "ack" }, e.acknowledged_by ? `${e.acknowledged_by} ${Console.when(e.acknowledged_at)}` + (e.note ? `：${e.note}` : "") : "未确认")));
    $("episodes").replaceChildren(...rows);
    $("no-episodes").classList.toggle("hidden", episodes.length > 0);
  }

  async function refresh() {
    if (loading) { again = true; return; }
    loading = true;
    try {
      const data = await Console.api("GET", "/api/situation?" + query());
      // the map file was reloaded on the server: the new shapes
      if (!layout || layout.version !== data.map_version) layout = await Console.api("GET", "/api/situation/map");
      categories(data); draw(data);
      history((await Console.api("GET", "/api/situation/episodes?limit=20")).episodes);
      document.body.dataset.map = layout.version;
      $("error").classList.add("hidden");
      document.body.dataset.loaded = query();
    } catch (e) {
      $("error").textContent = "无法读取态势：" + e.message; $("error").classList.remove("hidden");
    } finally {
      loading = false;
      if (again) { again = false; refresh(); }
    }
  }

  let pending = null;
  function soon() { clearTimeout(pending); pending = setTimeout(refresh, 500); }

  $("period").addEventListener("change", () => { $("dates").classList.toggle("hidden", $("period").value !== "dates"); refresh(); });
  for (const id of ["from", "to", "category"]) $(id).addEventListener("change", refresh);
  $("logout").addEventListener("click", () => Console.logout());
  (async () => {
    const me = await Console.whoami();
    $("who").textContent = me.name;
    if (me.role !== "admin" && me.role !== "supervisor") {
      $("denied-why").textContent = `账号 ${me.name}（${me.role}）不能使用此页面：态势地图只对督办员和管理员开放。`;
      $("denied").classList.remove("hidden");
      return;
    }
    if (me.role === "supervisor") $("back").href = "/supervisor";
    document.querySelector("main").classList.remove("hidden");
    const today = new Date().toISOString().slice(0, 10);
    $("from").value = today; $("to").value = today;
    await refresh();
    const events = new EventSource("/api/events");
    for (const kind of ["created", "prefilled", "edited", "emergency", "spike"]) events.addEventListener(kind, soon);
    document.addEventListener("spike-acknowledged", soon);
    setInterval(refresh, 30000);
  })();
})();
