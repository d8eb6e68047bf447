"""The HTML report the UI-launched partition wrote, opened in the browser as a person would."""

import pytest

from recdistill_dagster.report_site import INDEX_PATH
from tests.e2e.conftest import TRAINING_PARTITION, E2EPaths, LaunchedRun

pytestmark = pytest.mark.e2e

PLOTS = ("auc_over_days", "eta_over_days", "calibration_day", "calibration_cumulative", "loss_magnitudes")


def test_html_report_shows_every_plot_offline(launched_run: LaunchedRun, page, e2e_paths: E2EPaths,
                                              screenshot) -> None:
    index = e2e_paths.home / INDEX_PATH
    assert index.exists(), "the report materialization did not write reports/index.html"
    # Self-contained: nothing but the file itself may load (images are data URIs).
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(index.as_uri())
    page.get_by_role("heading", name="Rec-Distill transferability report").wait_for()
    assert page.get_by_text("η =").first.is_visible()
    assert TRAINING_PARTITION.isoformat() in page.locator("table").first.inner_text()
    for name in PLOTS:
        width = page.locator(f"img#{name}").evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width > 0, f"plot {name} did not render"
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    screenshot(page, "html-report", full_page=True)
