"""Check several scripts of :mod:`scripts_e` in one fresh process (each untraced, then traced,
then compared by :func:`check_c.compare`): what tf-keras (``TF_USE_LEGACY_KERAS=1``) needs, a
process of its own, paid once for a group of scripts.

``python -m tests.sweep.check_e DB SCRIPT...`` prints one ``PROBLEMS name [...]`` JSON line
per script.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    from . import check_c, scripts_e

    url, names = argv[0], [a for a in argv[1:] if not a.startswith("--")]
    for name in names:
        script = getattr(scripts_e, name)
        t0 = time.perf_counter()
        try:
            problems = check_c.check(script, url)
        except Exception as e:  # noqa: BLE001 - reported as the script's problem
            problems = [f"raised {type(e).__name__}: {e}"]
        print(f"PROBLEMS {name} " + json.dumps(problems), flush=True)
        print(f"TIME {name} {time.perf_counter() - t0:.1f}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
