"""ddrp command-line front end (thin: parses options, calls ddrp_dask)."""

import multiprocessing
import signal
import threading

# A process that multiprocessing starts from ddrp (a LocalCluster's worker: the spawn
# imports the ddrp command's main module first) ignores SIGINT from here on. Ctrl-C in a
# terminal reaches the whole foreground process group; the ddrp process handles it and
# closes the cluster, and a worker that took it would die printing tracebacks.
if getattr(multiprocessing.current_process(), "_inheriting", False) \
        and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
