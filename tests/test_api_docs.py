"""/docs and /redoc work offline: every script, stylesheet and icon they load is served by the API itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest

from api.app import create_app
from payloop.settings import Settings

ASSET_TYPES = {"script": ("text/javascript", "application/javascript"), "link": ("text/css", "image/")}


class _Assets(HTMLParser):
    """The URLs of a page's <script src> and <link href>, by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        url = dict(attrs).get({"script": "src", "link": "href"}.get(tag, ""))
        if url:
            self.urls.append((tag, url))


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


@pytest.mark.parametrize(("page", "tags"), [("/docs", {"script", "link"}), ("/redoc", {"script"})])
async def test_a_docs_page_loads_nothing_from_another_host(api: httpx.AsyncClient, page: str, tags: set[str]) -> None:
    response = await api.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text  # no CDN, no web fonts
    parser = _Assets()
    parser.feed(response.text)
    assert {tag for tag, _ in parser.urls} >= tags  # Swagger UI's stylesheet too
    for tag, url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await api.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(ASSET_TYPES[tag]), (url, asset.headers["content-type"])
        assert len(asset.content) > 0


async def test_swagger_ui_keeps_its_oauth2_redirect(api: httpx.AsyncClient) -> None:
    redirect = await api.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200 and "https://" not in redirect.text and "http://" not in redirect.text
