"""Files only, no Dask: the ``Source`` base and one reader per format (``npy_reader``,
``zarr_reader``, ``parquet_reader``) behind one registry (``registry.open_source``), the
chunks blocks share in one process (``chunk_cache``), the model store (``model_store``), the
one writer of outputs (``writer``), the one owner of an output's life cycle (``lifecycle``:
create, resume rules, complete, remove), and a count of chunk decodes for tests and
benchmarks (``decodes``).
"""
