// Compare page: the comparator's report, both runs' curves, and a gradient heat map.
"use strict";

(() => {
  const { api, el, fmtNum, linePlot, showError, flash } = GT;
  const params = new URLSearchParams(location.search);
  const A = params.get("a"), B = params.get("b"), project = params.get("project");
  const state = { report: null, plots: null, metric: "ratio", by: "variable", focus: null };

  // Which plot shows the evidence of a finding kind (kinds are the comparator's API strings).
  const LOSS_KINDS = new Set(["loss_scale", "shape_broadcast", "regularization_mismatch", "non_scalar_loss",
    "sample_weighting", "data_mismatch", "init_mismatch", "loss_scaling"]);
  const GRAD_KINDS = new Set(["gradient_scale", "gradient_mismatch", "missing_gradient", "not_applied", "trainable_mismatch", "optimizer_mismatch"]);
  const RUN_PLOT = { training_mode_mismatch: "plot-modes", frozen_state: "plot-state", numerics: "plot-nonfinite",
    metric_mismatch: "config", execution_mode: "meta", optimizer_mismatch: "config" };

  function runLink(which, anchor) {
    const r = which === "a" ? state.plots.a : state.plots.b;
    return `/runs/${encodeURIComponent(r.id)}${anchor ? "#" + anchor : ""}`;
  }

  function empty(v) {
    return v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0) ||
      (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0);
  }

  function evidenceTable(ev) {
    const t = el("table", { class: "evidence" });
    for (const [k, v] of Object.entries(ev || {})) {
      if (empty(v)) continue; // nothing measured under that name: no row
      let shown;
      if (v !== null && typeof v === "object") {
        const s = JSON.stringify(v);
        shown = el("code", { text: s.length > 240 ? s.slice(0, 240) + "…" : s });
      } else shown = typeof v === "number" ? fmtNum(v, 5) : String(v);
      t.append(el("tr", {}, el("td", { text: k }), el("td", {}, shown)));
    }
    return t;
  }

  function renderReport(r) {
    const badge = document.getElementById("verdict-badge");
    badge.textContent = r.verdict.replace("_", " ");
    badge.className = "badge big " + r.verdict;
    document.getElementById("first-step").textContent = r.first_divergent_step ?? "–";
    document.getElementById("aligned").textContent = r.aligned_steps ?? "–";
    document.getElementById("n-findings").textContent = r.findings.length;
    const box = document.getElementById("findings");
    box.innerHTML = "";
    if (r.findings.length === 0) box.append(el("div", { class: "empty", text: "no differences found beyond measured float noise" }));
    r.findings.forEach((f, i) => {
      const links = el("div", { class: "f-links" });
      const showStep = f.steps && f.steps.length ? f.steps[0] : null;
      const local = LOSS_KINDS.has(f.kind) ? "plot-loss" : GRAD_KINDS.has(f.kind) ? "heatmap" : null;
      if (local) links.append(el("a", { href: "#" + local, class: "to-plot", "data-finding": i,
        onclick: (e) => { e.preventDefault(); focusFinding(i, local); } }, local === "heatmap" ? "show in the heat map →" : "show on the loss plot →"));
      const remote = RUN_PLOT[f.kind];
      if (remote && state.plots) {
        links.append(el("a", { href: runLink("a", remote) }, `run A's ${remote.replace("plot-", "")} →`));
        links.append(el("a", { href: runLink("b", remote) }, `run B's ${remote.replace("plot-", "")} →`));
      }
      if (!local && !remote) links.append(el("a", { href: "#plot-loss", onclick: (e) => { e.preventDefault(); focusFinding(i, "plot-loss"); } }, "show on the loss plot →"));
      const meta = [];
      if (f.steps && f.steps.length) meta.push(`steps ${f.steps.slice(0, 8).join(", ")}${f.steps.length > 8 ? "…" : ""}`);
      if (f.layers && f.layers.length) meta.push(`layers ${f.layers.join(", ")}`);
      if (f.variables && f.variables.length) meta.push(`variables ${f.variables.slice(0, 6).join(", ")}${f.variables.length > 6 ? "…" : ""}`);
      box.append(el("div", { class: "finding sev-" + f.severity, "data-kind": f.kind, id: `finding-${i}` },
        el("div", { class: "f-head" },
          el("span", { class: "f-rank", text: `#${i + 1}` }),
          el("span", { class: "badge " + f.severity, text: f.severity }),
          el("span", { class: "f-kind", text: f.kind })),
        el("div", { class: "f-summary", text: f.summary }),
        meta.length ? el("div", { class: "f-meta", text: meta.join(" · ") }) : null,
        Object.values(f.evidence || {}).some((v) => !empty(v)) ? el("details", {}, el("summary", { text: "evidence" }), evidenceTable(f.evidence)) : null,
        f.fix ? el("div", { class: "f-fix" }, el("b", { text: "Fix: " }), f.fix) : null,
        showStep !== null || local || remote ? links : null));
    });
    const skipped = document.getElementById("skipped");
    skipped.innerHTML = "";
    for (const s of r.skipped || []) skipped.append(el("div", { class: "muted" }, el("b", { text: (s.check || s.kind || "check") + ": " }), s.reason || s.why || JSON.stringify(s)));
    document.getElementById("noise").textContent = JSON.stringify(r.noise || {}, null, 1);
  }

  function markers() {
    const out = [];
    const r = state.report;
    if (r && r.first_divergent_step !== null && r.first_divergent_step !== undefined) {
      out.push({ x: r.first_divergent_step, color: "#c8333a", dash: [6, 4], width: 1.5, label: `diverges at ${r.first_divergent_step}` });
    }
    if (state.focus !== null && r) {
      const f = r.findings[state.focus];
      if (f && f.steps && f.steps.length) out.push({ x: f.steps[0], color: "#d98e04", width: 2, label: `#${state.focus + 1}` });
    }
    return out;
  }

  function renderCurves() {
    const p = state.plots;
    const nameA = `A: ${p.a.name}`, nameB = `B: ${p.b.name}`;
    const pair = (obj) => [obj.a || { min: [], max: [] }, obj.b || { min: [], max: [] }];
    const [la, lb] = pair(p.loss), [ga, gb] = pair(p.grad_norm);
    linePlot(document.getElementById("loss-body"), {
      x: p.x, width: p.bucket_width, yLabel: "loss", markers: markers(), dashed: [1],
      series: [{ label: nameA, ...la, color: "#2f6fde" }, { label: nameB, ...lb, color: "#e0592a" }],
    });
    linePlot(document.getElementById("grad-body"), {
      x: p.x, width: p.bucket_width, yLabel: "‖g‖", log: true, markers: markers(), dashed: [1], sampled: true,
      series: [{ label: nameA, ...ga, color: "#2f6fde" }, { label: nameB, ...gb, color: "#e0592a" }],
    });
  }

  // Colour scales: ratio on log2 (white = equal), cosine from 1 (white) down to -1.
  function ratioColor(v) {
    if (v === null) return [236, 238, 242];
    const t = Math.max(-1, Math.min(1, Math.log2(v) / 3));
    return t >= 0 ? mix([255, 255, 255], [200, 40, 50], t) : mix([255, 255, 255], [40, 90, 200], -t);
  }
  function cosineColor(v) {
    if (v === null) return [236, 238, 242];
    const t = Math.max(0, Math.min(2, 1 - v));
    return t <= 1 ? mix([255, 255, 255], [220, 120, 30], t) : mix([220, 120, 30], [110, 20, 90], t - 1);
  }
  function mix(a, b, t) { return a.map((x, i) => Math.round(x + (b[i] - x) * t)); }

  function renderHeatmap() {
    const h = state.plots.heatmap;
    const labels = document.getElementById("hm-labels");
    const canvas = document.getElementById("hm-canvas");
    const note = document.getElementById("heat-note");
    labels.innerHTML = "";
    if (!h.rows || h.rows.length === 0) {
      note.textContent = h.note || "nothing to compare";
      canvas.width = 1; canvas.height = 1; canvas.style.height = "0px";
      return;
    }
    const metric = state.metric;
    const m = h[metric];
    const rowH = 22;
    const cellW = Math.max(2, Math.floor(Math.min(8, 900 / h.cols.length)));
    canvas.width = h.cols.length * cellW;
    canvas.height = h.rows.length * rowH;
    canvas.style.height = `${h.rows.length * rowH}px`;
    canvas.dataset.rows = h.rows.length;
    canvas.dataset.cols = h.cols.length;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(canvas.width, canvas.height);
    const colorOf = metric === "ratio" ? ratioColor : cosineColor;
    for (let r = 0; r < h.rows.length; r++) {
      for (let c = 0; c < h.cols.length; c++) {
        const [R, G, Bc] = colorOf(m[r][c]);
        for (let y = r * rowH + 1; y < (r + 1) * rowH - 1; y++) {
          for (let x = c * cellW; x < (c + 1) * cellW; x++) {
            const o = (y * canvas.width + x) * 4;
            img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = Bc; img.data[o + 3] = 255;
          }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    const focusRows = focusedRows(h);
    const r0 = state.report;
    if (r0 && r0.first_divergent_step !== null && r0.first_divergent_step !== undefined) {
      const c = columnOf(h, r0.first_divergent_step);
      if (c >= 0) {
        ctx.strokeStyle = "#c8333a"; ctx.setLineDash([4, 3]); ctx.lineWidth = 1.5;
        ctx.beginPath(); ctx.moveTo(c * cellW + 0.5, 0); ctx.lineTo(c * cellW + 0.5, canvas.height); ctx.stroke();
        ctx.setLineDash([]);
      }
    }
    h.rows.forEach((name, r) => {
      labels.append(el("div", { style: `height:${rowH}px;line-height:${rowH}px;${focusRows.has(r) ? "font-weight:700;color:#d98e04" : ""}`, title: name, text: name }));
      if (focusRows.has(r)) {
        ctx.strokeStyle = "#d98e04"; ctx.lineWidth = 2;
        ctx.strokeRect(1, r * rowH + 1, canvas.width - 2, rowH - 2);
      }
    });
    const axis = document.getElementById("hm-axis");
    axis.innerHTML = "";
    axis.append(el("span", { text: `step ${h.cols[0]}` }), el("span", { text: `step ${lastOf(h, h.cols.length - 1)}` }));
    const per = h.col_width === 1 ? "one measured step each" : `${h.col_width} measured steps each`;
    const measured = h.measured_steps !== undefined && h.span !== undefined && h.measured_steps < h.span
      ? `; both runs measured per-variable statistics at ${h.measured_steps} of ${h.span} steps` : "";
    note.textContent = `${h.rows.length} ${h.by === "layer" ? "layers" : "variables"} × ${h.cols.length} columns, ${per}${measured}` +
      (h.sample_stride > 1 ? ` (every ${h.sample_stride}th sampled)` : "");
    const scale = document.getElementById("hm-scale");
    const sctx = scale.getContext("2d");
    for (let x = 0; x < scale.width; x++) {
      const t = x / (scale.width - 1);
      const [R, G, Bc] = metric === "ratio" ? ratioColor(Math.pow(2, -3 + 6 * t)) : cosineColor(-1 + 2 * t);
      sctx.fillStyle = `rgb(${R},${G},${Bc})`; sctx.fillRect(x, 0, 1, scale.height);
    }
    document.getElementById("hm-lo").textContent = metric === "ratio" ? "≤ 1/8" : "−1";
    document.getElementById("hm-hi").textContent = metric === "ratio" ? "≥ 8×" : "1";
    document.getElementById("hm-legend").textContent = metric === "ratio"
      ? "‖g_B‖ / ‖g_A‖ (geometric mean over the column's steps; white = equal)"
      : "cosine of the gradients' sketches (1 = same direction)";
    canvas.onmousemove = (e) => {
      const rect = canvas.getBoundingClientRect();
      const c = Math.floor(((e.clientX - rect.left) / rect.width) * h.cols.length);
      const r = Math.floor(((e.clientY - rect.top) / rect.height) * h.rows.length);
      const tip = GT.tooltip();
      if (r < 0 || r >= h.rows.length || c < 0 || c >= h.cols.length) { tip.classList.add("hidden"); return; }
      const s0 = h.cols[c], s1 = lastOf(h, c);
      tip.textContent = `${h.rows[r]} · ${s0 === s1 ? `step ${s0}` : `steps ${s0}–${s1}`} · ratio ${fmtNum(h.ratio[r][c], 4)} · cosine ${fmtNum(h.cosine[r][c], 4)}`;
      tip.style.left = `${e.clientX + 12}px`; tip.style.top = `${e.clientY + 12}px`;
      tip.classList.remove("hidden");
    };
    canvas.onmouseleave = () => GT.tooltip().classList.add("hidden");
  }

  // A column's last step, and the column holding a step (or the first one after it).
  function lastOf(h, c) { return h.col_last ? h.col_last[c] : h.cols[c] + h.col_width - 1; }
  function columnOf(h, step) {
    for (let c = 0; c < h.cols.length; c++) if (step <= lastOf(h, c)) return c;
    return -1;
  }

  function focusedRows(h) {
    const out = new Set();
    if (state.focus === null || !state.report) return out;
    const f = state.report.findings[state.focus];
    const names = [...(f.layers || []), ...(f.variables || [])].map((s) => String(s).toLowerCase());
    h.rows.forEach((row, i) => {
      const lr = row.toLowerCase();
      const layer = lr.split(" · ")[0];
      const vname = lr.replace(" · ", "/");
      if (names.some((n) => n === layer || n === lr || n === vname || n.endsWith("/" + vname) || n.startsWith(layer + "/"))) out.add(i);
    });
    return out;
  }

  function focusFinding(i, target) {
    state.focus = i;
    renderCurves();
    renderHeatmap();
    flash(target);
  }

  async function loadPlots() {
    const q = `a=${encodeURIComponent(A)}&b=${encodeURIComponent(B)}`;
    const maxPoints = Math.max(200, Math.min(4000, Math.floor((document.querySelector("main").clientWidth || 1200) * 0.8)));
    state.plots = await api(`/api/v1/plots/compare?${q}&max_points=${maxPoints}&by=${state.by}`);
  }

  function setMetric(m) {
    state.metric = m;
    document.getElementById("hm-ratio").classList.toggle("primary", m === "ratio");
    document.getElementById("hm-cosine").classList.toggle("primary", m === "cosine");
    renderHeatmap();
  }
  document.getElementById("hm-ratio").addEventListener("click", () => setMetric("ratio"));
  document.getElementById("hm-cosine").addEventListener("click", () => setMetric("cosine"));
  document.getElementById("hm-by").addEventListener("click", async (e) => {
    state.by = state.by === "variable" ? "layer" : "variable";
    e.target.textContent = state.by === "variable" ? "by layer" : "by variable";
    await loadPlots().catch(showError);
    renderHeatmap();
  });

  async function main() {
    if (!A || !B) throw new Error("this page needs two runs: /compare?a=RUN&b=RUN");
    if (project) document.getElementById("nav-runs").href = `/?project=${encodeURIComponent(project)}`;
    const q = `a=${encodeURIComponent(A)}&b=${encodeURIComponent(B)}${project ? "&project=" + encodeURIComponent(project) : ""}`;
    // Curves first: they show even when the comparator refuses the pair.
    await loadPlots();
    const p = state.plots;
    document.getElementById("run-a").textContent = p.a.name;
    document.getElementById("run-a").href = `/runs/${encodeURIComponent(p.a.id)}`;
    document.getElementById("run-b").textContent = p.b.name;
    document.getElementById("run-b").href = `/runs/${encodeURIComponent(p.b.id)}`;
    document.title = `gradtrace · ${p.a.name} vs ${p.b.name}`;
    try {
      state.report = await api(`/api/v1/compare?${q}`);
      renderReport(state.report);
    } catch (e) {
      showError(e);
      document.getElementById("verdict-badge").textContent = "no report";
    }
    renderCurves();
    renderHeatmap();
    document.body.dataset.ready = "1";
  }
  main().catch((e) => { showError(e); document.body.dataset.ready = "error"; });
})();
