// Run page: metadata, configuration and per-step plots of one run.
"use strict";

(() => {
  const { api, el, fmtNum, fmtTime, fmtDuration, linePlot, modeStrips, showError } = GT;
  const runId = decodeURIComponent(location.pathname.replace(/^\/runs\//, "").replace(/\/$/, ""));

  function kv(dl, pairs) {
    dl.innerHTML = "";
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0)) continue;
      dl.append(el("dt", { text: k }), el("dd", {}, v instanceof Node ? v : String(v)));
    }
  }

  function describeConfig(cfg) {
    if (!cfg || typeof cfg !== "object") return null;
    const parts = Object.entries(cfg)
      .filter(([, v]) => v !== null && v !== undefined && typeof v !== "object")
      .map(([k, v]) => `${k}=${typeof v === "number" ? fmtNum(v) : v}`);
    return parts.join(", ");
  }

  function renderMeta(d) {
    const s = d.summary || d.run || d;
    const m = d.meta || s.meta || {};
    document.title = `gradtrace · ${s.name}`;
    document.getElementById("run-name").textContent = s.name;
    document.getElementById("nav-run").textContent = s.name;
    const st = document.getElementById("run-status");
    st.textContent = s.status || "";
    st.className = "badge " + (s.status || "");
    if (s.project) {
      const a = document.getElementById("nav-runs");
      a.href = `/?project=${encodeURIComponent(s.project)}`;
      a.textContent = `runs (${s.project})`;
    }
    const versions = m.versions ? Object.entries(m.versions).map(([k, v]) => `${k} ${v}`).join(", ") : null;
    const lost = m.lost && Object.keys(m.lost).length ? Object.entries(m.lost).map(([k, v]) => `${v} ${k}`).join(", ") : null;
    kv(document.getElementById("meta"), [
      ["id", el("code", { text: s.id || s.uid || runId })],
      ["project", s.project],
      ["started", fmtTime(s.started_at)],
      ["ended", s.ended_at ? fmtTime(s.ended_at) : null],
      ["duration", fmtDuration(s.duration_s)],
      ["steps", s.num_steps],
      ["Keras", s.keras_flavour || m.keras_flavour],
      ["execution", s.execution_mode || m.execution_mode],
      ["dtype policy", m.dtype_policy],
      ["strategy", m.strategy ? `${m.strategy}${m.replicas ? ` × ${m.replicas}` : ""}` : null],
      ["host", m.host],
      ["versions", versions],
      ["init fingerprint", m.init_fingerprint ? el("code", { text: m.init_fingerprint }) : null],
      ["error", m.error],
      ["partial", s.partial || m.partial ? "yes - a tracer failure left this run incomplete" : null],
      ["records lost", lost],
      ["warnings", (m.warnings || []).join("; ")],
    ]);
    const opt = m.optimizer || {};
    const loss = m.loss || {};
    const metrics = (m.metrics || []).map((x) => (x.class && x.name && x.class !== x.name ? `${x.name} (${x.class})` : x.name || x.class)).join(", ");
    const fit = m.fit ? describeConfig(m.fit) : null;
    // several fit() calls: each from the step it started at, with the loss it trained with
    const calls = (m.fit_calls || []).length > 1 ? el("div", {}, ...m.fit_calls.map((c) => el("div", {
      text: `from step ${c.first_step ?? "?"}: ${describeConfig({ ...c, first_step: undefined }) || ""}`
        + (c.loss && (c.loss.class || c.loss.name) ? `; loss ${c.loss.class || c.loss.name}` : ""),
    }))) : null;
    const vname = (i) => { const v = (d.variables || []).find((x) => (x.index ?? x.idx) === i); return v ? (v.path || v.name) : `#${i}`; };
    const changes = (m.trainable_changes || []).length ? el("div", {}, ...m.trainable_changes.map((c) => el("div", {
      text: `${c.at === "end" ? "by the end of the run" : `at the fit() call starting step ${c.step}`}: `
        + [[c.trainable, "unfrozen"], [c.frozen, "frozen"]].filter(([xs]) => (xs || []).length)
          .map(([xs, what]) => `${xs.length} ${what} (${xs.slice(0, 4).map(vname).join(", ")}${xs.length > 4 ? ", …" : ""})`).join("; "),
    }))) : null;
    // weights overwritten outside optimizer steps (RunInfo.weight_writes): EMA, EarlyStopping, set_weights
    // (how "assign": the script's own variable.assign of trained variables, from that step on)
    const writeWhat = { ema: "optimizer's moving average written in (use_ema)", set_weights: "set_weights", load_weights: "load_weights",
      assign: "variable.assign outside the optimizer's steps" };
    const assignWhere = { step_function: " in the step function", function: " in a tf.function", eager: " in the loop" };
    const writes = (m.weight_writes || []).length ? el("div", {}, ...m.weight_writes.map((w) => el("div", {
      text: `${w.step != null && s.num_steps != null && w.step >= s.num_steps ? `after the last step (${w.step - 1})` : `${w.how === "assign" ? "from" : "before"} step ${w.step ?? "?"}`}: ${writeWhat[w.how] || w.how} by ${w.by === "fit" ? "fit()" : w.by || "the script"}`
        + `${w.how === "assign" ? assignWhere[w.where] || "" : ""} (${(w.variables || []).length} variables)`,
    }))) : null;
    // train/inference-dependent layers run with training=True outside the steps (RunInfo.training_outside_steps)
    const outside = (m.training_outside_steps || []).length ? el("div", {}, ...m.training_outside_steps.map((r) => el("div", {
      text: `${r.layer}: ${r.calls} call(s) `
        + (r.first_step != null && s.num_steps != null && r.first_step >= s.num_steps ? `after the last step (${r.first_step - 1})` : `from step ${r.first_step ?? "?"} on`)
        + ` (${r.how === "graph" ? "in a tf.function" : "eager"})`,
    }))) : null;
    // layers' optional call arguments that differ from their defaults (extra.call_args)
    const callArgs = Object.entries((m.extra || {}).call_args || {}).filter(([, e]) => (e.calls || []).some((c) => Object.keys(c).length));
    const calledWith = callArgs.length ? el("div", {}, ...callArgs.map(([name, e]) => el("div", {
      text: `${name} (${e.class}): ${(e.calls || []).map((c) => Object.keys(c).length ? describeConfig(c) : "defaults").join(" | ")}`,
    }))) : null;
    kv(document.getElementById("config"), [
      ["optimizer", opt.class || opt.name || null],
      ["optimizer config", describeConfig(opt.config)],
      ["other optimizers", (m.optimizers || []).slice(1).map((o) => `${o.class} (${(o.variables || []).length} variables): ${describeConfig(o.config) || ""}`).join("; ") || null],
      ["loss", loss.class || loss.name || null],
      ["reduction", loss.reduction],
      ["from_logits", loss.from_logits === undefined || loss.from_logits === null ? null : String(loss.from_logits)],
      ["metrics", metrics],
      ["fit", fit],
      ["fit() calls", calls],
      ["trainable changes", changes],
      ["weights overwritten", writes],
      ["training=True outside the steps", outside],
      ["layers called with", calledWith],
      ["seeds", m.seeds && Object.keys(m.seeds).length ? describeConfig(m.seeds) : null],
    ]);
    if (!document.getElementById("config").children.length) {
      document.getElementById("config").append(el("dd", { class: "muted", text: "no optimizer/loss configuration recorded (hand-written loop without Keras compile)" }));
    }
    const vars = d.variables || [];
    const layers = Object.fromEntries((d.layers || []).map((l) => [l.index ?? l.idx, l]));
    document.getElementById("inv-count").textContent = `(${vars.length} variables, ${(d.layers || []).length} layers)`;
    const tbody = document.querySelector("#variables tbody");
    // the step from which a variable's trainability changed (RunInfo.trainable_changes)
    const flips = {};
    for (const c of m.trainable_changes || []) {
      for (const i of c.trainable || []) (flips[i] = flips[i] || []).push(`yes from step ${c.step}`);
      for (const i of c.frozen || []) (flips[i] = flips[i] || []).push(`no from step ${c.step}`);
    }
    for (const v of vars) {
      const layer = v.layer || (layers[v.layer_index] || {}).name || "";
      tbody.append(el("tr", {},
        el("td", { class: "num", text: v.index ?? v.idx }),
        el("td", { text: layer + (v.layer_class ? ` (${v.layer_class})` : "") }),
        el("td", { class: "mono", text: v.path || v.name }),
        el("td", { class: "mono", text: JSON.stringify(v.shape || []) }),
        el("td", { text: v.dtype || "" }),
        el("td", { text: [v.trainable === false ? "no" : "yes", ...(flips[v.index ?? v.idx] || [])].join(" → ") }),
        el("td", { class: "mono muted", text: v.struct_key || "" })));
    }
  }

  function renderPlots(p) {
    const nonfiniteSteps = (p.nonfinite || []).map((n) => n.step);
    const markers = nonfiniteSteps.slice(0, 200).map((s) => ({ x: s, color: "rgba(200,51,58,.55)", width: 1 }));
    linePlot(document.getElementById("loss-body"), {
      x: p.x, width: p.bucket_width, yLabel: "loss", markers,
      series: [{ label: "loss", min: p.loss.min, max: p.loss.max, color: "#1d2330" }],
    });
    linePlot(document.getElementById("grad-body"), {
      x: p.x, width: p.bucket_width, log: true, yLabel: "‖g‖", markers, height: 300, sampled: true,
      series: p.grad_norm.map((s) => ({ label: s.layer, min: s.min, max: s.max })),
    });
    linePlot(document.getElementById("update-body"), {
      x: p.x, width: p.bucket_width, log: true, yLabel: "‖Δw‖/‖w‖", sampled: true,
      series: p.update_ratio.map((s) => ({ label: s.layer, min: s.min, max: s.max })),
    });
    if (p.state.length) {
      linePlot(document.getElementById("state-body"), {
        x: p.x, width: p.bucket_width, yLabel: "‖Δ‖", height: 220, sampled: true,
        series: p.state.map((s) => ({ label: s.layer, min: s.min, max: s.max })),
      });
    } else {
      document.getElementById("state-body").append(el("div", { class: "empty", text: "no non-trainable state in this model (or none changed)" }));
    }
    modeStrips(document.getElementById("modes-body"), p.modes, p.first_step ?? 0, p.last_step ?? 0);
    const nf = document.getElementById("nonfinite-body");
    if (!p.nonfinite || p.nonfinite.length === 0) {
      nf.append(el("div", { class: "empty", text: "none: every recorded loss and gradient was finite" }));
    } else {
      const first = p.nonfinite[0];
      nf.append(el("p", {}, `${p.nonfinite_total} step(s) with non-finite values; the first is step `, el("b", { text: first.step }),
        ` (${first.what}${first.variables && first.variables.length ? ": " + first.variables.join(", ") : ""}).`));
      const list = el("table", { class: "grid" }, el("thead", {}, el("tr", {}, el("th", { text: "step" }), el("th", { text: "what" }), el("th", { text: "variables" }))));
      const tb = el("tbody");
      for (const n of p.nonfinite.slice(0, 20)) {
        tb.append(el("tr", {}, el("td", { class: "num", text: n.step }), el("td", { text: n.what }), el("td", { class: "mono", text: (n.variables || []).join(", ") })));
      }
      list.append(tb);
      nf.append(list);
    }
    if (p.bucket_width > 1) {
      document.querySelectorAll("#plot-loss .note").forEach((n) => n.append(` · ${p.num_steps} steps drawn as ${p.x.length} min/max buckets of ${p.bucket_width}`));
    }
  }

  document.querySelectorAll(".plot-head .tools button").forEach((b) => b.addEventListener("click", () => {
    GT.setAllSeries(document.getElementById(b.dataset.target), b.dataset.show === "1");
  }));

  async function main() {
    const enc = encodeURIComponent(runId);
    const maxPoints = Math.max(200, Math.min(4000, Math.floor((document.querySelector("main").clientWidth || 1200) * 0.8)));
    const [detail, plots] = await Promise.all([api(`/api/v1/runs/${enc}`), api(`/api/v1/runs/${enc}/plots?max_points=${maxPoints}`)]);
    renderMeta(detail);
    renderPlots(plots);
    document.body.dataset.ready = "1";
    if (location.hash) GT.flash(location.hash.slice(1));
  }
  main().catch((e) => { showError(e); document.body.dataset.ready = "error"; });
})();
