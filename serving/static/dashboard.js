// The dashboard's pages: ask for a key once per tab, fetch the model's monitoring data, draw it with Plotly.
"use strict";
const $ = (id) => document.getElementById(id);
const KEY = "featureplat.apiKey";
// the path prefix the API is served under (an ingress's /ai), from the page the API wrote
const ROOT = document.querySelector('meta[name="root-path"]').content;
const parts = location.pathname.slice(ROOT.length).replace(/\/+$/, "").split("/");
const model = parts.length > 2 ? (() => { try { return decodeURIComponent(parts[2]); } catch { return parts[2]; } })() : null;
const layout = (title, extra = {}) => ({
  title: { text: title, font: { size: 14 } }, margin: { t: 40, r: 50, b: 40, l: 55 },
  legend: { orientation: "h", y: -0.2 }, ...extra,
});
const config = { displaylogo: false, responsive: true };

function showError(text) { const e = $("error"); e.textContent = text; e.hidden = !text; }

function note(id, text) {
  const el = $(id);
  Plotly.purge(el);  // a chart drawn here before (another number of days) goes
  el.classList.remove("chart");
  el.innerHTML = "";
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = text;
  el.appendChild(p);
}

function plot(id, data, lay, conf) {  // a chart where a note may have been: the note goes
  const el = $(id);
  el.querySelectorAll("p.note").forEach((p) => p.remove());
  el.classList.add("chart");
  return Plotly.react(el, data, lay, conf);
}

async function api(path) {
  const r = await fetch(ROOT + path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) } });
  if (r.status === 401 || r.status === 403) {
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) sessionStorage.removeItem(KEY);
    throw Object.assign(new Error(body.detail || r.statusText), { auth: true });
  }
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).detail || r.statusText);
  return r.json();
}

function askForKey(message) {
  $("login").hidden = false; $("index").hidden = true; $("model").hidden = true;
  showError(message || "");
}

async function showIndex() {
  const models = await api("/v1/models");
  const ul = $("models");
  ul.innerHTML = "";
  for (const m of models) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = ROOT + "/dashboard/" + encodeURIComponent(m.name);
    a.textContent = m.name;
    li.appendChild(a);
    li.append(" · " + m.version + (m.description ? " · " + m.description : ""));
    ul.appendChild(li);
  }
  $("index").hidden = false;
}

function drawTraffic(t) {
  if (t.note) { note("traffic", t.note); note("predictions", t.note); return; }
  plot("traffic", [
    { x: t.t, y: t.requests, type: "bar", name: "requests per " + t.bucket, marker: { color: "#9ecae1" } },
    { x: t.t, y: t.latency_p50_ms, name: "latency p50 (ms)", yaxis: "y2", mode: "lines+markers" },
    { x: t.t, y: t.latency_p99_ms, name: "latency p99 (ms)", yaxis: "y2", mode: "lines+markers" },
  ], layout("requests and latency per " + t.bucket, {
    yaxis: { title: "requests" }, yaxis2: { title: "ms", overlaying: "y", side: "right", rangemode: "tozero" },
  }), config);
  plot("predictions", [
    { x: t.t, y: t.prediction_p90, name: "p90", mode: "lines", line: { dash: "dot" } },
    { x: t.t, y: t.prediction_p50, name: "median", mode: "lines+markers" },
    { x: t.t, y: t.prediction_p10, name: "p10", mode: "lines", line: { dash: "dot" } },
  ], layout("predicted values per " + t.bucket + " (" + t.rows.reduce((a, b) => a + b, 0) + " scored)"), config);
}

function drawDrift(d) {
  if (d.note) { note("drift-history", d.note); note("drift-features", d.note); return; }
  const h = d.history;
  plot("drift-history", [
    { x: h.map((r) => r.time), y: h.map((r) => r.drift_share), name: "share of features drifted", mode: "lines+markers" },
    { x: h.filter((r) => r.retrain).map((r) => r.time), y: h.filter((r) => r.retrain).map((r) => r.drift_share ?? 0),
      name: "retrain asked", mode: "markers", marker: { symbol: "x", size: 12, color: "#d62728" } },
  ], layout("monitor runs", { yaxis: { title: "drift share", rangemode: "tozero" } }), config);
  const latest = d.latest;
  $("drift-reasons").textContent = latest.reasons && latest.reasons.length
    ? "Latest run (" + latest.time + "): " + latest.reasons.join("; ")
    : "Latest run (" + latest.time + "): no threshold crossed.";
  const tests = Object.entries(latest.feature_drift || {});
  if (!tests.length) { note("drift-features", "the latest monitor run has no per-feature tests"); return; }
  tests.sort((a, b) => (b[1].value / b[1].threshold) - (a[1].value / a[1].threshold));
  plot("drift-features", [{
    type: "bar", orientation: "h", y: tests.map((t) => t[0]), x: tests.map((t) => t[1].value),
    text: tests.map((t) => t[1].method), marker: { color: tests.map((t) => (t[1].drifted ? "#d62728" : "#2ca02c")) },
    name: "test value (red: drifted)",
  }], layout("per-feature drift tests, latest run (red: drifted)", {
    margin: { t: 40, r: 20, b: 40, l: 190 }, height: Math.max(320, 22 * tests.length + 80), yaxis: { autorange: "reversed" },
  }), config);
}

