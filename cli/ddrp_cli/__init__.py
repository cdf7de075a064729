"""ddrp command-line front end (thin: parses options, calls ddrp_dask)."""
