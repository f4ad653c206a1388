"""The running service's shared state: settings, database, resolved secrets, components."""

from __future__ import annotations

from dataclasses import dataclass, field

from metadata_relay.component import Component
from metadata_relay.config import Settings
from metadata_relay.storage.sqlite import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    token_secret: str
    turn_secret: str
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def turn_secrets(self) -> tuple[str, ...]:
        """Current TURN secret first, then older ones still accepted during rotation."""
        return (self.turn_secret, *(s for s in self.settings.TURN_SECRETS if s != self.turn_secret))

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        db = await Database.open(settings.SQLITE_DB_PATH)
        try:
            token_secret = await db.secret("RELAY_TOKEN_SECRET", settings.RELAY_TOKEN_SECRET)
            turn_secret = await db.secret("TURN_SECRET", settings.TURN_SECRET)
        except BaseException:
            await db.close()
            raise
        return cls(settings=settings, db=db, token_secret=token_secret, turn_secret=turn_secret)
