"""The README says what the code does: catalogue, configuration, public API, CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block(name: str) -> str:
    m = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", README, re.S)
    assert m, f"README has no {name} block"
    return m.group(1).strip()


def test_readme_catalogue_is_the_code_catalogue() -> None:
    from gradtrace.compare import as_markdown

    assert _block("catalogue") == as_markdown().strip(), (
        "README's finding catalogue is stale: paste `gradtrace compare --catalogue` between the markers"
    )


def test_every_config_variable_is_documented() -> None:
    from gradtrace import _config

    names = {v for k, v in vars(_config).items() if k.startswith("GRADTRACE_") and isinstance(v, str)}
    assert names, "no GRADTRACE_* constants found"
    missing = sorted(n for n in names if n not in README)
    assert not missing, f"README does not document {missing}"


def test_public_api_is_small_and_exported() -> None:
    import gradtrace

    assert sorted(gradtrace.__all__) == ["Run", "__version__", "trace"]
    for name in gradtrace.__all__:
        assert hasattr(gradtrace, name)


def test_import_is_light() -> None:
    code = (
        "import sys, gradtrace, gradtrace.cli, gradtrace.store;"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras', 'fastapi', 'uvicorn') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing gradtrace pulled in {out.stdout.strip()}"


def test_every_cli_command_in_readme_exists() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gradtrace", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = set(re.findall(r"^    (\w+)\s", out, re.M))
    fenced = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", README, re.S))
    documented = set(re.findall(r"^(?:\$ )?gradtrace (\w+)", fenced, re.M))
    assert documented, "README documents no commands"
    assert documented <= commands, f"README documents unknown commands {documented - commands}"
    assert commands <= documented, f"README does not document {commands - documented}"
