"""The record format's two wire forms: version 1 (records) and 2 (columns, what dumps writes)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from gradtrace import schema
from pydantic import ValidationError

NAN, INF = float("nan"), float("inf")


def _batch() -> schema.Batch:
    return schema.Batch(
        batch_id="b1",
        run=schema.RunInfo(run_id="r1", name="forms"),
        steps=[
            schema.StepRecord(step=0, loss=NAN, vars=[
                schema.VarStep(v=0, norm=INF, sketch=[0.5, -1.0], applied=True, nonfinite=2),
                schema.VarStep(v=2, grad=False),
            ], state=[schema.StateStep(v=5, changed=True, delta_norm=-INF)]),
            schema.StepRecord(step=1, n_grad=2),  # a light step: no variables listed
        ],
    )


def test_dumps_writes_columns_and_leaves_out_default_columns() -> None:
    doc = json.loads(schema.dumps(_batch()))
    assert doc["schema_version"] == 2
    assert doc["steps"][0]["vars"] == {
        "v": [0, 2], "grad": [True, False], "norm": ["Infinity", None], "nonfinite": [2, None],
        "sketch": [[0.5, -1.0], None], "applied": [True, None],
    }
    assert doc["steps"][0]["state"] == {"v": [5], "changed": [True], "delta_norm": ["-Infinity"]}
    assert doc["steps"][1]["vars"] == [] and doc["steps"][0]["loss"] == "NaN"


@pytest.mark.parametrize("version", [1, 2])
def test_both_versions_round_trip_to_the_same_records(version: int) -> None:
    original = _batch()
    text = schema.dumps(original, version=version)
    assert json.loads(text)["schema_version"] == version
    back = schema.Batch.model_validate_json(text)
    assert isinstance(back.steps[0].vars, list if version == 1 else schema.VarColumns)
    for a, b in zip(original.steps, back.steps, strict=True):
        assert len(a.vars) == len(b.vars) and len(a.state) == len(b.state)
        for x, y in zip([*a.vars, *a.state], [*b.vars, *b.state], strict=True):
            assert type(x) is type(y)
            for k, vx in x.__dict__.items():
                vy = getattr(y, k)
                assert vx == vy or (isinstance(vx, float) and math.isnan(vx) and math.isnan(vy)), k
    # and back down: a column-form batch written as version 1 is version 1
    again = schema.Batch.model_validate_json(schema.dumps(back, version=1))
    assert isinstance(again.steps[0].vars, list) and again.steps[0].vars[0].norm == INF


def test_python_dump_gives_records_in_both_forms_without_warnings() -> None:
    columns = schema.Batch.model_validate_json(schema.dumps(_batch()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for b in (_batch(), columns):
            rec = b.model_dump()["steps"][0]
            assert [v["v"] for v in rec["vars"]] == [0, 2] and rec["vars"][0]["sketch"] == [0.5, -1.0]
            assert rec["state"][0]["delta_norm"] == -INF
            assert schema.Batch.model_validate(b.model_dump()).steps[0].vars[1].grad is False


def test_columns_read_as_a_sequence_of_records() -> None:
    cols = schema.Batch.model_validate_json(schema.dumps(_batch())).steps[0].vars
    assert isinstance(cols, schema.VarColumns) and len(cols) == 2
    assert [v.v for v in cols] == [0, 2] and cols[1].grad is False and cols[0].norm == INF
    assert cols.column("mean") is None and cols.column("norm") == [INF, None]


@pytest.mark.parametrize(("doc", "where"), [
    ({"v": [0, 1], "norm": [1.0]}, "norm: 1 values for 2 variables"),
    ({"v": [0], "changed": [True]}, "changed"),  # not a VarStep field
    ({"norm": [1.0]}, "v"),
])
def test_bad_columns_name_the_field(doc: dict, where: str) -> None:
    with pytest.raises(ValidationError) as info:
        schema.StepRecord.model_validate({"step": 0, "vars": doc})
    assert where in str(info.value)


def test_unknown_version_and_version_1_with_columns_are_refused() -> None:
    doc = json.loads(schema.dumps(_batch()))
    with pytest.raises(ValidationError, match="schema_version"):
        schema.Batch.model_validate({**doc, "schema_version": 3})
    with pytest.raises(ValidationError, match="columns need schema_version 2"):
        schema.Batch.model_validate({**doc, "schema_version": 1})
    with pytest.raises(ValueError, match="schema version 3"):
        schema.dumps(_batch(), version=3)
