"""Deliver Samsara webhook events to the product's own webhook handling (issue 14).

Run by bench/run.py in its own process, with the settings of a sync run
(SAMSARA_WEBHOOK_SECRET among them; cwd = the repository under test). It builds the
daemon's HTTP app (``main.create_app``) over a runtime made by ``config.bootstrap``
for the vehicles sync, on the same Redis and REDIS_PREFIX as the sync runs, and posts
each event through Flask's test client: the route, signature check, event-type rule
and Redis marker of the real daemon, without its worker or a socket. The events are
built and signed the way Samsara delivers them (``sandbox.samsara.webhook_event`` and
``signed_delivery``). Prints one JSON line: per event, its type, the HTTP status, the
answer, and the event marker before and after.

    python bench/samsara_event.py VehicleUpdated [RouteStopArrival ...]
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.getcwd())


def main(event_types: list[str]) -> None:
    from config.bootstrap import build_runtime
    from config.settings import load_settings
    from main import Daemon, create_app
    from sandbox.samsara import signed_delivery, webhook_event
    from services.samsara_read import marker_key

    settings = load_settings(dict(os.environ), dotenv_path=None)
    if settings.samsara_webhook_secret is None:
        raise SystemExit("SAMSARA_WEBHOOK_SECRET is not set: the product has no webhook endpoint")
    secret = settings.samsara_webhook_secret.get_secret_value()
    runtime = build_runtime(settings, ("vehicles",))
    client = create_app(Daemon(settings, ("vehicles",), runtime)).test_client()

    def marker() -> str | None:
        raw = runtime.redis.get(marker_key(settings.redis_prefix)) if runtime.redis is not None else None
        return raw.decode() if isinstance(raw, bytes) else raw

    sent = []
    for kind in event_types:
        before = marker()
        data = {"vehicle": {"id": "281474976710001"}} if kind.startswith("Vehicle") else {}
        body, headers = signed_delivery(secret, webhook_event(kind, data))
        answer = client.post("/webhooks/samsara", data=body, headers=headers)
        sent.append(
            {
                "event_type": kind,
                "status": answer.status_code,
                "answer": answer.get_json(silent=True),
                "marker_before": before,
                "marker_after": marker(),
            }
        )
    runtime.close()
    print(json.dumps({"events": sent}))


if __name__ == "__main__":
    main(sys.argv[1:])
