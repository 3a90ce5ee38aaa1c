"""What a person sees in a browser: the MLflow UI on a real sweep, and the sweep's HTML report.

Run with ``pytest -m browser tests/browser`` (``make test-browser``; ``.ci/run`` runs it). Each test saves
a screenshot (see conftest.py for where).
"""

from __future__ import annotations

import re
import urllib.request

import pytest

from candidates.space import chemist_formula
from chemoscreen import store
from screening.present import run_url

pytestmark = pytest.mark.browser


def _expected_order(ui_store) -> list[str]:
    """The child runs' names (chemist's formulas) from the best score down."""
    ranked = ui_store.ranking.sort_values("score", ascending=False, kind="stable", na_position="last")
    return [chemist_formula(f) for f in ranked["formula"]]


def _run_links(page, experiment_id: str) -> list[str]:
    """The names of the run links in the runs table, top to bottom."""
    return page.evaluate(
        """(prefix) => Array.from(document.querySelectorAll('a[href^="' + prefix + '"]'))
             .filter(a => a.getBoundingClientRect().height > 0).map(a => a.innerText.trim())""",
        f"#/experiments/{experiment_id}/runs/")


def test_deep_link_shows_the_ranking(ui_store, page, screenshots):
    expected = _expected_order(ui_store)
    page.goto(ui_store.ranking_url)
    page.get_by_text(expected[0], exact=True).first.wait_for()
    page.locator("[data-testid='sort-header-score']").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / "mlflow-ranking.png"))
    # the model-training runs table, not the GenAI overview
    assert "/runs?" in page.url and "workflowType=machine_learning" in page.url
    # every candidate's run, named by formula, in score order; the ranking columns shown
    assert _run_links(page, ui_store.experiment_id) == expected
    for column in ("score", "pareto_rank", "specific_energy_Wh_kg", "peak_tensile_stress_MPa"):
        assert page.locator(f"[data-testid='sort-header-{column}']").first.is_visible()


def test_experiments_are_model_training_experiments(ui_store, page):
    from mlflow import MlflowClient

    # the tag, read through the server, holds the kind the installed UI defines for model training
    experiment = MlflowClient(ui_store.ui_url).get_experiment(ui_store.experiment_id)
    assert experiment.tags[store.EXPERIMENT_KIND_TAG] == store.EXPERIMENT_KIND
    with urllib.request.urlopen(ui_store.ui_url + "/", timeout=30) as response:
        index = response.read().decode()
    main_js = re.search(r'src="([^"]*static/js/main\.[0-9a-f]+\.js)"', index).group(1)
    with urllib.request.urlopen(f"{ui_store.ui_url}/{main_js.lstrip('./')}", timeout=60) as response:
        bundle = response.read().decode()
    assert f'CUSTOM_MODEL_DEVELOPMENT="{store.EXPERIMENT_KIND}"' in bundle
    assert '"mlflow.experimentKind"' in bundle
    # MLflow 3.17 chooses an experiment's pages by its GenAI / Model training switch (a browser setting,
    # GenAI until changed): once a person picks "Model training", the plain experiment link opens the
    # runs table with the sweep's parent run
    parent_link = page.locator(f"a[href$='/runs/{ui_store.parent_run_id}']")
    page.goto(f"{ui_store.ui_url}/#/experiments/{ui_store.experiment_id}")
    # the GenAI overview opens with a "Detect issues" popover over the page: the switch is clicked through it
    # (a browser that already chose it, e.g. through the deep link, opens the runs table at once)
    # (its role differs between renders of the header: find it by its label)
    switch = page.get_by_text("Model training", exact=True)
    parent_link.first.or_(switch.first).first.wait_for()
    if not parent_link.first.is_visible():
        switch.first.dispatch_event("click")
    parent_link.first.wait_for()
    page.goto(f"{ui_store.ui_url}/#/experiments")
    page.goto(f"{ui_store.ui_url}/#/experiments/{ui_store.experiment_id}")
    parent_link.first.wait_for()
    assert re.search(rf"#/experiments/{ui_store.experiment_id}/runs", page.url)
    assert parent_link.first.inner_text().strip() == f"sweep-{ui_store.sweep_id}"


