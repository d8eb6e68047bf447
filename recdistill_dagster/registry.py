"""The teacher snapshot registry: one durable JSON record per teacher snapshot.

Records live in the artifact store (`registry/teacher/<day>/<run>.json`, written atomically), so
the registry works on any fsspec URL the store does. The teacher step registers every snapshot it
produces with its health verdict and the checksum of its weights; the rollback sensor marks
unhealthy snapshots `bad` with the reason, when it detected them and the Dagster run that produced
them. Training chains consult it to continue from the last good snapshot; the lineage audit reports
each snapshot's status.

Statuses: `good`; `unhealthy` (failed its health check, not yet handled by the sensor); `bad` (by
the sensor, an operator, or because its weights equal a bad snapshot's: `identical_to`);
`superseded` (a later materialization of the same day replaced it: its files are gone, nothing
continues from it; it was not found bad, so it stays usable for what it already fed).
"""

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from recdistill_dagster.storage import Store

SnapshotStatus = Literal["good", "unhealthy", "bad", "superseded"]
UNUSABLE: frozenset[str] = frozenset({"unhealthy", "bad"})


class SnapshotRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot_id: str
    partition: date
    attempt: int  # 1 for the first materialization of the day, 2 for its first retrain, ...
    status: SnapshotStatus
    dagster_run_id: str
    mlflow_run_id: str | None = None
    parent_snapshot: str | None = None
    created_at: datetime
    checkpoint_url: str | None = None
    health: dict[str, Any] = {}
    reason: str | None = None  # why it is unhealthy or bad
    detected_at: datetime | None = None  # when the sensor recorded it as bad
    detected_by: str | None = None  # which sensor tick (or operator) recorded it
    weights_sha256: str | None = None  # checksum of the weights alone (not the file: its metadata differs per run)
    identical_to: str | None = None  # the unusable snapshot of the same day whose weights it reproduces
    superseded_by: str | None = None


def parse_snapshot_id(snapshot_id: str) -> tuple[str, date, str]:
    """`teacher@2026-01-05#1a2b3c4d` → ("teacher", 2026-01-05, "1a2b3c4d")."""
    try:
        role, rest = snapshot_id.split("@", 1)
        day, run = rest.split("#", 1)
        return role, date.fromisoformat(day), run
    except ValueError:
        raise ValueError(f"not a snapshot id: {snapshot_id!r} (expected role@YYYY-MM-DD#run)") from None


class SnapshotRegistry:
    ROOT = "registry/teacher"

    def __init__(self, store: Store) -> None:
        self.store = store

    def _path(self, snapshot_id: str) -> str:
        _, day, run = parse_snapshot_id(snapshot_id)
        return f"{self.ROOT}/{day.isoformat()}/{run}.json"

    def register(self, record: SnapshotRecord) -> str:
        return self.store.write_json(self._path(record.snapshot_id), record.model_dump(mode="json"))

    def register_new(self, record: SnapshotRecord) -> str:
        """A new materialization of its day: the day's earlier good snapshots become `superseded`."""
        url = self.register(record)
        for earlier in self.for_partition(record.partition):
            if earlier.snapshot_id != record.snapshot_id and earlier.status == "good":
                self.register(earlier.model_copy(update={"status": "superseded",
                                                         "superseded_by": record.snapshot_id}))
        return url

    def unusable_twin(self, day: date, weights_sha256: str) -> SnapshotRecord | None:
        """An unusable snapshot of `day` whose weights have this checksum (a retrain that reproduced it)."""
        for record in self.for_partition(day):
            if record.weights_sha256 == weights_sha256 and not self.is_usable(record.snapshot_id):
                return record
        return None

    def get(self, snapshot_id: str) -> SnapshotRecord | None:
        relative = self._path(snapshot_id)
        if not self.store.exists(relative):
            return None
        return SnapshotRecord.model_validate(self.store.read_json(relative, what=f"registry record {snapshot_id}"))

    def status(self, snapshot_id: str | None) -> str | None:
        """The snapshot's status; None for no snapshot or one the registry never saw."""
        if not snapshot_id:
            return None
        record = self.get(snapshot_id)
        return record.status if record else None

    def is_usable(self, snapshot_id: str | None) -> bool:
        return self.status(snapshot_id) not in UNUSABLE

    def for_partition(self, day: date) -> list[SnapshotRecord]:
        records = [
            SnapshotRecord.model_validate(self.store.read_json(path, what="registry record"))
            for path in self.store.list(f"{self.ROOT}/{day.isoformat()}")
            if path.endswith(".json")
        ]
        return sorted(records, key=lambda r: (r.attempt, r.created_at))

    def all(self) -> list[SnapshotRecord]:
        days = [p.rsplit("/", 1)[-1] for p in self.store.list(self.ROOT)]
        return [r for d in sorted(days) for r in self.for_partition(date.fromisoformat(d))]

    def attempts(self, day: date) -> int:
        return len(self.for_partition(day))

    def mark_bad(self, snapshot_id: str, reason: str, detected_by: str) -> SnapshotRecord:
        record = self.get(snapshot_id)
        if record is None:
            raise KeyError(f"teacher snapshot {snapshot_id} is not in the registry")
        if record.status == "bad":
            return record  # idempotent: the first detection's time and reason stay
        updated = record.model_copy(update={
            "status": "bad", "reason": reason, "detected_at": datetime.now(UTC), "detected_by": detected_by,
        })
        self.register(updated)
        return updated
