"""The Dagster UI, the way a user drives it: the asset graph, a partition launched by clicking, the
asset pages with the report's η and the join coverage."""

import json
import re
from datetime import date

import pytest

from recdistill_dagster import layout
from recdistill_dagster.graphql_client import DagsterGraphQL
from tests.e2e.conftest import CONFIG, PROFILE, TRAINING_PARTITION, E2EPaths, LaunchedRun, RunningServer

pytestmark = pytest.mark.e2e

PARTITION = TRAINING_PARTITION.isoformat()
STUDENTS = [s.name for s in CONFIG.active_students]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def expected_assets() -> list[str]:
    from recdistill_dagster.definitions import build_definitions

    graph = build_definitions(PROFILE).resolve_asset_graph()
    return sorted(key.to_user_string() for key in graph.get_all_asset_keys())


def graph_node(page, name: str):
    """An asset node drawn in the graph (long names are truncated on screen, full in data-tooltip)."""
    nodes = page.locator("foreignObject")
    return nodes.get_by_text(name, exact=True).or_(nodes.locator(f'[data-tooltip="{name}"]')).first


def metadata_value(page, label: str) -> str:
    """The value cell of one row of an asset page's metadata table."""
    row = page.locator("tr").filter(has=page.locator("td").first.get_by_text(label, exact=True)).first
    row.wait_for()
    return row.locator("td").nth(1).inner_text()


def first_number(text: str) -> float:
    match = NUMBER.search(text)
    assert match, f"no number in {text!r}"
    return float(match.group())


def test_asset_graph_draws_every_asset(page, dagster_ui: RunningServer, screenshot) -> None:
    assets = expected_assets()
    assert len(assets) == 4 + 5 * len(STUDENTS), assets  # shared streams and teacher, five assets a student
    # Wide enough that the whole expanded graph is drawn at a scale with full (named) asset nodes.
    page.set_viewport_size({"width": 2400, "height": 1700})
    page.goto(f"{dagster_ui.url}/asset-groups")
    page.get_by_role("button", name="Materialize all").wait_for()
    # Groups (data, teacher, one per student) start collapsed; ⌥E expands them all.
    for group in ("data", "teacher", *STUDENTS):
        page.locator("foreignObject").get_by_text(group, exact=True).first.wait_for()
    page.keyboard.press("Alt+e")
    for name in assets:
        graph_node(page, name.split("/")[-1]).wait_for(state="visible")
    screenshot(page, "asset-graph")


def test_partition_launched_from_the_ui_succeeds(launched_run: LaunchedRun) -> None:
    assert launched_run.status == "SUCCESS"


def test_report_asset_page_shows_eta(launched_run: LaunchedRun, page, dagster_ui: RunningServer,
                                     e2e_paths: E2EPaths, screenshot) -> None:
    student = STUDENTS[0]
    report = json.loads((e2e_paths.home / layout.report_path(student, TRAINING_PARTITION)).read_text())
    page.goto(f"{dagster_ui.url}/assets/{student}/transferability_report?view=partitions&partition={PARTITION}")
    shown = {label: metadata_value(page, label)
             for label in ("teacher_gain", "distill_gain", "eta", "eta_ci", "cumulative_eta", "html_report")}
    screenshot(page, "asset-transferability_report")
    gains = report["daily"]["gains"]
    expected = {"teacher_gain": gains["teacher_gain"], "distill_gain": gains["distill_gain"], "eta": gains["eta"],
                "cumulative_eta": report["cumulative"]["gains"]["eta"]}
    for label, value in expected.items():
        assert value is not None, f"{label} not measured in the tiny run"
        assert first_number(shown[label]) == pytest.approx(value, abs=1e-3), (label, shown[label])
    assert shown["html_report"].strip().endswith("reports/index.html")
    low, high = (float(x) for x in NUMBER.findall(shown["eta_ci"])[:2])
    assert low == pytest.approx(gains["eta_ci"][0], abs=1e-3)
    assert high == pytest.approx(gains["eta_ci"][1], abs=1e-3)


def test_student_dataset_page_shows_join_coverage(launched_run: LaunchedRun, page, dagster_ui: RunningServer,
                                                  screenshot) -> None:
    page.goto(f"{dagster_ui.url}/assets/{STUDENTS[0]}/student_dataset?view=partitions&partition={PARTITION}")
    coverage = first_number(metadata_value(page, "join_coverage"))
    screenshot(page, "asset-student_dataset")
    assert coverage == pytest.approx(1.0)  # no faults configured in the tiny profile: every row matched


