"use strict";
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  try {
    const me = await Console.api("POST", "/api/login", {
      name: document.getElementById("name").value.trim(),
      password: document.getElementById("password").value,
    });
    const pages = { admin: "/admin", supervisor: "/supervisor", department: "/department", reviewer: "/quality" };
    location.href = pages[me.user.role] || "/operator";
  } catch (e) {
    // 423: a locked account or address (the audit's thresholds): the server says why
    error.textContent = e.status === 423 ? e.message : e.status === 429 ? "尝试次数过多，请稍后再试 (too many attempts)" : "用户名或密码错误 (wrong name or password)";
  }
});
