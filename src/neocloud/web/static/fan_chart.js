// The buildout fan chart: P10-P90 band and P50 of `key` ("mw" or "gpus") per week; on MW, the
// contracted power and the target too. `plan` holds what web/capacity.py's chart_data gives.
function fanChart(canvas, plan, key) {
  const labels = plan.weekly.map(w => w.date);
  const extra = key !== "mw" ? [] : [
    { label: "contracted", data: plan.contracted_mw, borderColor: "#b3261e", borderDash: [6, 4], pointRadius: 0, fill: false, stepped: true },
    { label: "target", data: labels.map(d => d >= plan.target.by ? plan.target.mw : null), borderColor: "#16a34a", borderDash: [2, 3], pointRadius: 0, fill: false }];
  new Chart(canvas, {
    type: "line",
    data: { labels, datasets: [
      { label: "P90", data: plan.weekly.map(w => w[key].p90), borderColor: "rgba(37,99,235,.35)", backgroundColor: "rgba(37,99,235,.15)", pointRadius: 0, fill: "+2" },
      { label: "P50", data: plan.weekly.map(w => w[key].p50), borderColor: "#2563eb", borderWidth: 2.5, pointRadius: 0, fill: false },
      { label: "P10", data: plan.weekly.map(w => w[key].p10), borderColor: "rgba(37,99,235,.35)", pointRadius: 0, fill: false },
      ...extra ] },
    options: { maintainAspectRatio: false, animation: false, interaction: { mode: "index", intersect: false },
               scales: { y: { title: { display: true, text: key === "mw" ? "MW of IT power" : "GPUs" } } } } });
}
