"""Files only, no Dask: the ``Source`` base and one reader per format (``npy_reader``,
``zarr_reader``, ``parquet_reader``) behind one registry (``registry.open_source``), the
model store (``model_store``), the one writer of outputs (``writer``) and the one owner of an
output's life cycle (``lifecycle``: create, resume rules, complete, remove), and a count of
chunk decodes for tests and benchmarks (``decodes``).
"""
