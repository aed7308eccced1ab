"""The routes, one controller per noun: jobs (submit, status, live progress, result, cancel), account (tokens,
models), admin, webhooks and health. Bodies stay thin: they call the submitter, ``aic.live`` or a store."""
