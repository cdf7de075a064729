"""The only part of ddrp that imports dask or distributed.

``compute`` runs graphs (one compute per pass, the fixed reduction tree, progress, the
cluster checks and the local cluster), ``reads`` decodes once on a cluster the chunks two
blocks share, ``passes`` wires pass 1 and pass 2, ``tiles`` the graphs of ``matmul`` and
``evaluate``, and ``arrays`` the estimator's dask-array inputs.
"""
