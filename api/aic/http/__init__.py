"""The HTTP API (Litestar): the only package that imports the web framework.

Owns: the app and its wiring (``app``), authentication and tokens, upload parsing and validation, the submit
flow (``submissions``), rate-limit middleware, the one error mapper for HTTP and WebSocket (``errors``,
``middleware``), the OpenAPI description and the routes, one controller per noun (``controllers``).

May import: ``aic.core``, ``aic.store`` and ``aic.live``; never ``aic.dispatch`` or ``aic.webhooks``.
"""
