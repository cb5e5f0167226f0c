"""Check several scripts of :mod:`scripts_f` in one fresh process (each untraced, then traced,
then compared by :func:`check_c.compare`): what tf-keras (``TF_USE_LEGACY_KERAS=1``) needs,
and what keeps Keras 3's compiled models out of the pytest process, paid once for a group of
scripts (see :mod:`groups`).

``python -m tests.sweep.check_f DB SCRIPT...`` prints one ``PROBLEMS name [...]`` JSON line
per script; ``python -m tests.sweep.check_f DB --compiled-before-trace`` one for a
MultiOptimizer compiled before the trace starts (scripts_f._multi_optimizer_compiled_before_trace).
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from . import groups, scripts_f

    if "--compiled-before-trace" in argv:
        problems = scripts_f._multi_optimizer_compiled_before_trace(argv[0])
        print("PROBLEMS multi_optimizer_compiled_before_trace " + json.dumps(problems), flush=True)
        return 0
    return groups.main(scripts_f, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
