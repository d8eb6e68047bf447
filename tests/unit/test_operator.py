"""Who `mark-bad` records as the operator, without relying on $USER."""

import pytest

from recdistill_dagster.operator import operator_identity


def test_the_operator_is_named_without_user_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    name = operator_identity()
    assert name and name != "?"  # the passwd entry of this uid, or "uid N" without one
