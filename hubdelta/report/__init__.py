"""hubdelta.report: the report of new models and clusters (``hubdelta report`` and the nightly job).

Imports nothing heavy: scikit-learn and matplotlib (the ``report`` extra) are imported by the functions that
need them, so the query path never loads them.
"""
