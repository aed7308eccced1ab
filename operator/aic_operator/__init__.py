"""The ModelVersion operator (kopf). Placeholder until the operator issue lands.

Its import name is ``aic_operator``: the standard library owns ``operator``.
"""
