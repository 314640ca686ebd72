"""Token buckets per key, in this process's memory: the heartbeat rate limit per node id.

Each key's bucket holds up to `burst` tokens and refills at `per_second`; a request takes one,
and without one it is refused with the seconds until the next token (sent as Retry-After).
Buckets of keys not seen for a while are forgotten once more than `max_keys` are tracked (an
idle bucket is full, so forgetting it changes nothing). Several apiserver replicas each keep
their own buckets.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_KEYS = 100_000


class TokenBuckets:
    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError("a token bucket needs burst >= 1 and a rate above 0")
        self.burst = burst
        self.per_second = per_second
        self._max_keys = max_keys
        self._clock = clock
        # key -> (tokens, monotonic time of that count), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float | None:
        """Take a token for `key`: None when there was one, else the seconds until there is."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return None
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        return (1.0 - tokens) / self.per_second

    def give_back(self, key: str) -> None:
        """Return the token just taken for `key`: the request it admitted goes another way, which
        takes its own."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets[key] = (min(float(self.burst), bucket[0] + 1.0), bucket[1])

    def __len__(self) -> int:
        return len(self._buckets)
