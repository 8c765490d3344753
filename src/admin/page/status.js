// The status page's refresh: every 2 s it reads GET /overview (the same JSON API as the
// server-rendered first paint) and redraws the tables. With an admin token (kept in this
// tab's sessionStorage only), each backend gets drain/enable buttons: plain POSTs to the API.
"use strict";
(function () {
  const PERIOD_MS = 2000;
  const $ = (sel) => document.querySelector(sel);
  let last = null; // previous counters, for rates: { at, byKey: {key: [requests, failures]} }

  const text = (tag, value, cls) => {
    const el = document.createElement(tag);
    el.textContent = value == null ? "—" : String(value);
    if (cls) el.className = cls;
    return el;
  };
  const num = (v, digits) => (v == null ? "—" : Number(v).toFixed(digits));
  const token = () => sessionStorage.getItem("portcullis-admin-token") || "";

  function backendState(b) {
    if (!b.enabled) return "draining";
    if (b.ramp != null && b.ramp < 1) return "ramping";
    return b.in_rotation ? "in rotation" : "out";
  }

  function rates(up, b, now) {
    const key = up.name + "|" + b.address;
    const prev = last && last.byKey[key];
    const secs = last ? (now - last.at) / 1000 : 0;
    if (!prev || secs <= 0) return ["—", "—"];
    const req = Math.max(0, b.requests - prev[0]) / secs;
    const err = Math.max(0, b.failures - prev[1]) / secs;
    return [req.toFixed(1), req > 0 ? ((100 * err) / req).toFixed(1) + "%" : "0%"];
  }

  async function post(path) {
    const r = await fetch(path, { method: "POST", headers: { authorization: "Bearer " + token() } });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      alert(path + ": " + r.status + " " + (body.error || ""));
    }
    refresh();
  }

  function actions(up, b) {
    const td = document.createElement("td");
    if (!token()) return td;
    const action = b.enabled ? "drain" : "enable";
    const button = text("button", action);
    const addr = encodeURIComponent(b.address);
    button.addEventListener("click", () =>
      post("/upstreams/" + encodeURIComponent(up.name) + "/backends/" + addr + "/" + action));
    td.appendChild(button);
    return td;
  }

  function backendRow(up, b, now) {
    const tr = document.createElement("tr");
    const health = b.healthy ? "up" : "down";
    const circuit = (b.filters && b.filters.circuit) || "closed";
    tr.dataset.backend = b.address;
    tr.dataset.health = health;
    tr.dataset.circuit = circuit;
    const [rps, errs] = rates(up, b, now);
    const q = b.latency_ms || {};
    const state = backendState(b);
    const cells = [
      text("td", b.address + (b.backup ? " (backup)" : "")),
      text("td", health, health),
      text("td", circuit, circuit),
      text("td", state, state.replace(" ", "_")),
      text("td", b.inflight, "n"),
      text("td", rps, "n"),
      text("td", errs, "n"),
      text("td", num(b.latency_ewma_ms, 2), "n"),
      text("td", num(q.p50, 2), "n"),
      text("td", num(q.p95, 2), "n"),
      text("td", num(q.p99, 2), "n"),
      text("td", b.ramp == null ? "—" : Math.round(b.ramp * 100) + "%", "n"),
      actions(up, b),
    ];
    cells.forEach((c) => tr.appendChild(c));
    return tr;
  }

  function drawUpstreams(ups, now) {
    ups.forEach((up) => {
      const table = document.querySelector('table[data-upstream="' + CSS.escape(up.name) + '"]');
      if (!table) return location.reload(); // a reload added an upstream: draw the page again
      const body = document.createElement("tbody");
      up.backends.forEach((b) => body.appendChild(backendRow(up, b, now)));
      table.replaceChild(body, table.tBodies[0]);
      const panic = table.parentElement.querySelector(".panic");
      if (panic) panic.classList.toggle("hidden", !up.panic);
    });
    const byKey = {};
    ups.forEach((up) => up.backends.forEach((b) => (byKey[up.name + "|" + b.address] = [b.requests, b.failures])));
    last = { at: now, byKey };
  }

  function drawReload(status) {
    const r = status.last_reload;
    $("#generation").textContent = status.config_generation;
    $("#uptime").textContent = status.uptime_seconds + " s";
    const box = $("#reload");
    box.replaceChildren();
    if (!r) return box.appendChild(text("span", "no reload since start", "muted"));
    box.appendChild(text("span", new Date(r.at_unix * 1000).toISOString() + " · " + r.trigger + " · "));
    box.appendChild(text("span", r.result, r.result));
    const ul = document.createElement("ul");
    ul.className = "msgs";
    r.messages.forEach((m) => ul.appendChild(text("li", m)));
    box.appendChild(ul);
  }

  function drawEvents(events) {
    const body = document.createElement("tbody");
    events.forEach((e) => {
      const tr = document.createElement("tr");
      [new Date(e.at_unix_ms).toISOString(), e.kind, e.scope, e.backend, e.from, e.to, e.why].forEach((v, i) =>
        tr.appendChild(text("td", v, i === 5 ? e.to.replace(" ", "_") : "")));
      body.appendChild(tr);
    });
    const table = $("#events");
    table.replaceChild(body, table.tBodies[0]);
  }

  async function refresh() {
    try {
      const r = await fetch("/overview", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const o = await r.json();
      const now = Date.now();
      drawUpstreams(o.upstreams, now);
      drawReload(o.status);
      drawEvents(o.events);
      $("#refreshed").textContent = "refreshed " + new Date(now).toLocaleTimeString();
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    } catch (e) {
      $("#refreshed").textContent = "refresh failed: " + e.message;
    }
  }

  function setupAuth() {
    const form = $("#auth");
    form.classList.remove("hidden");
    const input = form.querySelector("input");
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) {
      sessionStorage.setItem("portcullis-admin-token", fromHash);
      history.replaceState(null, "", location.pathname); // keep the token out of the address bar
    }
    input.placeholder = token() ? "token set (empty to forget)" : "admin token for drain/enable";
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (input.value) sessionStorage.setItem("portcullis-admin-token", input.value);
      else sessionStorage.removeItem("portcullis-admin-token");
      input.value = "";
      input.placeholder = token() ? "token set (empty to forget)" : "admin token for drain/enable";
      refresh();
    });
  }

  setupAuth();
  refresh();
  setInterval(refresh, PERIOD_MS);
})();
