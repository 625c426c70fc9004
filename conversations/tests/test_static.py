"""Static files as deployed: content-hashed names, cached for good, precompressed."""

import posixpath
import re

import pytest

pytestmark = pytest.mark.django_db


def linked_assets(client) -> list[str]:
    page = client.get("/").content.decode()
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', page)


def hashed(name: str) -> re.Pattern:
    stem, ext = name.rsplit(".", 1)
    return re.compile(rf"{stem}\.[0-9a-f]{{12}}\.{ext}")


def test_the_page_links_content_hashed_names(client):
    assets = linked_assets(client)
    names = {path.rsplit("/", 1)[1] for path in assets}
    for name in ("main.js", "chat.css", "favicon.svg"):
        assert any(hashed(name).fullmatch(n) for n in names), (name, names)


def test_the_page_modules_import_each_other_by_hashed_names(client):
    """static/chat/main.js imports the other modules: by their hashed names, each one served."""
    [main] = [path for path in linked_assets(client) if hashed("main.js").search(path)]
    seen, pending = set(), [main]
    while pending:
        path = pending.pop()
        seen.add(path)
        source = b"".join(client.get(path).streaming_content).decode()
        for target in re.findall(r'from "(\.{1,2}/[^"]+)"', source):
            assert re.fullmatch(r"[a-z]+\.[0-9a-f]{12}\.js", posixpath.basename(target)), target
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            assert client.get(resolved).status_code == 200, resolved
            if resolved not in seen:
                pending.append(resolved)
    names = {posixpath.basename(path).split(".")[0] for path in seen}
    assert names == {"main", "api", "session", "updates", "view", "markdown", "devices", "handoff", "translation", "language"}


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

