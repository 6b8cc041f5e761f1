// rackseed console: live updates over Server-Sent Events (/api/events/stream) and the
// page actions, which call the admin API with the session's CSRF token. No library.
"use strict";
(function () {
  const body = document.body;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (sel) => document.querySelector(sel);

  function fmtTime(ms) {
    const d = new Date(Number(ms));
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function fmtDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  function paintTimes(root) {
    root.querySelectorAll("time[data-at]").forEach((t) => { t.textContent = fmtTime(t.dataset.at); });
  }
  function tick() {
    const now = Date.now();
    document.querySelectorAll("[data-since]").forEach((c) => {
      const since = Number(c.dataset.since);
      if (since > 0) c.textContent = fmtDuration(now - since);
    });
  }
  function flash(text) {
    const f = $("#flash");
    if (!f) return;
    f.textContent = text;
    f.hidden = false;
  }
  function live(state) {
    const l = $("#live");
    if (l) { l.textContent = state; l.dataset.state = state; }
  }

  async function call(method, url, json) {
    const opts = { method: method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (json !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(json);
    }
    const r = await fetch(url, opts);
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { const e = await r.json(); if (e.error) msg = e.error + " (" + e.code + ")"; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    return r;
  }

  function follow(url, onEvent) {
    const es = new EventSource(url);
    es.onopen = () => live("live");
    es.onerror = () => live("reconnecting…");
    es.addEventListener("timeline", (m) => onEvent("timeline", JSON.parse(m.data)));
    es.addEventListener("node", (m) => onEvent("node", JSON.parse(m.data)));
    return es;
  }

  function overview() {
    let pending = null;
    const refresh = () => {
      pending = null;
      fetch("/ui/fragments/nodes" + location.search, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status))))
        .then((html) => { $("#rows").innerHTML = html; tick(); })
        .catch((e) => flash("Could not refresh the node list: " + e.message));
    };
    follow("/api/events/stream?after=" + encodeURIComponent(body.dataset.lastEvent || "0"), () => {
      if (!pending) pending = setTimeout(refresh, 300);
    });
  }

  function nodePage() {
    const id = body.dataset.node;
    const setState = (n) => {
      if (!n || !n.state) return;
      const s = $("#node-state");
      s.textContent = n.state;
      s.className = "state state-" + n.state;
    };
    follow("/api/events/stream?node=" + encodeURIComponent(id) + "&after=" + encodeURIComponent(body.dataset.lastEvent || "0"), (kind, d) => {
      setState(d.node);
      if (kind !== "timeline") return;
      const e = d.event;
      const syslog = e.kind === "syslog";
      const list = syslog ? $("#syslog") : $("#timeline");
      if (list.querySelector('[data-id="' + e.id + '"]')) return;
      const li = document.createElement("li");
      li.dataset.id = e.id;
      if (!syslog) li.className = "ev kind-" + e.kind;
      const t = document.createElement("time");
      t.dataset.at = e.at;
      t.textContent = fmtTime(e.at);
      li.appendChild(t);
      li.appendChild(document.createTextNode(" "));
      if (!syslog) {
        const b = document.createElement("b");
        b.textContent = e.kind;
        li.appendChild(b);
        li.appendChild(document.createTextNode(" "));
      }
      li.appendChild(document.createTextNode(e.message));
      list.appendChild(li);
      if (e.kind === "stalled") {
        let p = $("#stall");
        if (!p) {
          p = document.createElement("p");
          p.id = "stall";
          p.className = "alert-stalled";
          $(".node-head").appendChild(p);
        }
        p.textContent = e.message;
      }
    });
    const assign = $("#assign");
    if (assign) {
      assign.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const f = new FormData(assign);
        call("POST", "/api/nodes", { mac: assign.dataset.mac, hostname: f.get("hostname"), profile: f.get("profile") })
          .then(() => location.reload())
          .catch((e) => flash("Not assigned: " + e.message));
      });
    }
  }

  // Pages without a stream of their own: the group page follows replication reports.
  function groupsPage() {
    let pending = null;
    const refresh = () => {
      pending = null;
      fetch(location.href, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status))))
        .then((html) => {
          const doc = new DOMParser().parseFromString(html, "text/html");
          const fresh = doc.querySelector("main");
          if (fresh) { document.querySelector("main").innerHTML = fresh.innerHTML; paintTimes(document); }
        })
        .catch((e) => flash("Could not refresh the groups: " + e.message));
    };
    follow("/api/events/stream", (kind, d) => {
      if (kind === "timeline" && d.event.kind.startsWith("replication") && !pending) pending = setTimeout(refresh, 300);
    });
  }

  document.querySelectorAll("button.action").forEach((b) => {
    b.addEventListener("click", () => {
      if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
      const body = b.dataset.body ? JSON.parse(b.dataset.body) : undefined;
      call(b.dataset.method, b.dataset.url, body)
        .then(async (r) => {
          if (b.dataset.show !== undefined) {
            const a = await r.json();
            flash(a.message || (a.power && a.power.message) || "done");
          } else if (b.dataset.then) location.href = b.dataset.then;
          else location.reload();
        })
        .catch((e) => flash(b.textContent + " failed: " + e.message));
    });
  });

  paintTimes(document);
  tick();
  setInterval(tick, 1000);
  if (body.dataset.page === "overview") overview();
  if (body.dataset.page === "node") nodePage();
  if (body.dataset.page === "groups") groupsPage();
  if (body.dataset.page === "images") live("");
})();
