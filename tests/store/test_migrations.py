"""Migrations: empty -> head, older revisions (with data) -> head, models == migrations, stale schema refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from gradtrace.schema import Batch, RunInfo, StepRecord, VariableInfo, VarStep
from gradtrace.store import (
    SchemaOutOfDate,
    Store,
    _ingest,
    _layers,
    _migrate,
    make_engine,
    open_store,
)
from gradtrace.store import models as m
from gradtrace.store.models import Base
from sqlalchemy import inspect, select

NAN = float("nan")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with nothing in it (a fresh PostgreSQL database per test)."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "empty.db")
    return str(request.getfixturevalue("pg_databases").create())


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    return list(diff)


def test_upgrade_empty_database_matches_models(empty_url: str) -> None:
    store = open_store(empty_url, check_schema=False)
    assert store.schema_revision() == (None, _migrate.head_revision())
    assert store.upgrade() == (None, _migrate.head_revision())
    assert store.upgrade() == (_migrate.head_revision(), _migrate.head_revision())  # idempotent
    store.close()
    assert _diff(empty_url) == []


def test_upgrade_from_0001_keeps_data(empty_url: str) -> None:
    store = open_store(empty_url, check_schema=False)
    store.upgrade("0001")
    assert "ix_runs_project_started" not in {i["name"] for i in inspect(store.engine).get_indexes("runs")}
    _write_at_0002(empty_url)  # 0002 only added an index: the same rows
    with pytest.raises(SchemaOutOfDate):
        store.verify_schema()
    assert store.upgrade() == ("0001", _migrate.head_revision())
    store.verify_schema()
    assert "ix_runs_project_started" in {i["name"] for i in inspect(store.engine).get_indexes("runs")}
    rec = next(store.steps("old"))
    assert rec["loss"] == 1.0 and rec["vars"][0]["norm"] == 0.0
    store.close()
    assert _diff(empty_url) == []


def _layer_sums(store: Store, key: int) -> dict[tuple[int, int], tuple[float | None, ...]]:
    """(layer, step) -> (grad_sq, update_sq, weight_sq, state_sq) of run ``key``; None = nothing."""
    t = m.LayerStep.__table__
    out = {}
    with store.engine.connect() as c:
        for row in c.execute(select(t.c.step, *[t.c[k] for k in _layers.SUMS]).where(t.c.run_id == key)):
            for g in range(3):
                out[(g, row[0])] = tuple(None if math.isnan(x := float(_layers.decode(b, 3)[g])) else x
                                         for b in row[1:])
    return out


def _write_at_0002(url: str) -> int:
    """Rows as a gradtrace at revision 0002 wrote them (no frozen column, no layer_steps)."""
    import sqlalchemy as sa

    engine = make_engine(url)
    md = sa.MetaData()
    md.reflect(engine)
    assert "layer_steps" not in md.tables and "frozen" not in md.tables["steps"].c
    t = md.tables
    with engine.begin() as c:
        pid = c.execute(t["projects"].insert().values(name="default", created_at=sa.func.now())).inserted_primary_key[0]
        key = c.execute(t["runs"].insert().values(
            uid="old", project_id=pid, name="old", status="finished", started_at=sa.func.now(), revision=0,
            num_steps=3, partial=False, meta={})).inserted_primary_key[0]
        c.execute(t["variables"].insert(), [
            dict(run_id=key, idx=i, name=f"d{i // 2}/w{i}", shape=[2], dtype="float32", trainable=i < 4,
                 layer=f"d{i // 2}", layer_class="Dense", layer_index=i // 2) for i in range(5)])
        c.execute(t["layers"].insert(), [
            dict(run_id=key, idx=j, name=f"d{j}", class_name="Dense", training_dependent=False) for j in range(3)])
        c.execute(t["steps"].insert(), [dict(run_id=key, step=s, loss=1.0) for s in range(3)])
        # var_steps has not changed since 0001: the model's FloatND encodes NaN for SQLite
        c.execute(m.VarStep.__table__.insert(), [
            dict(run_id=key, step=s, v=v, grad=True, norm=NAN if (s, v) == (1, 0) else float(s + v),
                 update_norm=0.1, weight_norm=2.0, nonfinite=int((s, v) == (1, 0)))
            for s in range(3) for v in range(4)])
        c.execute(t["state_steps"].insert(), [dict(run_id=key, step=s, v=4, changed=True, delta_norm=3.0, rng=False)
                                              for s in range(3)])
    engine.dispose()
    return int(key)


def test_migration_from_0002_fills_layer_steps_and_keeps_data(empty_url: str) -> None:
    store = open_store(empty_url, check_schema=False)
    store.upgrade("0002")
    key = _write_at_0002(empty_url)
    assert store.upgrade() == ("0002", _migrate.head_revision())
    store.verify_schema()
    recs = list(store.steps("old"))
    assert [r["frozen"] for r in recs] == [None, None, None]  # not recorded before 0003
    assert math.isnan(recs[1]["vars"][0]["norm"])
    by = _layer_sums(store, key)
    assert set(by) == {(g, s) for g in range(3) for s in range(3)}
    assert by[(0, 1)][0] == pytest.approx(2.0**2)  # v0's NaN left out; v1 at step 1: 1 + 1
    assert by[(1, 2)][0] == pytest.approx(4.0**2 + 5.0**2)
    assert by[(1, 0)][1] == pytest.approx(0.02) and by[(1, 0)][2] == pytest.approx(8.0)
    assert by[(2, 0)][3] == pytest.approx(9.0) and by[(2, 0)][0] is None
    # new data after the upgrade goes through the ingest path
    store.ingest(Batch(batch_id="new-1", run=RunInfo(run_id="new", name="new", variables=[VariableInfo(index=i, name=f"d/w{i}") for i in range(2)]),
                       steps=[StepRecord(step=0, frozen=["bn"], vars=[VarStep(v=0, norm=1.0)])]))
    assert [r["frozen"] for r in store.steps("new", fields=["frozen"])] == [["bn"]]
    store.close()
    assert _diff(empty_url) == []


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = "sqlite:///" + str(tmp_path / "d.db")
    store = open_store(url)
    store.downgrade("base")
    assert store.schema_revision()[0] is None
    assert inspect(store.engine).get_table_names() == ["alembic_version"]
    store.upgrade()
    assert _diff(url) == []


@pytest.mark.postgres
def test_server_database_out_of_date_is_refused_with_the_command(pg_databases) -> None:  # type: ignore[no-untyped-def]
    url = pg_databases.create()
    with pytest.raises(SchemaOutOfDate) as e:
        open_store(url)
    assert "gradtrace db upgrade --db postgresql" in str(e.value)
    store = open_store(url, check_schema=False)
    store.upgrade("0001")
    with pytest.raises(SchemaOutOfDate, match="at revision 0001"):
        open_store(url)
    store.upgrade()
    open_store(url).close()


def test_sqlite_file_is_created_and_upgraded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "embedded.db"
    s = open_store(str(path))  # a bare path, parent folder missing
    assert path.exists() and s.schema_revision()[0] == _migrate.head_revision()
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    s.downgrade("0001")
    s.close()
    s = open_store(f"sqlite:///{path}")  # embedded mode migrates a file at an older revision
    assert s.schema_revision()[0] == _migrate.head_revision()
    s.close()


def test_migrations_ship_as_a_package() -> None:
    d = _migrate.migrations_dir()
    assert (d / "env.py").is_file() and (d / "__init__.py").is_file()
    assert (d / "versions" / "__init__.py").is_file()


def test_bulk_column_lists_cover_the_tables() -> None:
    from gradtrace.store.models import StateStep, VarStep

    assert _ingest._VAR_COLS == tuple(c.name for c in VarStep.__table__.columns)
    assert _ingest._STATE_COLS == tuple(c.name for c in StateStep.__table__.columns)
    assert ("run_id", "step", *_layers.SUMS) == tuple(c.name for c in m.LayerStep.__table__.columns)
    assert set(_layers.VAR_INPUT) <= set(_ingest._VAR_COLS) and set(_layers.STATE_INPUT) <= set(_ingest._STATE_COLS)
