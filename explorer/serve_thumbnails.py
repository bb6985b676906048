"""Panel server plugin: the galaxies' thumbnails as static files, so hover tooltips carry URLs, not images.

    panel serve app.py --plugins explorer.serve_thumbnails --args BUNDLE

With it, every survey size gets hover thumbnails and a page no longer carries each galaxy's PNG inline (5.6 MB of
base64 for the 160-galaxy demo). The route serves only the PNG files of bundles this server process has opened
(explorer.data registers them by a key derived from the folder), so no other file on the machine is reachable.
"""
from __future__ import annotations

from tornado.web import HTTPError, StaticFileHandler

from explorer.data import THUMBNAIL_FOLDERS, THUMBNAIL_ROUTE


class BundleThumbnails(StaticFileHandler):
    """`/thumbnails/<bundle key>/<path in the bundle>.png` → that PNG of a bundle opened by this server."""

    def initialize(self) -> None:
        super().initialize(path="/")  # the root is chosen per request, from the bundle key

    async def get(self, path: str, include_body: bool = True) -> None:
        key, _, relative = path.partition("/")
        folder = THUMBNAIL_FOLDERS.get(key)
        if folder is None or not relative.endswith(".png"):
            raise HTTPError(404)
        self.root = str(folder)  # StaticFileHandler refuses any path that resolves outside it
        await super().get(relative, include_body)


ROUTES = [(rf"/{THUMBNAIL_ROUTE}/(.*)", BundleThumbnails, {})]
