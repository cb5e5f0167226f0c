// Runs page: project picker, sortable/filterable runs table, pick two to compare.
"use strict";

(() => {
  const { api, el, fmtTime, fmtDuration, showError } = GT;
  const params = new URLSearchParams(location.search);
  const state = { runs: [], sort: { key: "started_at", dir: -1 }, selected: [], total: null };
  const PAGE = 500;

  const items = (page) => (Array.isArray(page) ? page : page.items || page.runs || page.projects || []);

  async function loadProjects() {
    const projects = items(await api("/api/v1/projects"));
    const sel = document.getElementById("project");
    sel.innerHTML = "";
    for (const p of projects) {
      const name = typeof p === "string" ? p : p.name;
      const n = typeof p === "string" ? null : p.runs;
      sel.append(el("option", { value: name, text: n === null || n === undefined ? name : `${name} (${n})` }));
    }
    const wanted = params.get("project");
    if (wanted && projects.some((p) => (p.name || p) === wanted)) sel.value = wanted;
    sel.addEventListener("change", () => {
      params.set("project", sel.value);
      history.replaceState(null, "", "?" + params.toString());
      loadRuns(sel.value);
    });
    if (sel.value) await loadRuns(sel.value);
    else document.getElementById("runs-empty").classList.remove("hidden");
  }

  async function loadRuns(project) {
    const page = await api(`/api/v1/projects/${encodeURIComponent(project)}/runs?limit=${PAGE}`);
    state.runs = items(page);
    state.total = page.total ?? null;
    state.selected = [];
    const more = document.getElementById("runs-more");
    if (state.total !== null && state.total > state.runs.length) {
      more.textContent = `showing the latest ${state.runs.length} of ${state.total} runs`;
      more.classList.remove("hidden");
    } else more.classList.add("hidden");
    render();
  }

  function matches(run, text, status) {
    if (status && run.status !== status) return false;
    if (!text) return true;
    const hay = [run.name, run.status, run.keras_flavour, run.execution_mode, run.id].join(" ").toLowerCase();
    return text.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
  }

  function compareValues(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b));
  }

  function render() {
    const text = document.getElementById("filter").value.trim();
    const status = document.getElementById("status-filter").value;
    const { key, dir } = state.sort;
    const rows = state.runs.filter((r) => matches(r, text, status))
      .sort((a, b) => dir * compareValues(a[key], b[key]));
    const tbody = document.querySelector("#runs tbody");
    tbody.innerHTML = "";
    for (const r of rows) {
      const checked = state.selected.includes(r.id);
      const box = el("input", { type: "checkbox", "data-run": r.id, checked, "aria-label": `select ${r.name}` });
      box.addEventListener("change", () => toggle(r.id, box.checked));
      const status = el("span", { class: "badge " + (r.status || ""), text: r.status || "?" });
      tbody.append(el("tr", { class: checked ? "selected" : null, "data-run": r.id },
        el("td", {}, box),
        el("td", {}, el("a", { href: `/runs/${encodeURIComponent(r.id)}`, text: r.name })),
        el("td", {}, status, r.partial ? el("span", { class: "badge warning", title: "a tracer failure left this run incomplete", text: "partial", style: "margin-left:4px" }) : null),
        el("td", { class: "num", text: r.num_steps ?? "–" }),
        el("td", { text: fmtTime(r.started_at) }),
        el("td", { class: "num", text: fmtDuration(r.duration_s) }),
        el("td", { text: r.keras_flavour || "–" }),
        el("td", { text: r.execution_mode || "–" }),
        el("td", { class: "mono muted", text: String(r.id).slice(0, 12) })));
    }
    document.getElementById("runs-empty").classList.toggle("hidden", rows.length > 0);
    document.querySelectorAll("#runs th.sortable").forEach((th) => {
      th.classList.toggle("sorted-asc", th.dataset.key === key && dir === 1);
      th.classList.toggle("sorted-desc", th.dataset.key === key && dir === -1);
    });
    updateSelection();
  }

  function toggle(id, on) {
    state.selected = state.selected.filter((x) => x !== id);
    if (on) state.selected.push(id);
    // Two runs compare; a third click replaces the oldest pick.
    if (state.selected.length > 2) state.selected.shift();
    render();
  }

  function updateSelection() {
    const btn = document.getElementById("compare");
    const info = document.getElementById("selection");
    const names = state.selected.map((id) => (state.runs.find((r) => r.id === id) || {}).name || id);
    btn.disabled = state.selected.length !== 2;
    info.textContent = state.selected.length === 0 ? "select two runs to compare"
      : state.selected.length === 1 ? `A: ${names[0]} - select one more` : `A: ${names[0]}  ·  B: ${names[1]}`;
  }

  document.getElementById("compare").addEventListener("click", () => {
    const [a, b] = state.selected;
    const project = document.getElementById("project").value;
    location.href = `/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}&project=${encodeURIComponent(project)}`;
  });
  document.getElementById("filter").addEventListener("input", render);
  document.getElementById("status-filter").addEventListener("change", render);
  document.querySelectorAll("#runs th.sortable").forEach((th) => th.addEventListener("click", () => {
    const k = th.dataset.key;
    state.sort = { key: k, dir: state.sort.key === k ? -state.sort.dir : 1 };
    render();
  }));

  loadProjects().catch(showError);
})();
