#!/usr/bin/env python3
"""Run the `bqemulator` 1.4.0 BigQuery emulator with the three patches of docs/design.md §9.

Usage (same arguments as the `bqemulator` console script):

    HOME=<scratch dir> python launcher.py start --ephemeral --project test-project
        --rest-port 9050 --grpc-port 9060 --log-level warning

`scripts/dev-up` starts it this way from the venv in `.dev/venv`. The patches
target bqemulator 1.4.0 exactly (see requirements.txt and constraints.txt):
the version is checked and each patch checks that the thing it replaces still
exists, so an upgrade fails loudly at start-up instead of running unpatched.
Besides the patches, the launcher turns off bqemulator's attempt to download
DuckDB's `avro` extension at start-up (see `main`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

EXPECTED_VERSION = "1.4.0"


def _require_attr(owner: object, name: str) -> None:
    """Fail at start-up if a patch target is missing (bqemulator changed)."""
    if not hasattr(owner, name):
        sys.exit(
            f"launcher.py: expected {owner!r} to have attribute {name!r} "
            f"(bqemulator {EXPECTED_VERSION}), found none; the patches need "
            "updating for this bqemulator version"
        )


def _patch_no_spatial() -> None:
    """Patch 1: skip DuckDB's `spatial` extension.

    Why: `DuckDBEngine.start()` runs `INSTALL spatial; LOAD spatial`, and
    INSTALL downloads the extension from extensions.duckdb.org. Our machines
    have no internet, so start-up fails. We do not use GEOGRAPHY; with this
    no-op every other type works and ST_* functions are simply unavailable.
    """
    from bqemulator.storage.engine import DuckDBEngine

    _require_attr(DuckDBEngine, "_load_spatial")

    def _load_spatial(self: DuckDBEngine) -> None:  # noqa: ARG001
        return None

    DuckDBEngine._load_spatial = _load_spatial  # type: ignore[method-assign]


def _strip_nulls(value: Any) -> Any:
    """Return `value` with every object member whose value is JSON null removed.

    Recurses into objects and arrays; null *elements* of arrays are kept
    (only members are stripped), so positional data is never shifted.
    """
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _patch_strip_json_nulls() -> None:
    """Patch 2: drop JSON `null` members from every request body.

    Why: bqemulator's handlers read optional members as
    `body.get("maxResults", default)`; an explicit `null` bypasses the default,
    and the None then fails (e.g. `"maxResults": null` on jobs.query raises
    TypeError in a comparison, `"schema": null` or `"clustering": null` on
    tables.insert likewise), so the server answers 500 "internal error".
    Clients that serialize unset optional fields as null hit this. In the
    BigQuery REST API an absent member and a null member mean the same, so
    removing nulls is faithful. Both bqemulator's handlers (`await
    request.json()`) and FastAPI's body parsing go through
    `starlette.requests.Request.json`, so wrapping it covers every route.
    """
    from starlette.requests import Request

    _require_attr(Request, "json")
    original_json = Request.json

    async def json_without_nulls(self: Request) -> Any:
        stripped = _strip_nulls(await original_json(self))
        # Starlette caches the parsed body in `_json`; store the stripped form
        # so a second call returns the same object (stripping is idempotent).
        self._json = stripped
        return stripped

    Request.json = json_without_nulls  # type: ignore[method-assign]


def _patch_no_snapshot_copies() -> None:
    """Patch 3: stop copying the whole table after every write.

    Why: `SnapshotManager.record_change` is called after every insertAll,
    Storage Write append, load job and DML statement. Upstream it calls
    `capture()`, which runs `CREATE TABLE <snapshot> AS SELECT * FROM <table>`
    (time-travel support) and then publishes `TableDataChanged`. The copy
    makes each write O(table size), so streaming throughput decays as the
    table grows. We keep only the event publication, which is what
    invalidates the query cache and marks dependent materialized views stale.
    Callers ignore the return value; `None` is what upstream returns when no
    snapshot was taken. Consequence: `FOR SYSTEM_TIME AS OF` finds no
    snapshot and reads the live table. `CREATE SNAPSHOT TABLE` calls
    `capture()` directly and is unaffected.
    """
    from bqemulator.domain.events import TableDataChanged
    from bqemulator.versioning.snapshots import SnapshotManager

    _require_attr(SnapshotManager, "record_change")
    _require_attr(SnapshotManager, "capture")

    def record_change(
        self: SnapshotManager,
        project_id: str,
        dataset_id: str,
        table_id: str,
    ) -> None:
        self._events.publish(TableDataChanged(project_id, dataset_id, table_id))

    SnapshotManager.record_change = record_change  # type: ignore[method-assign,assignment]


def main() -> None:
    """Check the version, apply the patches, then hand over to bqemulator's CLI."""
    import bqemulator
    import bqemulator.cli

    if bqemulator.__version__ != EXPECTED_VERSION:
        sys.exit(
            f"launcher.py: expected bqemulator {EXPECTED_VERSION}, found "
            f"{bqemulator.__version__}; install scripts/bq-emulator/requirements.txt"
        )

    # Not one of the three patches, a setting: at boot bqemulator also tries
    # `INSTALL avro` (best effort, for Avro load/extract jobs), another
    # download that can only fail or wait here. Off unless the caller set it.
    os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")

    _patch_no_spatial()
    _patch_strip_json_nulls()
    _patch_no_snapshot_copies()

    bqemulator.cli.main()


if __name__ == "__main__":
    main()
