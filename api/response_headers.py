"""Headers every response under a path prefix carries (the ops console's and the checkout's pages, their 404s and
static files), whatever route or error handler made the response."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class PrefixHeaders:
    """Sets `headers(path)` on every response whose path is `prefix` or under it (replacing a route's own), and
    `defaults` where the response has none of its own."""

    def __init__(self, app: ASGIApp, prefix: str, headers: Callable[[str], Mapping[str, str]],
                 defaults: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.prefix = prefix
        self.headers = headers
        self.defaults = defaults or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            return await self.app(scope, receive, send)
        wanted = self.headers(path)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.decode("latin-1").lower() not in wanted]
                present = {k.decode("latin-1").lower() for k, _ in kept}
                added = {**{k: v for k, v in self.defaults.items() if k not in present}, **wanted}
                message = {**message, "headers": kept + [(k.encode(), v.encode()) for k, v in added.items()]}
            await send(message)

        await self.app(scope, receive, with_headers)
