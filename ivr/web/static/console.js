// Shared by the console pages: the JSON API with the session's CSRF token.
"use strict";
const Console = {
  csrf: null,
  async api(method, path, body, raw) {
    const headers = {};
    if (method !== "GET" && this.csrf) headers["X-CSRF-Token"] = this.csrf;
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    if (response.status === 401 && !path.startsWith("/api/login")) { location.href = "/login"; throw new Error("not logged in"); }
    if (raw) return response;
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) { const err = new Error((data && data.error) || response.statusText); err.status = response.status; err.data = data; throw err; }
    return data;
  },
  async whoami() {
    const me = await this.api("GET", "/api/me");
    this.csrf = me.csrf;
    return me.user;
  },
  // An admins' page: who is logged in, the log-out button, and either the page's
  // <main> shown (the user, returned) or its #denied section (null, for other roles).
  async adminPage() {
    const user = await this.whoami();
    document.getElementById("who").textContent = user.name;
    document.getElementById("logout").addEventListener("click", () => this.logout());
    if (user.role !== "admin") {
      document.getElementById("denied-who").textContent = user.name;
      document.getElementById("denied").classList.remove("hidden");
      return null;
    }
    document.querySelector("main").classList.remove("hidden");
    return user;
  },
  async logout() {
    try { await this.api("POST", "/api/logout", {}); } finally { location.href = "/login"; }
  },
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },
  // dialect groups (ivr/dialects.py) as the console names them
  DIALECTS: { mandarin: "普通话", wu: "吴语", yue: "粤语", min: "闽语", hakka: "客家话", xiang: "湘语", gan: "赣语" },
  // a value the server sends as an English word (a state, a status), in Chinese
  named(names, value) { return value === null || value === undefined ? "" : (names[value] || String(value)); },
  seconds(s) { s = Math.round(s); return s >= 60 ? `${Math.floor(s / 60)}分${s % 60}秒` : `${s}秒`; },
  when(epoch) { return new Date(epoch * 1000).toLocaleString("zh-CN", { hour12: false }); },
};
