"""A Dask worker preload of ddrp's local cluster: the worker process ignores SIGINT.

Ctrl-C in a terminal reaches every process of the foreground group, the LocalCluster's
worker processes included; the ddrp process handles it (and closes the cluster), and a
worker that took it would only die printing tracebacks. Workers started with the cluster
inherit the ignoring from the ddrp process; this covers those a nanny restarts.
"""

from __future__ import annotations

import signal
import threading

if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
