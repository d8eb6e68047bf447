"""The HTML reports the UI-launched partition wrote, opened in the browser as a person would: the index
comparing the students, then one student's page."""

import pytest

from recdistill_dagster import layout
from tests.e2e.conftest import CONFIG, TRAINING_PARTITION, E2EPaths, LaunchedRun

pytestmark = pytest.mark.e2e

PLOTS = ("auc_over_days", "eta_over_days", "calibration_day", "calibration_cumulative", "loss_magnitudes")


def test_html_reports_show_every_student_and_plot_offline(launched_run: LaunchedRun, page, e2e_paths: E2EPaths,
                                                         screenshot) -> None:
    index = e2e_paths.home / layout.INDEX_PATH
    assert index.exists(), "the report materializations did not write reports/index.html"
    # Self-contained: nothing but the files themselves may load (images are data URIs).
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(index.as_uri())
    page.get_by_role("heading", name="Rec-Distill: one teacher").wait_for()
    table = page.locator("table").first.inner_text()
    for student in CONFIG.active_students:
        assert student.name in table
    assert page.locator("img#students").evaluate("img => img.complete ? img.naturalWidth : 0") > 0
    screenshot(page, "html-index", full_page=True)
    student = CONFIG.active_students[-1].name  # the cross-stage prerank student
    page.get_by_role("link", name=student, exact=True).click()
    page.get_by_role("heading", name=f"Rec-Distill transferability report: {student}").wait_for()
    assert page.get_by_text("η =").first.is_visible()
    assert TRAINING_PARTITION.isoformat() in page.locator("table").first.inner_text()
    for name in PLOTS:
        width = page.locator(f"img#{name}").evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width > 0, f"plot {name} did not render"
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    screenshot(page, "html-report", full_page=True)
