"""The baseline: an aiohttp server whose webhook handler only parses the JSON body and answers 200.

    python benchmarks/bare.py --port 8001

Same route, same body limit and no access log, like ``hybridflow serve``; what HybridFlow adds on top of this
(authentication, parsing the event, the durable write, the decision) is what the benchmark's ratio measures.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web


async def webhook(request: web.Request) -> web.Response:
    """Parse the body as HybridFlow does (bytes -> str -> JSON), answer a small JSON object."""
    try:
        body = json.loads((await request.read()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return web.json_response({"error": "bad_request"}, status=400)
    return web.json_response({"action": "stored", "instance": body.get("instance")})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/webhooks/evolution", webhook)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
