"""Refresh the generated blocks of README.md (the finding catalogue) from the code.

    .venv/bin/python bench/update_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

from gradtrace.compare import as_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    text = README.read_text(encoding="utf-8")
    block = f"<!-- catalogue:start -->\n{as_markdown().strip()}\n<!-- catalogue:end -->"
    text = re.sub(r"<!-- catalogue:start -->.*?<!-- catalogue:end -->", lambda _: block, text, flags=re.S)
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
