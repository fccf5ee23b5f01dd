"""Request bodies the backend reads: an upload streamed to disk under a size cap and a stall timeout, and a small
JSON job body under its own cap (neither is ever buffered whole past its limit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import HTTPException, Request

UPLOAD_STALL_SECONDS = 30.0  # the longest an upload may send nothing before it is refused (408)


async def receive_upload(request: Request, target: Path, limit: int) -> int:
    """Stream the request body into ``target``; 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload of {int(declared)} bytes is over the backend's limit of {limit} bytes")
    size, chunks = 0, request.stream().__aiter__()
    with open(target, "wb") as out:
        while True:
            try:  # an upload holds a place in the queue: one that stalls gives it back
                chunk = await asyncio.wait_for(chunks.__anext__(), UPLOAD_STALL_SECONDS)
            except StopAsyncIteration:
                return size
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the upload stalled for {UPLOAD_STALL_SECONDS:.0f} s; resend it") from None
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload is over the backend's limit of {limit} bytes")
            out.write(chunk)


async def read_small(request: Request, limit: int) -> bytes:
    """A small request body (a JSON job), refusing with 413 past ``limit`` bytes instead of buffering it all."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"a JSON job body is limited to {limit} bytes")
    return bytes(body)
