"""The progress-protocol helper's old name: ``import runyard_report`` is
:mod:`runyard.report` (``python/runyard/report.py``), the very same module object.

Kept so scripts written against it run unchanged, with ``python/`` on ``sys.path`` or
the package installed. Like :mod:`runyard.report` it needs the standard library only:
importing it imports no HTTP library. New code writes ``from runyard import report``.
"""

import sys

from runyard import report as _report

# The same module, not a copy of its names: patching ``runyard_report.X`` patches
# the helper itself, and ``runyard_report.Reporter is runyard.report.Reporter``.
sys.modules[__name__] = _report
