"""The maths of ddrp: numpy and scipy only, no files and no Dask.

Statistics (``stats``), linear algebra (``linalg``), random draws (``draws``), the builds
(``build``), every predicted-MSE formula (``predict``) and the choice of K (``choose``),
projection of a block (``project``), top-N merges (``topn``), evaluation metrics
(``metrics``), the W prior's fits (``prior``) and the model's data classes (``model``).
Each function works on numpy arrays and can be tested without a cluster.
"""
