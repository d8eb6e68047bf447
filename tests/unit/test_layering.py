"""The layering the code promises: the model code and the stage package import neither Dagster nor
MLflow (they run, and are tested, without the orchestrator), and the stdlib lineage auditor imports
nothing outside the standard library."""

import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import models
import recdistill_dagster.report
import recdistill_dagster.stages

REPO = Path(__file__).resolve().parents[2]


def _modules(package: ModuleType) -> list[str]:
    return [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print('\\n'.join(sorted(name.split('.')[0] for name in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_models_stages_and_report_import_no_orchestrator() -> None:
    modules = [*_modules(models), *_modules(recdistill_dagster.stages), *_modules(recdistill_dagster.report)]
    assert "recdistill_dagster.stages.teacher" in modules and "models.student" in modules
    loaded = _loaded_after_import(modules)
    assert {"torch", "polars"} <= loaded  # the import really happened
    assert not {"dagster", "mlflow", "resources", "assets"} & loaded


def test_the_graphql_auditor_needs_only_the_standard_library() -> None:
    done = subprocess.run([sys.executable, "-S", "-c", "import recdistill_dagster.lineage_graphql"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_auditors_health_check_is_the_graphs() -> None:
    from recdistill_dagster.graph import TEACHER_CHECKPOINT, TEACHER_HEALTH_CHECK
    from recdistill_dagster.lineage_graphql import HEALTH_CHECK

    assert (TEACHER_CHECKPOINT, TEACHER_HEALTH_CHECK) == HEALTH_CHECK
