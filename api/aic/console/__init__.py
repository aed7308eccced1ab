"""``aic classify`` and ``aic jobs``: the job API for people at a terminal, over ``aic.client``.

Owns: where the URL and key come from (flags, environment, config file), the exit codes scripts rely on,
and the terminal presentation (rich progress bars and tables, or JSON lines when piped).

May import: ``aic.client`` and ``aic.core`` only; never the server's packages.
"""
