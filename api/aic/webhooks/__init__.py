"""Signed webhooks to a job's ``callback_url``, per the Standard Webhooks spec.

Owns: the message (payload, signatures, retry schedule: ``message``), sending one attempt without becoming an
SSRF proxy (``sender``) and the delivery worker that runs inside every dispatcher process (``worker``).

May import: ``aic.core`` and ``aic.store`` (webhook state lives in ``aic.store.webhooks``).
"""