function drawBacktest(b, latest) {
  $("backtest-note").textContent = b.note || (b.rows + " hold-out rows with known outcomes (" + b.file + ")"
    + (b.threshold != null ? "; operating threshold " + b.threshold.toFixed(4) : ""));
  if (!b.weeks) {
    for (const id of ["backtest-weekly", "calibration", "backtest-quality"]) note(id, b.note || "no backtest");
  } else {
    plot("backtest-weekly", [
      { x: b.weeks, y: b.predicted_mean, name: "predicted (mean)", mode: "lines+markers" },
      { x: b.weeks, y: b.actual_mean, name: "actual (mean)", mode: "lines+markers" },
    ], layout("predicted vs actual by week"), config);
    const c = b.calibration;
    const top = Math.max(...c.predicted, ...c.observed);
    plot("calibration", [
      { x: [0, top], y: [0, top], mode: "lines", name: "perfect", line: { dash: "dash", color: "#999" } },
      { x: c.predicted, y: c.observed, mode: "lines+markers", name: "model", text: c.n.map((n) => n + " rows") },
    ], layout("calibration (by " + b.calibration_by + ")", { xaxis: { title: "predicted" }, yaxis: { title: "observed" } }), config);
    if (b.precision) {
      plot("backtest-quality", [
        { x: b.weeks, y: b.false_positives, type: "bar", name: "false positives", marker: { color: "#fdae6b" } },
        { x: b.weeks, y: b.precision, name: "precision", yaxis: "y2", mode: "lines+markers" },
        { x: b.weeks, y: b.recall, name: "recall", yaxis: "y2", mode: "lines+markers" },
      ], layout("at the operating threshold, by week", {
        yaxis: { title: "false positives" }, yaxis2: { title: "precision / recall", overlaying: "y", side: "right", range: [0, 1] },
      }), config);
    } else note("backtest-quality", "not a binary model: no precision or recall");
  }
  // the monitor's backtest (labels that arrived after training, by week of prediction time); else its live
  // quality (logged predictions joined to their labels, by week of logging)
  const backtest = ((latest && latest.backtest) || []).filter((r) => r.roc_auc != null);
  const live = backtest.length ? backtest : ((latest && latest.weekly_quality) || []).filter((r) => r.roc_auc != null);
  if (!live.length) { note("live-quality", "no live quality yet: the monitor needs labelled outcomes for logged predictions"); return; }
  live.sort((a, b) => (a.week < b.week ? -1 : 1));
  plot("live-quality", ["precision", "recall", "roc_auc"].map((k) => (
    { x: live.map((r) => r.week), y: live.map((r) => r[k]), name: k, mode: "lines+markers" }
  )), layout(backtest.length ? "the monitor's backtest: the champion on labels that arrived, by week"
    : "the monitor's live quality: logged predictions on their labels, by week", { yaxis: { range: [0, 1] } }), config);
}

function drawKpis(kpis) {
  const box = $("kpis");
  box.innerHTML = "";
  $("kpi-section").hidden = !kpis.length;
  if (!kpis.length) return;
  const divs = kpis.map((k, i) => {  // all in the row first, so each chart is drawn at its final width
    const div = document.createElement("div");
    div.className = "chart"; div.id = "kpi-" + i;
    box.appendChild(div);
    return div;
  });
  kpis.forEach((k, i) => {
    const share = k.unit === "share";
    plot(divs[i].id, [{ x: k.weeks, y: k.values, type: share ? "scatter" : "bar", mode: "lines+markers", name: k.name }],
      layout(k.name + " per week", share ? { yaxis: { tickformat: ".0%", rangemode: "tozero" } } : {}), config);
  });
}

async function showModel() {
  const d = await api("/v1/models/" + encodeURIComponent(model) + "/monitoring?days=" + $("days").value);
  $("title").textContent = "· " + d.model;
  $("meta").textContent = "version " + d.version + (d.registry_version ? " (registry v" + d.registry_version + ")" : "")
    + " · " + (d.task || "") + " · as of " + d.generated_at.slice(0, 19).replace("T", " ") + " UTC";
  $("model").hidden = false;
  drawTraffic(d.traffic);
  drawDrift(d.drift);
  drawBacktest(d.backtest, d.drift.latest);
  drawKpis(d.kpis);
  document.body.dataset.loaded = "true";
}

async function show() {
  if (!sessionStorage.getItem(KEY)) { askForKey(); return; }
  $("login").hidden = true;
  showError("");
  try {
    if (model) await showModel(); else { await showIndex(); document.body.dataset.loaded = "true"; }
  } catch (e) {
    if (e.auth) askForKey(e.message); else showError(e.message);  // only a refused key asks for another
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  $("key").value = "";
  show();
});
$("days").addEventListener("change", show);
$("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); askForKey(); });
show();