def test_parent_run_artifacts(ui_store, page, screenshots):
    page.goto(f"{ui_store.ui_url}/#/experiments/{ui_store.experiment_id}/runs/{ui_store.parent_run_id}/artifacts")
    page.get_by_text("ranking", exact=True).first.click()
    page.get_by_text("ranking.csv", exact=True).first.wait_for()
    page.get_by_text("pareto.png", exact=True).first.wait_for()
    page.get_by_text("report", exact=True).first.click()
    page.get_by_text("report.html", exact=True).first.click()
    # the report opens inside MLflow's sandboxed frame, renders, and says that its links cannot open there
    frame = page.frame_locator("iframe.mlflow-html-iframe")
    frame.locator("#pareto .scatterlayer .point").first.wait_for()
    frame.locator("#framed").wait_for()
    assert frame.locator("#ranking tbody tr").count() == len(ui_store.ranking)
    frame.locator("#pareto .scatterlayer .point").first.click(force=True)
    box = frame.locator("#open-run")
    box.wait_for()
    assert f"#/experiments/{ui_store.experiment_id}/runs/" in box.locator("#open-run-url").inner_text()
    page.screenshot(path=str(screenshots / "mlflow-report-artifact.png"))


def test_models_page_shows_the_champion(ui_store, page, screenshots):
    page.goto(f"{ui_store.ui_url}/#/models")
    row = page.locator("[role=row]", has_text=store.MODEL_NAME).first
    row.wait_for()
    assert re.search(rf"@\s*{store.ALIAS}", row.inner_text())
    page.screenshot(path=str(screenshots / "mlflow-models.png"))


def test_report_renders_sorted_with_the_plot_and_no_errors(ui_store, page, screenshots):
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: errors.append(f"fetched {request.url}")
            if not request.url.startswith(("file:", "data:", "blob:", "about:")) else None)
    page.goto(ui_store.report_path.as_uri())
    points = page.locator("#pareto .scatterlayer .point")
    points.first.wait_for()
    page.screenshot(path=str(screenshots / "report.png"))
    # the Pareto plot holds the ranked candidates: finished and feasible (an infeasible one, e.g. a
    # plateau above the 4.5 V window, stays in the table without a score or a Pareto rank)
    ranked = ui_store.ranking[ui_store.ranking["pareto_rank"].notna()]
    assert 0 < points.count() == len(ranked)
    formula_col = page.locator("#ranking thead th").all_inner_texts().index("formula")
    shown = page.locator(f"#ranking tbody tr td:nth-child({formula_col + 1})").all_inner_texts()
    assert shown == _expected_order(ui_store)
    assert page.locator("#ranking").get_attribute("data-sorted-by") == "score"
    # a header click sorts by that column
    page.locator("#ranking thead th[data-column='peak_tensile_stress_MPa']").click()
    column = [th.get_attribute("data-column") for th in page.locator("#ranking thead th").all()]
    stress = page.locator(f"#ranking tbody tr td:nth-child({column.index('peak_tensile_stress_MPa') + 1})")
    values = [float(v) for v in stress.all_inner_texts()]
    assert values == sorted(values)
    # a click on a plot point opens that candidate's run in a new tab
    with page.expect_popup() as popup:
        points.first.click(force=True)
    popup.value.wait_for_load_state("domcontentloaded")
    runs = {run_url(ui_store.ui_url, ui_store.experiment_id, run_id) for run_id in ranked["run_id"]}
    assert popup.value.url in runs
    assert page.locator("#law .scatterlayer").count() == 1          # the calibrated law with its band
    assert errors == []
