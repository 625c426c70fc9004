"""Static files as deployed: content-hashed names, cached for good, precompressed."""

import re

import pytest

pytestmark = pytest.mark.django_db


def linked_assets(client) -> list[str]:
    page = client.get("/").content.decode()
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', page)


def test_the_page_links_content_hashed_names(client):
    assets = linked_assets(client)
    names = {path.rsplit("/", 1)[1] for path in assets}
    for name in ("chat.js", "markdown.js", "chat.css", "favicon.svg"):
        stem, ext = name.rsplit(".", 1)
        assert any(re.fullmatch(rf"{stem}\.[0-9a-f]{{12}}\.{ext}", n) for n in names), (name, names)


def test_hashed_files_are_cached_for_good_and_served_compressed(client):
    for path in linked_assets(client):
        plain = client.get(path)
        assert plain.status_code == 200, path
        assert "immutable" in plain["Cache-Control"] and "max-age=315360000" in plain["Cache-Control"]
        assert not plain.has_header("Content-Encoding")
        body = b"".join(plain.streaming_content)

        for accepted, encoding in [("gzip", "gzip"), ("gzip, deflate, br", "br")]:
            compressed = client.get(path, headers={"Accept-Encoding": accepted})
            assert compressed["Content-Encoding"] == encoding, (path, accepted)
            assert compressed["Vary"] == "Accept-Encoding"
            assert int(compressed["Content-Length"]) < len(body), path

