"""The ModelVersion operator (kopf): ``kubectl apply`` a ModelVersion and it becomes a loaded Triton model.

Owns: the spec as typed data (``spec``), its pure rendering into a model (``render``), artifacts fetched and
verified (``artifacts``), the Triton fleet's repository API (``triton``), the reconcile shared by the kopf
handlers and ``aic models apply`` (``reconcile``, ``handlers``, ``local``), and the status it reports.

May import: ``aic.core``, ``aic.store`` and ``aic.modelrepo``; nothing else of ``aic`` (only ``aic.cli`` imports
this package). Its import name is ``aic_operator``: the standard library owns ``operator``.
"""
