"""The usage examples in the module docstrings run."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from gradtrace import _config, _export, _sinks


@pytest.mark.parametrize("module", [_config, _sinks, _export], ids=lambda m: m.__name__)
def test_docstring_examples(module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
