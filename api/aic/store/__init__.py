"""Everything the service keeps in Redis, behind typed methods: the only package that touches Redis.

Owns: every key name and TTL (``keys``), the connection pool (``connection``), the Lua scripts (``scripts``,
``lua/``), the job record and its transitions (``jobs``), the queue streams, admission and dead letters
(``queue``), model routes (``routes``), idempotency claims, rate-limit buckets, webhook state, dispatcher
heartbeats (``workers``) and the pub/sub side of live progress (``events``). Callers get values, typed
records or domain errors from ``aic.core.errors``; none of them formats a key or reads a Lua reply.

May import: ``aic.core`` and redis-py.
"""
