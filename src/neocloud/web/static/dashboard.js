// The dashboard's charts, drawn from the JSON data blocks the pages carry: the dashboard runs no
// inline script, so its Content-Security-Policy can allow scripts from /ui/static only.
"use strict";

function pageData(id) {
  const element = document.getElementById(id);
  return element ? JSON.parse(element.textContent) : null;
}

function allocatedChart(canvas, s) {
  new Chart(canvas, {
    type: "line",
    data: { labels: s.t.map(t => new Date(t * 1000).toLocaleTimeString()),
            datasets: [{ label: "GPUs allocated", data: s.allocated, borderColor: "#2563eb", backgroundColor: "rgba(37,99,235,.15)", fill: true, pointRadius: 0 },
                       { label: "GPUs in the fleet", data: s.t.map(() => s.total), borderColor: "#94a3b8", borderDash: [4, 4], pointRadius: 0 }] },
    options: { maintainAspectRatio: false, animation: false, scales: { y: { beginAtZero: true } } } });
}

function backlogChart(canvas, b) {
  const total = Number(b.total) || 1;
  const names = b.customers.map(c => c.tenant);
  new Chart(canvas, {
    data: { labels: names, datasets: [
      { type: "bar", label: "share of backlog", data: b.customers.map(c => 100 * Number(c.total) / total), backgroundColor: "#2563eb" },
      { type: "line", label: "concentration limit", data: names.map(() => 100 * b.limit), borderColor: "#b3261e", borderDash: [6, 4], pointRadius: 0 }] },
    options: { maintainAspectRatio: false, animation: false, scales: { y: { beginAtZero: true, title: { display: true, text: "% of backlog" } } } } });
}

function metricChart(canvas, key, points) {
  new Chart(canvas, {
    type: "line",
    data: { labels: points.map(p => p.step),
            datasets: [{ label: key, data: points.map(p => p.value), borderColor: "#2563eb", pointRadius: 0 }] },
    options: { maintainAspectRatio: false, animation: false, scales: { x: { title: { display: true, text: "step" } } } } });
}

addEventListener("DOMContentLoaded", () => {
  const run = pageData("run-metrics");
  if (run) document.querySelectorAll("canvas.run-metric").forEach(c => metricChart(c, c.dataset.key, run[c.dataset.key] || []));
  const series = pageData("series");
  if (series) allocatedChart(document.getElementById("alloc"), series);
  const backlog = pageData("backlog-data");
  if (backlog && backlog.customers) backlogChart(document.getElementById("backlog"), backlog);
  const plan = pageData("plan-data");
  if (plan && plan.weekly) fanChart(document.getElementById("fan"), plan, "mw");
});
