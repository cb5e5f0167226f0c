"""The web UI in Debian's Chromium against a real uvicorn holding real runs.

Project "digits": ``model.fit()`` vs a tape loop that forgets ``training=True``,
both recorded by ``gradtrace.trace``. Project "recorded": the same pair with numbers
the test computed itself (full configuration metadata). Project "long": 3000 steps; "sampled": statistics every 50th step.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
REC_FIT, REC_TAPE = "ui-fit-0001", "ui-tape-0002"


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    assert page.get_attribute("body", "data-ready") == "1", page.inner_text("#error")


def _series_count(page: Any, container: str) -> int:
    return int(page.evaluate(f"document.getElementById({container!r})._plot.series.length")) - 1


def _series_labels(page: Any, container: str) -> list[str]:
    return list(page.evaluate(f"document.getElementById({container!r})._plot.series.slice(1).map(s => s.label)"))


def _rows(page: Any) -> list[str]:
    return list(page.locator("#runs tbody tr td:nth-child(2)").all_inner_texts())


def test_runs_table_lists_sorts_filters_and_opens_the_comparison(
    server: Any, ui_db: dict[str, Any], page: Any, out_dir: Path
) -> None:
    page.goto(server.url + "/?project=digits")
    page.wait_for_selector("#runs tbody tr")
    assert sorted(_rows(page)) == ["fit", "tape-loop"]
    tape_row = page.locator(f"#runs tbody tr[data-run='{ui_db['tape']}']").inner_text()
    assert "40" in tape_row and "finished" in tape_row and "eager" in tape_row
    fit_row = page.locator(f"#runs tbody tr[data-run='{ui_db['fit']}']").inner_text()
    assert "tf.function" in fit_row

    page.click("#runs th[data-key=name]")
    assert _rows(page) == ["fit", "tape-loop"]
    page.click("#runs th[data-key=name]")
    assert _rows(page) == ["tape-loop", "fit"]
    page.fill("#filter", "tape")
    assert _rows(page) == ["tape-loop"]
    page.fill("#filter", "")
    page.select_option("#status-filter", "running")
    assert _rows(page) == []
    page.select_option("#status-filter", "")

    # The project picker lists every project; switching reloads the table.
    assert set(page.locator("#project option").all_inner_texts()) >= {"digits (2)", "recorded (2)", "long (1)"}
    page.select_option("#project", "long")
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 1")
    page.select_option("#project", "digits")
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 2")

    assert page.is_disabled("#compare")
    page.check(f"input[data-run='{ui_db['fit']}']")
    assert page.is_disabled("#compare")
    page.check(f"input[data-run='{ui_db['tape']}']")
    assert page.is_enabled("#compare")
    page.screenshot(path=str(out_dir / "runs.png"), full_page=True)

    page.click("#compare")
    page.wait_for_url("**/compare?**")
    assert f"a={ui_db['fit']}" in page.url and f"b={ui_db['tape']}" in page.url
    _ready(page)
    assert page.locator(".finding").first.is_visible()
    assert page.js_errors == []


def test_compare_page_verdict_top_finding_curves_and_heatmap(
    server: Any, ui_db: dict[str, Any], page: Any, out_dir: Path
) -> None:
    a, b = ui_db["fit"], ui_db["tape"]
    report = httpx.get(f"{server.url}/api/v1/compare", params={"a": a, "b": b}, timeout=60).json()
    page.goto(f"{server.url}/compare?a={a}&b={b}")
    _ready(page)
    assert page.inner_text("#run-a") == "fit" and page.inner_text("#run-b") == "tape-loop"
    # BN and Dropout ran in inference mode in the tape loop: the runs part at step 0.
    assert report["verdict"] == "diverged"
    assert page.inner_text("#verdict-badge") == "diverged"
    assert page.inner_text("#first-step") == str(report["first_divergent_step"])
    assert page.locator(".finding").count() == len(report["findings"])
    top = page.locator(".finding").first
    assert top.is_visible()
    assert top.get_attribute("data-kind") == report["findings"][0]["kind"]
    assert report["findings"][0]["summary"] in top.inner_text()
    assert "Fix:" in top.inner_text()

    # Two runs overlaid per plot; the heat map has a row per trainable variable (6) or layer (3).
    assert _series_labels(page, "loss-body") == ["A: fit", "B: tape-loop"]
    assert _series_count(page, "grad-body") == 2
    assert page.get_attribute("#hm-canvas", "data-rows") == "6"
    # a column per step both runs measured per-variable statistics at (the automatic cadence
    # picks them from measured costs, so their number varies with the machine's load)
    from gradtrace.store import open_store

    with open_store(ui_db["url"]) as store:
        measured = [{st["step"] for st in store.steps(r) if any(x.get("norm") is not None for x in st["vars"])}
                    for r in (a, b)]
    both = measured[0] & measured[1]
    assert len(both) >= 2 and int(page.get_attribute("#hm-canvas", "data-cols")) == len(both), sorted(both)
    page.click("#hm-by")
    page.wait_for_function("document.getElementById('hm-canvas').dataset.rows === '3'")
    assert page.locator("#hm-labels div").all_inner_texts() == ["dense", "batch_normalization", "logits"]
    page.click("#hm-by")
    page.wait_for_function("document.getElementById('hm-canvas').dataset.rows === '6'")

    top.locator("details summary").first.click()
    assert top.locator("table.evidence").is_visible()
    top.locator("details summary").first.click()
    # every evidence row shown holds something: empty lists and nulls get no row
    ev_keys = [k for f in report["findings"] for k in f["evidence"]]
    values = page.locator("table.evidence tr td:nth-child(2)").all_text_contents()
    assert values and not {v.strip() for v in values} & {"", "[]", "{}", "null"}
    assert len(values) == sum(1 for f in report["findings"] for v in f["evidence"].values()
                              if v not in (None, "", [], {})) <= len(ev_keys)
    page.screenshot(path=str(out_dir / "compare.png"), full_page=True)
    # docs/compare.png (the README's picture) is refreshed on request only, so a test run
    # never dirties the checkout: GRADTRACE_UPDATE_DOCS=1 make test
    if os.environ.get("GRADTRACE_UPDATE_DOCS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(out_dir / "compare.png", REPO / "docs" / "compare.png")
    assert page.js_errors == []


def test_findings_link_to_the_plots_that_show_them(server: Any, page: Any) -> None:
    page.goto(f"{server.url}/compare?a={REC_FIT}&b={REC_TAPE}")
    _ready(page)
    findings = page.locator(".finding")
    assert findings.count() >= 1
    for i in range(findings.count()):
        assert findings.nth(i).locator(".f-links a").count() >= 1, findings.nth(i).inner_text()
    # A run-level finding links to that plot on both run pages; following it lands on the plot.
    link = page.locator(".f-links a[href^='/runs/']").first
    href = link.get_attribute("href")
    assert href is not None and "#" in href
    anchor = href.split("#", 1)[1]
    link.click()
    page.wait_for_url("**/runs/**")
    _ready(page)
    assert page.evaluate("location.hash") == "#" + anchor
    assert page.locator("#" + anchor).is_visible()


def test_run_page_metadata_and_plots(server: Any, page: Any, out_dir: Path) -> None:
    page.goto(f"{server.url}/runs/{REC_FIT}")
    _ready(page)
    assert page.inner_text("#run-name") == "fit-style"
    config = page.inner_text("#config")
    for text in ("SGD", "learning_rate=0.05", "SparseCategoricalCrossentropy", "sum_over_batch_size",
                 "SparseCategoricalAccuracy"):
        assert text in config
    assert "(8 variables, 4 layers)" in page.inner_text("#inv-count")

    assert _series_count(page, "loss-body") == 1
    # one line per layer with trainable variables; BN's moving statistics as state
    assert _series_labels(page, "grad-body") == ["dense", "batch_normalization", "logits"]
    assert _series_count(page, "update-body") == 3
    assert _series_labels(page, "state-body") == ["batch_normalization"]
    assert page.locator("#plot-modes .strip-row").count() == 2
    assert page.locator("#plot-modes .strip-row[data-layer=batch_normalization] .strip-seg.m-true").count() == 1
    assert "none" in page.inner_text("#nonfinite-body")

    # Toggling a layer off through the legend hides its line; "all" brings it back.
    page.locator("#grad-body .u-legend .u-series").nth(1).click()
    assert page.evaluate("document.getElementById('grad-body')._plot.series[1].show") is False
    page.click("#plot-grad button[data-show='1']")
    assert page.evaluate("document.getElementById('grad-body')._plot.series[1].show") is True

    page.screenshot(path=str(out_dir / "run.png"), full_page=True)
    assert page.js_errors == []


def test_traced_runs_show_their_training_modes(server: Any, ui_db: dict[str, Any], page: Any, out_dir: Path) -> None:
    page.goto(f"{server.url}/runs/{ui_db['fit']}")
    _ready(page)
    assert _series_labels(page, "grad-body") == ["dense", "batch_normalization", "logits"]
    assert _series_labels(page, "state-body") == ["batch_normalization"]
    bn = "#plot-modes .strip-row[data-layer=batch_normalization]"
    assert page.locator(f"{bn} .strip-seg.m-true").count() == 1
    page.screenshot(path=str(out_dir / "run-traced-fit.png"), full_page=True)

    page.goto(f"{server.url}/runs/{ui_db['tape']}")
    _ready(page)
    assert page.locator(f"{bn} .strip-seg.m-true").count() == 0
    assert page.locator(f"{bn} .strip-seg").count() == 1


def test_a_run_of_several_fit_calls_shows_each_call_and_what_it_unfroze(
        server: Any, ui_db: dict[str, Any], page: Any, out_dir: Path) -> None:
    page.goto(f"{server.url}/runs/{ui_db['fine_tune']}")
    _ready(page)
    k = ui_db["second_fit"]
    config = page.inner_text("#config")
    assert "from step 0: epochs=1, batch_size=32" in config, config
    assert f"from step {k}: epochs=1, batch_size=64" in config and "loss CategoricalFocalCrossentropy" in config
    assert f"at the fit() call starting step {k}: 2 unfrozen (" in config, config
    assert f"after the last step ({k + 1}): set_weights by EarlyStopping (" in config, config
    assert f"after the last step ({k + 1}): variable.assign outside the optimizer's steps by the script in the loop " \
        "(1 variables)" in config, config
    assert f"batch_normalization: 1 call(s) after the last step ({k + 1}) (eager)" in config, config
    # the loss row is the latest compile()'s
    loss_row = page.evaluate("""[...document.querySelectorAll('#config dt')]
        .find((e) => e.textContent === 'loss').nextElementSibling.textContent""")
    assert loss_row == "CategoricalFocalCrossentropy", loss_row
    flags = [r.locator("td").nth(5).text_content() for r in page.locator("#variables tbody tr").all()]
    assert flags.count(f"no → yes from step {k}") == 2 and flags.count("yes") >= 2, flags
    page.screenshot(path=str(out_dir / "run-fine-tune.png"), full_page=True)
    assert page.js_errors == []


def test_long_run_is_downsampled_and_marks_non_finite_steps(server: Any, page: Any, out_dir: Path) -> None:
    page.goto(f"{server.url}/runs/long-run")
    _ready(page)
    points = page.evaluate("document.getElementById('loss-body')._plot.data[0].length")
    # min/max buckets: two points per bucket, far fewer than the 3000 steps
    assert 0 < points <= 2 * 1200
    assert _series_count(page, "grad-body") == 3
    assert "the first is step 1500" in page.inner_text("#nonfinite-body")
    # extra.call_args: a layer called with a flag off its default is listed; one at its defaults is not
    config = page.inner_text("#config")
    assert "attention (MultiHeadAttention): use_causal_mask=true" in config, config
    assert "plain (Dense)" not in config
    page.screenshot(path=str(out_dir / "run-long.png"), full_page=True)
    assert page.js_errors == []


def test_statistics_sampled_every_nth_step_are_dots_joined_by_a_line(server: Any, page: Any, out_dir: Path) -> None:
    # Per-variable statistics on every 50th step only (the default cadence): a line joins
    # the sampled values across the steps between, and each sampled value is a dot.
    page.goto(f"{server.url}/runs/sampled-run")
    _ready(page)
    assert _series_count(page, "grad-body") == 2
    for body in ("grad-body", "update-body"):
        drawn = page.evaluate(f"""(() => {{ const u = document.getElementById('{body}')._plot;
            return u.series.slice(1).map((s, k) => [s.spanGaps,
                typeof s.points.show === 'function' ? s.points.show(u, k + 1) : s.points.show]); }})()""")
        assert drawn == [[True, True]] * len(drawn) and drawn, (body, drawn)
    dots = page.evaluate("""(() => {
        const u = document.getElementById('grad-body')._plot;
        return u.series.slice(1).map((s, k) => {
            const idx = s.points.filter(u, k + 1, false, null) || [];
            return idx.map((i) => u.data[0][i]);
        });
    })()""")
    for steps in dots:
        assert sorted({int(x) for x in steps}) == list(range(0, 400, 50))
    # the loss, recorded on every step, is a line without dots that bridges no gap (its NaN step)
    assert page.evaluate("(() => { const u = document.getElementById('loss-body')._plot;"
                         " return u.series[1].points.filter(u, 1, false, null); })()") is None
    assert page.evaluate("document.getElementById('loss-body')._plot.series[1].spanGaps") is False
    page.screenshot(path=str(out_dir / "run-sampled.png"), full_page=True)
    assert page.js_errors == []


def test_heatmap_columns_are_the_steps_both_runs_measured(server: Any, page: Any, out_dir: Path) -> None:
    # Statistics every 50th step of 400: the heat map's columns are those 8 steps, not
    # step buckets of which most would hold nothing.
    def heatmap(**params: Any) -> dict[str, Any]:
        r = httpx.get(f"{server.url}/api/v1/plots/compare", params={"a": "sampled-run", "b": "sampled-run", **params},
                      timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["heatmap"]

    h = heatmap()
    measured = list(range(0, 400, 50))
    assert h["cols"] == measured and h["col_last"] == measured and h["col_width"] == 1
    assert (h["measured_steps"], h["span"]) == (8, 400)
    assert np.allclose(np.array(h["ratio"], dtype=float), 1.0)  # a run against itself: every cell filled
    h = heatmap(max_cols=3)  # 8 measured steps in 3 columns of 3
    assert (h["cols"], h["col_last"], h["col_width"]) == ([0, 150, 300], [100, 250, 350], 3)
    assert np.allclose(np.array(h["ratio"], dtype=float), 1.0)

    page.goto(f"{server.url}/compare?a=sampled-run&b=sampled-run")
    _ready(page)
    assert page.get_attribute("#hm-canvas", "data-cols") == "8"
    assert "statistics at 8 of 400 steps" in page.inner_text("#heat-note")
    assert page.js_errors == []


def test_unknown_run_shows_a_clear_error(server: Any, page: Any) -> None:
    page.goto(f"{server.url}/runs/no-such-run")
    page.wait_for_selector("body[data-ready]")
    assert page.get_attribute("body", "data-ready") == "error"
    assert "404" in page.inner_text("#error") and "no-such-run" in page.inner_text("#error")


def test_token_from_the_login_field_is_kept_and_sent_as_bearer(ui_db: dict[str, Any], page: Any) -> None:
    from gradtrace.store import open_store
    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings
    from live_server import ServerThread

    with open_store(ui_db["url"]) as store:
        token = store.create_token("recorded", "read", name="ui-test")
    srv = ServerThread(create_app(Settings(db=ui_db["url"], host="127.0.0.1", require_auth=True))).start()
    try:
        page.goto(srv.url + "/?project=recorded")
        page.wait_for_selector("#error:not(.hidden)")
        assert "401" in page.inner_text("#error") and "token" in page.inner_text("#error")
        assert "needed" in (page.get_attribute("header .login", "class") or "")

        page.fill("#token", token)
        page.click("header .login button")
        page.wait_for_selector("#runs tbody tr")
        assert sorted(_rows(page)) == ["fit-style", "tape-loop"]
        # the token's project only: the picker does not offer the others
        assert page.locator("#project option").all_inner_texts() == ["recorded (2)"]
        assert page.evaluate("localStorage.getItem('gradtrace.token')") == token

        page.goto(f"{srv.url}/runs/{REC_FIT}")
        _ready(page)
        page.goto(f"{srv.url}/runs/{ui_db['fit']}")  # another project's run
        page.wait_for_selector("body[data-ready]")
        assert page.get_attribute("body", "data-ready") == "error"
    finally:
        srv.stop()
