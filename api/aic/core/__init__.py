"""The vocabulary every other package shares: enums, domain errors, settings, the model spec, wire schemas.

Owns: job statuses (and which of them are live), priorities, stages, error codes, the domain errors that
know their HTTP status without importing a web framework, the settings dataclasses, ``ModelSpec``, the
API's msgspec Structs, timestamps and the retry policy as data.

May import: nothing of ours, and no I/O: no Redis, no network, no files (``settings`` reads the environment).
"""
