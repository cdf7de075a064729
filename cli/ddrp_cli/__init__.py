"""ddrp command-line front end (thin: parses options, calls ddrp_dask)."""

import multiprocessing
import signal
import sys
import threading

# A process that multiprocessing starts from ddrp (a LocalCluster's worker: the spawn
# imports the ddrp command's main module first) ignores SIGINT from here on. Ctrl-C in a
# terminal reaches the whole foreground process group; the ddrp process handles it and
# closes the cluster, and a worker that took it would die printing tracebacks.
if getattr(multiprocessing.current_process(), "_inheriting", False) \
        and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
elif threading.current_thread() is threading.main_thread() and any(
        a == "ddrp_cli.main" or a.endswith(("/ddrp", "\\ddrp.exe"))
        for a in getattr(sys, "orig_argv", [])[1:3]):  # the ddrp program, not an importer
    def _interrupted_while_starting(signum: int, frame: object) -> None:
        # Ctrl-C while Python still imports ddrp (about a second): one line, not a traceback
        # of the import; the command's guard puts Python's own handler back
        import os

        sys.stderr.write("ddrp: interrupted while starting; nothing was written\n")
        sys.stderr.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, _interrupted_while_starting)
