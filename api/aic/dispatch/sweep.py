"""The periodic sweep of stray upload objects, beside the dispatcher (only with ``OBJECT_STORE_URL``)."""

from __future__ import annotations

import asyncio
import logging

from aic.core.errors import StoreError
from aic.core.settings import ObjectStoreSettings
from aic.store.transitions import JobTransitions

log = logging.getLogger("aic.dispatcher")


async def sweep_uploads(jobs: JobTransitions, settings: ObjectStoreSettings) -> None:
    """Every ``upload_sweep_interval_s`` one dispatcher of all deletes the uploads no job needs any more (older than
    ``upload_stray_age_s``); a store away skips a round."""
    while True:
        try:
            deleted = await jobs.sweep_uploads(settings.upload_sweep_interval_s, settings.upload_stray_age_s)
            if deleted:
                log.info("swept %d stray uploads", deleted)
        except StoreError as exc:
            log.warning("upload sweep skipped: %s", exc)
        await asyncio.sleep(settings.upload_sweep_interval_s)
