"""The device check of issue 13: figures against the issue's targets, then ``pytest -m cuda``.

Run from the repository root: ``PYTHONPATH=. python3 tools/device_check.py [--quick]``
(``--device cpu --quick --no-tests`` for a smoke test anywhere). See
:mod:`sharp.perf.device`.
"""

import sys

from sharp.perf.device import main

if __name__ == "__main__":
    sys.exit(main())
