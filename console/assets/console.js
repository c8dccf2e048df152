// kdfed console: live updates without reloading. Elements with data-poll are refreshed
// from their JSON endpoint every few seconds; the pages work without this script.
"use strict";
(function () {
  const PERIOD_MS = 5000;
  function setText(root, field, value) {
    const cell = root.querySelector('[data-field="' + field + '"]');
    if (cell && value !== undefined && value !== null && cell.textContent !== String(value)) {
      cell.textContent = String(value);
    }
  }
  function updateRow(root, row) {
    ["member", "state", "ready", "summary"].forEach(function (f) { setText(root, f, row[f]); });
  }
  function refreshList(table, rows) {
    rows.forEach(function (row) {
      const tr = table.querySelector('tr[data-key="' + row.namespace + "/" + row.name + '"]');
      if (tr) { updateRow(tr, row); }
    });
  }
  function refreshCluster(section, data) {
    updateRow(section, data.row);
    setText(section, "last_seen", data.row.last_seen || "member reachable");
    (data.members || []).forEach(function (m) {
      const span = document.querySelector('[data-pod="' + m.pod + '"]');
      if (span && span.textContent !== m.state) { span.textContent = m.state; }
    });
  }
  function poll(el) {
    fetch(el.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        if (Array.isArray(data)) { refreshList(el, data); } else { refreshCluster(el, data); }
      })
      .catch(function () { /* the next poll tries again */ })
      .finally(function () { setTimeout(function () { poll(el); }, PERIOD_MS); });
  }
  // The launch form: how many member clusters match the placement labels, and how many of
  // those have room for the cluster as the form describes it, as the fields change.
  function placementCount(out) {
    const form = out.closest("form");
    function update() {
      const query = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrf" && name !== "name") { query.append(name, value); }
      });
      query.append("app", out.dataset.app);
      fetch(out.dataset.placement + "?" + query.toString(), { credentials: "same-origin" })
        .then(function (r) { return r.status === 200 || r.status === 422 ? r.json() : null; })
        .then(function (data) { if (data && data.text !== undefined) { out.textContent = data.text; } })
        .catch(function () { /* keep the last count */ });
    }
    form.addEventListener("change", function (e) {
      const name = e.target.name || "";
      if (name === "label" || name === "labels" || /^(members|cpu|memory)\./.test(name)) { update(); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    const out = document.getElementById("matching");
    if (out && out.dataset.placement) { placementCount(out); }
    document.querySelectorAll("[data-poll]").forEach(function (el) {
      setTimeout(function () { poll(el); }, PERIOD_MS);
    });
  });
})();
