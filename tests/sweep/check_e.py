"""Check several scripts of :mod:`scripts_e` in one fresh process (each untraced, then traced,
then compared by :func:`check_c.compare`): what tf-keras (``TF_USE_LEGACY_KERAS=1``) needs,
and what keeps Keras 3's compiled models out of the pytest process, paid once for a group of
scripts (see :mod:`groups`).

``python -m tests.sweep.check_e DB SCRIPT...`` prints one ``PROBLEMS name [...]`` JSON line
per script.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from . import groups, scripts_e

    return groups.main(scripts_e, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
