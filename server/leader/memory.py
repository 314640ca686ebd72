"""One apiserver: it leads."""

from __future__ import annotations

from server.leader.base import LeaderLease


class SoleLeader(LeaderLease):
    @property
    def held(self) -> bool:
        return True

    async def start(self) -> None:
        self._changed(True)
