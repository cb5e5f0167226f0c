// Shared by the three pages: API calls with the stored token, formatting, plots.
"use strict";

const GT = (() => {
  const TOKEN_KEY = "gradtrace.token";
  const PALETTE = ["#2f6fde", "#e0592a", "#2a9d5c", "#9b4dca", "#d1a21c", "#17a2b8",
                   "#c8333a", "#6c757d", "#8c564b", "#e377c2", "#7f7f00", "#1f3b73"];

  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

  // The header's token field: shown always, highlighted when the API refused us.
  function initHeader() {
    const box = document.querySelector("header.top .login");
    if (!box) return;
    const input = box.querySelector("input");
    input.value = token();
    box.querySelector("button").addEventListener("click", () => {
      const v = input.value.trim();
      if (v) localStorage.setItem(TOKEN_KEY, v); else localStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") box.querySelector("button").click(); });
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // NaN/Infinity travel as strings in the API's JSON.
  function num(x) {
    if (x === null || x === undefined) return null;
    if (typeof x === "number") return x;
    if (x === "NaN") return NaN;
    if (x === "Infinity") return Infinity;
    if (x === "-Infinity") return -Infinity;
    const v = Number(x);
    return Number.isNaN(v) ? null : v;
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    let resp;
    try {
      resp = await fetch(path, { headers });
    } catch (e) {
      throw new ApiError(0, `cannot reach the server (${e.message})`);
    }
    if (!resp.ok) {
      let msg = `${resp.status} ${resp.statusText}`;
      try {
        const body = await resp.json();
        if (body && body.detail) msg += ": " + (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
      } catch (_) { /* not JSON */ }
      if (resp.status === 401 || resp.status === 403) {
        const box = document.querySelector("header.top .login");
        if (box) box.classList.add("needed");
        msg += " - enter an API token (top right)";
      }
      throw new ApiError(resp.status, msg);
    }
    return resp.json();
  }

  function showError(err) {
    const el = document.getElementById("error");
    if (!el) return;
    el.textContent = err.message || String(err);
    el.classList.remove("hidden");
  }

  function esc(s) {
    return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function fmtNum(x, digits = 4) {
    const v = num(x);
    if (v === null) return "–";
    if (!Number.isFinite(v)) return String(v);
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(digits - 1);
    return Number(v.toPrecision(digits)).toString();
  }

  function fmtTime(s) {
    if (!s) return "–";
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) return String(s);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function fmtDuration(sec) {
    const v = num(sec);
    if (v === null || !Number.isFinite(v)) return "–";
    if (v < 1) return `${Math.round(v * 1000)} ms`;
    if (v < 60) return `${v.toFixed(1)} s`;
    if (v < 3600) return `${Math.floor(v / 60)} min ${Math.round(v % 60)} s`;
    return `${Math.floor(v / 3600)} h ${Math.round((v % 3600) / 60)} min`;
  }

  function color(i) { return PALETTE[i % PALETTE.length]; }

  // Server buckets carry min and max; drawing both at the bucket's two halves
  // keeps spikes visible at any zoom (an envelope) with two points per bucket.
  function envelope(x, width, seriesList) {
    if (!width || width <= 1) return [x, ...seriesList.map((s) => s.min.map(finiteOrNull))];
    const xs = [];
    for (const v of x) { xs.push(v, v + (width - 1) / 2); }
    const ys = seriesList.map((s) => {
      const out = [];
      for (let i = 0; i < x.length; i++) { out.push(finiteOrNull(s.min[i]), finiteOrNull(s.max[i])); }
      return out;
    });
    return [xs, ...ys];
  }

  // Indices of values in runs of at most `most` non-null values between nulls (a bucket's
  // min/max pair is one run of two): a line has nothing to join them to.
  function isolated(ys, most) {
    const out = [];
    let start = -1;
    for (let i = 0; i <= ys.length; i++) {
      const present = i < ys.length && ys[i] !== null;
      if (present && start < 0) start = i;
      if (!present && start >= 0) {
        if (i - start <= most) for (let j = start; j < i; j++) out.push(j);
        start = -1;
      }
    }
    return out.length ? out : null;
  }

  function finiteOrNull(v) {
    const n = num(v);
    return n !== null && Number.isFinite(n) ? n : null;
  }

  function positiveOrNull(v) {
    const n = finiteOrNull(v);
    return n !== null && n > 0 ? n : null;
  }

  // Vertical markers (first divergent step, non-finite steps) drawn over a plot.
  function markerPlugin(markers) {
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          for (const m of markers) {
            const px = u.valToPos(m.x, "x", true);
            if (px < u.bbox.left - 1 || px > u.bbox.left + u.bbox.width + 1) continue;
            ctx.strokeStyle = m.color || "#c8333a";
            ctx.lineWidth = (m.width || 1.5) * devicePixelRatio;
            ctx.setLineDash(m.dash ? m.dash.map((d) => d * devicePixelRatio) : []);
            ctx.beginPath();
            ctx.moveTo(px, u.bbox.top);
            ctx.lineTo(px, u.bbox.top + u.bbox.height);
            ctx.stroke();
            if (m.label) {
              ctx.setLineDash([]);
              const dpr = devicePixelRatio;
              ctx.font = `${11 * dpr}px sans-serif`;
              const w = ctx.measureText(m.label).width;
              ctx.fillStyle = "rgba(255,255,255,.9)";
              ctx.fillRect(px + 3 * dpr, u.bbox.top + 2 * dpr, w + 4 * dpr, 14 * dpr);
              ctx.fillStyle = m.color || "#c8333a";
              ctx.fillText(m.label, px + 5 * dpr, u.bbox.top + 13 * dpr);
            }
          }
          ctx.restore();
        }],
      },
    };
  }

  // One line plot over steps. series: [{label, min, max}], x: bucket start steps.
  // sampled: the series are measured at some steps only (per-variable statistics every N-th
  // step): a line joins the measured values across the steps between, with a dot on each.
  function linePlot(container, { x, width, series, log = false, markers = [], yLabel = "", height = 260, dashed = [], sampled = false }) {
    container.innerHTML = "";
    if (!x || x.length === 0 || series.length === 0) {
      container.append(el("div", { class: "empty", text: "nothing recorded" }));
      return null;
    }
    const data = envelope(x, width, series);
    if (log) for (let i = 1; i < data.length; i++) data[i] = data[i].map(positiveOrNull);
    const lone = data.map((ys, i) => (i === 0 ? null : isolated(ys, width && width > 1 ? 2 : 1)));
    // a sampled series with gaps between its values gets a dot at every value
    const sparse = data.map((ys, i) => i > 0 && sampled && ys.filter((v) => v !== null).length < 0.9 * ys.length);
    const opts = {
      width: Math.max(320, container.clientWidth || 800),
      height,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
      axes: [
        { label: "step", labelSize: 18, size: 36 },
        // a log axis leaves its minor ticks unlabelled (null)
        { label: yLabel, labelSize: 18, size: 64, values: (u, vals) => vals.map((v) => (v === null ? "" : fmtNum(v, 3))) },
      ],
      series: [
        { label: "step", value: (u, v) => (v === null ? "–" : Math.floor(v)) },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.color || color(i),
          width: 1.5,
          dash: dashed.includes(i) ? [6, 4] : undefined,
          spanGaps: sampled,
          // Values with no neighbour to draw a line to are drawn as dots, and every value of
          // a sparse sampled series; all points on short series.
          points: { show: x.length < 60 || sparse[i + 1], size: sparse[i + 1] ? 4 : undefined,
                    filter: (u, si, show) => (show ? null : lone[si]) },
          value: (u, v) => fmtNum(v, 4),
        })),
      ],
      legend: { live: true },
      plugins: markers.length ? [markerPlugin(markers)] : [],
    };
    const plot = new uPlot(opts, data, container);
    container._plot = plot;
    return plot;
  }

  // Keep plots as wide as their panel.
  function autoResize() {
    let t = null;
    window.addEventListener("resize", () => {
      clearTimeout(t);
      t = setTimeout(() => {
        document.querySelectorAll(".plot-body").forEach((c) => {
          if (c._plot) c._plot.setSize({ width: Math.max(320, c.clientWidth), height: c._plot.height });
        });
      }, 150);
    });
  }

  function setAllSeries(container, show) {
    const p = container._plot;
    if (!p) return;
    p.batch(() => { for (let i = 1; i < p.series.length; i++) p.setSeries(i, { show }); });
  }

  function flash(id) {
    const target = document.getElementById(id);
    if (!target) return;
    target.scrollIntoView({ behavior: "smooth", block: "start" });
    target.classList.remove("flash");
    void target.offsetWidth;
    target.classList.add("flash");
  }

  // Training-mode strips: one row per layer, coloured segments over steps.
  function modeStrips(container, modes, firstStep, lastStep) {
    container.innerHTML = "";
    if (!modes || modes.length === 0) {
      container.append(el("div", { class: "empty", text: "no layer takes a `training` argument (or none was recorded)" }));
      return;
    }
    const span = Math.max(1, lastStep - firstStep + 1);
    const wrap = el("div", { class: "strips" });
    for (const row of modes) {
      const track = el("div", { class: "strip-track" });
      for (const [a, b, v] of row.segments) {
        const cls = v === true ? "m-true" : v === false ? "m-false" : v === null ? "m-null" : "m-mixed";
        const text = v === true ? "training=True" : v === false ? "training=False" : v === null ? "training=None" : "mixed";
        track.append(el("div", {
          class: "strip-seg " + cls,
          title: `${row.layer}: ${text}, steps ${a}–${b}`,
          style: `left:${((a - firstStep) / span) * 100}%;width:${Math.max(0.3, ((b - a + 1) / span) * 100)}%`,
        }));
      }
      wrap.append(el("div", { class: "strip-row", "data-layer": row.layer },
        el("div", { class: "strip-label", title: row.layer, text: row.layer }), track));
    }
    container.append(wrap);
    container.append(el("div", { class: "strip-axis" }, el("span", { text: `step ${firstStep}` }), el("span", { text: `step ${lastStep}` })));
    container.append(el("div", { class: "legend-inline" },
      el("span", {}, el("i", { style: "background:#3aa76d" }), "training=True"),
      el("span", {}, el("i", { style: "background:#5b7bd5" }), "training=False"),
      el("span", {}, el("i", { style: "background:#e3a13b" }), "training=None (layer default: inference)"),
      el("span", {}, el("i", { style: "background:repeating-linear-gradient(45deg,#3aa76d 0 4px,#5b7bd5 4px 8px)" }), "changes within the bucket")));
  }

  function tooltip() {
    let tip = document.querySelector(".tooltip");
    if (!tip) { tip = el("div", { class: "tooltip hidden" }); document.body.append(tip); }
    return tip;
  }

  initHeader();
  autoResize();

  return { api, ApiError, num, esc, el, fmtNum, fmtTime, fmtDuration, color, linePlot, setAllSeries,
           showError, flash, modeStrips, tooltip, finiteOrNull };
})();
