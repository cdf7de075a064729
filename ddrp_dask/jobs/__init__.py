"""One module per command: ``ddrp <cmd>`` is ``jobs/<cmd>.py``, a frozen plan that reads only
metadata and writes nothing (its ``str()`` is ``--dry-run``), then ``.execute()``."""
