"""Housekeeping: delete old claims, mark silent instances offline, prune rate-limit state."""

from __future__ import annotations

import asyncio
import time

from metadata_relay.observability import get_logger
from metadata_relay.pairing.service import PairingService
from metadata_relay.pairing.store import PairingStore

log = get_logger("metadata_relay.pairing.cleanup")


async def sweep(svc: PairingService, store: PairingStore) -> dict[str, int]:
    """One pass; returns what it did."""
    now = time.time()
    limits = svc.limits
    deleted = await store.delete_old_claims(now, limits.claim_retention)
    keep = svc.hub.local_instance_ids()
    offline = await store.mark_silent_offline(now, limits.offline_after, keep)
    # Instances still connected here refresh last_seen_at so other readers see them alive.
    for iid in keep:
        await store.seen(iid, now)
    svc.prune()
    if deleted or offline:
        log.info("pairing_cleanup", claims_deleted=deleted, marked_offline=len(offline))
    return {"claims_deleted": deleted, "marked_offline": len(offline)}


async def run_forever(svc: PairingService, store: PairingStore) -> None:
    while True:
        try:
            await sweep(svc, store)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pairing_cleanup_failed")
        await asyncio.sleep(svc.limits.cleanup_interval)
