"""The device check of issue 13: figures against the issue's targets, then ``pytest -m cuda``.

Run from the repository root, under a 600 s wall-clock limit:
``PYTHONUNBUFFERED=1 PYTHONPATH=. python3 tools/device_check.py --out device_check.txt``
(``--quick`` for a one-minute subset, ``--budget``/``--limit`` to move its time limits,
``--device cpu --quick --no-tests`` for a smoke test anywhere). See
:mod:`sharp.perf.device`.
"""

import sys

from sharp.perf.device import main

if __name__ == "__main__":
    sys.exit(main())
