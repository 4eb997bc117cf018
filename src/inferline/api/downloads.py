"""Responses that send a stored file's bytes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import BinaryIO

import anyio
from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send


class OpenedFileResponse(FileResponse):
    """A file response (ranges, HEAD, validators) that reads a file opened before it was built. A delete
    may unlink the blob at any time once the request has looked the file up; the open file keeps its
    bytes (POSIX), where reopening the path later would fail half way through the response."""

    def __init__(
        self, opened: BinaryIO, *, media_type: str, filename: str, content_disposition_type: str = "attachment"
    ) -> None:
        self.opened = opened
        super().__init__(
            opened.name,
            media_type=media_type,
            filename=filename,
            stat_result=os.fstat(opened.fileno()),
            content_disposition_type=content_disposition_type,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # `pathsend` would have the server open the path again.
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        try:
            await super().__call__({**scope, "extensions": extensions}, receive, send)
        finally:
            self.opened.close()

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        await anyio.to_thread.run_sync(self.opened.seek, 0)
        yield anyio.wrap_file(self.opened)  # closed by `__call__`, once every range is sent
