"""Import Lightning when the tests are collected, as the rest of the suite does.

`slamming.cli` imports Lightning only when a Lightning command runs. Lightning's log handler binds
the ``sys.stderr`` of the moment it is imported; imported inside a test, that is the test's
captured stream, closed after it, and the next test's Lightning log lines fail with a traceback.
"""

import slamming.cli.lightning  # noqa: F401
