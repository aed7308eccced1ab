"""Live progress for clients: one pub/sub connection per API process fanned out to every local listener
(WebSocket, SSE, ``Prefer: wait``), and following a job until it ends.

Owns: the event hub (``hub``) and ``follow`` / ``wait_until_done`` (``follow``).

May import: ``aic.core`` and ``aic.store`` (the subscription itself is ``aic.store.events``).
"""