def test_partition_range_launched_from_the_asset_graph_runs_as_range_runs(
        launched_run: LaunchedRun, page, dagster_ui: RunningServer, e2e_paths: E2EPaths, screenshot) -> None:
    """The streaming days as one asset backfill, default config: range runs, not a run per day."""
    days = [d.isoformat() for d in CONFIG.calendar.training_days()[1:]]
    graphql = DagsterGraphQL(f"{dagster_ui.url}/graphql")
    before = {b["id"] for b in graphql.backfills()}
    page.goto(f"{dagster_ui.url}/asset-groups")
    page.get_by_role("button", name="Materialize all").wait_for()
    page.locator(".CodeMirror").first.click()  # the asset selection box
    page.keyboard.type(" or ".join(f"group:{group}" for group in ("teacher", *STUDENTS)))
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"Launch runs to materialize {2 + 4 * len(STUDENTS)} assets").wait_for()
    dialog.get_by_text("Custom", exact=True).click()
    partitions = dialog.get_by_placeholder(re.compile("^ex: "))
    partitions.fill(f"[{days[0]}...{days[-1]}]")  # the UI's range syntax
    partitions.press("Enter")
    dialog.get_by_text(f"{len(days)} partitions", exact=True).wait_for()
    screenshot(page, "launch-range-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    dialog.wait_for(state="detached")
    (created,) = [b for b in graphql.backfills() if b["id"] not in before]
    assert created["isAssetBackfill"] and sorted(created["partitionNames"]) == days
    backfill = graphql.wait_for_backfill(created["id"], timeout_s=600)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    # BackfillPolicy.single_run: each run covers the whole range (days in order inside the assets);
    # the daemon launches a step once its parents are done, so never one run per day.
    ranges = [{t["key"]: t["value"] for t in run["tags"]} for run in backfill["runs"]]
    assert backfill["runs"] and all(run["status"] == "SUCCESS" for run in backfill["runs"])
    assert all((r.get("dagster/asset_partition_range_start"), r.get("dagster/asset_partition_range_end"))
               == (days[0], days[-1]) for r in ranges), ranges
    for day in days:
        for student in STUDENTS:
            assert (e2e_paths.home / layout.report_path(student, date.fromisoformat(day))).exists()
    page.goto(f"{dagster_ui.url}/runs/b/{created['id']}?tab=partitions")
    page.get_by_text(created["id"]).first.wait_for()
    screenshot(page, "range-backfill")


def test_materialized_partitions_carry_the_current_code_version(launched_run: LaunchedRun,
                                                                dagster_ui: RunningServer) -> None:
    """No 'has a new code version' right after a run: the recorded versions are the definitions' own."""
    graphql = DagsterGraphQL(f"{dagster_ui.url}/graphql")
    nodes = graphql.query(
        """query($partition: String!) { assetNodes { assetKey { path } opVersion
             staleCauses(partition: $partition) { category reason } } }""",
        {"partition": PARTITION},
    )["assetNodes"]
    training = [n for n in nodes if n["assetKey"]["path"][-1] not in ("eval_samples", "teacher_samples",
                                                                       "student_samples")]
    assert len(training) == 2 + 4 * len(STUDENTS) and all(n["opVersion"] for n in nodes)
    assert [n for n in training if any(c["category"] == "CODE" for c in n["staleCauses"])] == []


def test_the_prerank_student_launched_alone_from_its_group(launched_run: LaunchedRun, page, dagster_ui: RunningServer,
                                                          e2e_paths: E2EPaths, screenshot) -> None:
    """One student re-materialized on its own from the UI: the prerank group over the launched partition,
    reading the teacher the launched run wrote; the ranker's files stay as they were."""
    student = STUDENTS[-1]
    ranker_report = e2e_paths.home / layout.report_path(STUDENTS[0], TRAINING_PARTITION)
    own_report = e2e_paths.home / layout.report_path(student, TRAINING_PARTITION)
    ranker_before, own_before = ranker_report.read_bytes(), json.loads(own_report.read_text())
    graphql = DagsterGraphQL(f"{dagster_ui.url}/graphql")
    before = {b["id"] for b in graphql.backfills()}
    page.goto(f"{dagster_ui.url}/asset-groups")
    page.get_by_role("button", name="Materialize all").wait_for()
    page.locator(".CodeMirror").first.click()
    page.keyboard.type(f"group:{student}")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Launch runs to materialize 4 assets").wait_for()
    dialog.get_by_text("Custom", exact=True).click()
    partitions = dialog.get_by_placeholder(re.compile("^ex: "))
    partitions.fill(PARTITION)
    partitions.press("Enter")
    dialog.get_by_text("1 partition", exact=True).wait_for()
    screenshot(page, "launch-prerank-dialog")
    dialog.get_by_role("button", name=re.compile(r"^Launch (1 run|backfill)$")).click()
    dialog.wait_for(state="detached")
    new_backfills = [b for b in graphql.backfills() if b["id"] not in before]
    if new_backfills:
        (created,) = new_backfills
        assert graphql.wait_for_backfill(created["id"], timeout_s=600)["status"] == "COMPLETED_SUCCESS"
    else:
        run = graphql.query("{ runsOrError(limit: 1) { ... on Runs { results { runId } } } }")
        run_id = run["runsOrError"]["results"][0]["runId"]
        assert graphql.wait_for_run(run_id, timeout_s=600) == "SUCCESS"
    own_after = json.loads(own_report.read_text())
    assert own_after["snapshots"]["distilled"] != own_before["snapshots"]["distilled"]  # retrained
    assert own_after["snapshots"]["teacher"] == own_before["snapshots"]["teacher"]  # the same teacher
    assert ranker_report.read_bytes() == ranker_before  # the other student untouched
