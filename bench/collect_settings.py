"""Settings of the benchmark's `manage.py collect` process: the project's own,
read as they are (the benchmark sets DEBUG on, so that the sandbox's loopback
http:// Base URL passes its startup check), then with DEBUG off, as a
deployment runs the engine.

With DEBUG on, Django's cursor logs every query and, on SQLite, formats its
parameters with one more SQL query (`SELECT QUOTE(?), ...`): per request (the
quota ledger) and per commit (the checkpoint). A deployment does none of it,
so a figure that includes it measures the development setting, not the
engine.
"""

from knowbe4sumo.settings import *  # noqa: F403

DEBUG = False
