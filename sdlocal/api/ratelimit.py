"""Rate limits on the API's generating routes, per client: its API token's name, else its address.

``--api-rate-limit`` takes the ``limits`` library's notation (``30/minute``, ``10/minute;200/hour``). Unset, it is
off on a server only this machine can reach and ``DEFAULT_SHARED_LIMIT`` with ``--listen`` or ``--share`` (where
strangers may call it); ``off`` turns it off everywhere. Only the routes that run the GPU count (txt2img, img2img,
extras, the scripts' runs): polling ``/progress`` twice a second must never use up a client's allowance.

The counts live in memory on one machine and in Redis in the cluster (``storage`` is a ``limits`` storage URI),
so every ingress replica shares one count per client. Past a limit the answer is 429 with Retry-After; a Redis
that cannot be reached lets the request through (logged), because a limit is a guard, not a dependency.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from fastapi import Request

from sdlocal.api.sdapi import ApiError

log = logging.getLogger(__name__)

DEFAULT_SHARED_LIMIT = "60/minute"
OFF = "off"
LIMITED_PATHS = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image",
                 "/sdapi/v1/extra-batch-images")
NAMESPACE = "sdlocal"


def effective_limits(settings: Any) -> str:
    """The limits in force: the setting, else the default for a server others can reach, else "" (off)."""
    value = (getattr(settings, "api_rate_limit", "") or "").strip()
    if value.lower() == OFF:
        return ""
    if value:
        return value
    return DEFAULT_SHARED_LIMIT if (settings.listen or settings.share) else ""


class RateLimiter:
    """A FastAPI dependency: 429 with Retry-After once a client has used its allowance on a generating route."""

    def __init__(self, limits_text: str, storage: str = "memory://") -> None:
        from limits import parse_many, strategies
        from limits import storage as storages

        self.items = parse_many(limits_text)
        self.text = limits_text
        self.storage_uri = storage
        self.limiter = strategies.MovingWindowRateLimiter(storages.storage_from_string(storage))
        self.refused = 0

    def client_key(self, request: Request) -> str:
        """The client's bucket: its token's name when it sent one (set by the auth check), else its address."""
        token = getattr(request.state, "api_token", None)
        if token:
            return f"token:{token}"
        host = request.client.host if request.client is not None else "unknown"
        return f"addr:{host}"

    def __call__(self, request: Request) -> None:
        route = getattr(request.scope.get("route"), "path", None) or request.url.path  # the same under a prefix
        if request.method != "POST" or route not in LIMITED_PATHS:
            return
        key = self.client_key(request)
        try:
            blocked = [item for item in self.items if not self.limiter.test(item, NAMESPACE, key)]
            if not blocked:
                for item in self.items:
                    self.limiter.hit(item, NAMESPACE, key)
                return
            reset = max(self.limiter.get_window_stats(item, NAMESPACE, key).reset_time for item in blocked)
        except Exception as exc:  # noqa: BLE001 - a storage that is away (Redis) must not fail the request
            log.warning("rate limit: storage %s unavailable (%s); request let through", self.storage_uri, exc)
            return
        self.refused += 1
        wait = max(1, math.ceil(reset - time.time()))
        who = key.split(":", 1)[1]
        raise ApiError(429, "Too Many Requests", f"rate limit: {who} is over the limit of {blocked[0]} generation "
                       f"requests; try again in {wait} s (the server's limits: {self.text}).",
                       headers={"Retry-After": str(wait)}, limit=self.text)
