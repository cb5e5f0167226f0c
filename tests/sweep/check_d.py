"""Check several scripts of :mod:`scripts_d` in one fresh process (each untraced, then traced,
then compared by :func:`check_c.compare`): what tf-keras (``TF_USE_LEGACY_KERAS=1``) and two
logical CPU devices need, and what keeps Keras 3's compiled models out of the pytest process,
paid once for a group of scripts (see :mod:`groups`).

``python -m tests.sweep.check_d DB [--two-cpus] SCRIPT...`` prints one ``PROBLEMS name [...]``
JSON line per script.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from . import groups, scripts_d

    if "--two-cpus" in argv:
        scripts_d.two_cpus()  # before TensorFlow initialises its devices
    return groups.main(scripts_d, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
