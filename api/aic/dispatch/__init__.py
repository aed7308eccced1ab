"""Dispatchers: from the queue through Triton to a stored result.

Owns: the dispatcher loop and its batches (``dispatcher``), taking entries from the priority queues by weight
with leases renewed and released (``intake``), choosing each job's model from the published routes
(``models``), decoding and preprocessing images into a model's input (``preprocess``) and how failed Triton
calls are retried (``retry``).

May import: ``aic.core``, ``aic.store`` and ``aic.triton``; never ``aic.http`` or ``aic.webhooks`` (the
process runs the webhook worker beside it, wired by ``aic.cli``).
"""
