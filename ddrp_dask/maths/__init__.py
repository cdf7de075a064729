"""The maths of ddrp: numpy and scipy only, no files and no Dask.

Statistics (``stats``) and their folds (``folds``), linear algebra (``linalg``), random
draws (``draws``); the methods, one module each, and their registry (``methods``); what
``auto`` is built from: shrinkage (``shrinkage``), the folded basis (``basis``), the
allocation of the columns (``allocation``) and the cross-fit (``crossfit``); the build
(``build``), the shared predicted-MSE formulas (``predict``) and the choice of K
(``choose``); projection of a block (``project``), top-N merges (``topn``), evaluation
metrics (``metrics``), the W prior's fits (``prior``), quantized layouts (``quantize``) and
the model's data classes (``model``). Each function works on numpy arrays and can be tested
without a cluster.
"""
