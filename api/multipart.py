"""Receive a multipart upload straight to disk, counting bytes as they arrive (never headers).

Nothing is kept unless the whole request is accepted: on any refusal or disconnect every file
received so far is deleted before the error leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from python_multipart.multipart import MultipartParser, parse_options_header

from storage import Storage, display_name

T = TypeVar("T")

FLUSH_BYTES = 1024 * 1024
INLINE_DISK_BYTES = 256 * 1024
"""Disk work on at most this many bytes runs on the event loop. Writing a few kilobytes to the page
cache takes microseconds; a thread hop costs more, and under load the loop and the thread then
trade the GIL back and forth (it measured as a third of the web process's CPU on small uploads)."""
MAX_FIELD_BYTES = 64 * 1024


async def disk_work(small: bool, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` on the event loop when it touches at most INLINE_DISK_BYTES, else in a
    thread."""
    if small:
        return work(*args)
    return await asyncio.to_thread(work, *args)

MAX_HEADER_BYTES = 16 * 1024


class UploadRefused(Exception):
    """The request cannot be accepted; `code` is stable, `message` is for a person."""

    code = "malformed_upload"

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file  # the client's name of the one file refused, when it is about one


class MalformedUpload(UploadRefused):
    code = "malformed_upload"


class FileTooLarge(UploadRefused):
    code = "too_large"


class TooManyFiles(UploadRefused):
    code = "too_many_files"


class TooManyFields(UploadRefused):
    code = "too_many_fields"


class UploadTooSlow(UploadRefused):
    code = "upload_too_slow"


@dataclass
class ReceivedFile:
    path: Path
    filename: str
    size: int
    digest: Any = field(default_factory=hashlib.sha256, repr=False)
    """sha256 of the bytes as they were written (content dedup: `records.dedup`)."""


@dataclass(eq=False)
class _Part:
    disposition: bytes = b""
    header_name: bytes = b""
    header_value: bytes = b""
    header_bytes: int = 0
    file: IO[bytes] | None = None
    received: ReceivedFile | None = None
    field_bytes: int = 0
    field_name: str = ""
    field_value: bytearray = field(default_factory=bytearray)
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary or len(boundary) > 200:
        raise MalformedUpload("send the files as multipart/form-data")
    return boundary


FORM_FIELDS = frozenset({"priority"})
"""The plain form fields an upload may carry besides its files; others are counted and dropped."""


class _Receiver:
    """Parser callbacks (sync) collect bytes; the async loop writes them out between chunks."""

    def __init__(self, storage: Storage, max_file_bytes: int, max_files: int,
                 max_fields: int) -> None:
        self.storage = storage
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.max_fields = max_fields
        self.part = _Part()
        self.files: list[ReceivedFile] = []
        self.fields = 0
        self.form: dict[str, str] = {}
        self.open_files: list[IO[bytes]] = []
        self.finished: list[_Part] = []
        self.writing: list[_Part] = []
        self.error: UploadRefused | None = None
        self.complete = False

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.part.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self.part.header_value += data[start:end]

    def _count_header(self, n: int) -> None:
        self.part.header_bytes += n
        if self.part.header_bytes > MAX_HEADER_BYTES:
            raise MalformedUpload("a part's headers are too long")

    def on_header_end(self) -> None:
        if self.part.header_name.lower() == b"content-disposition":
            self.part.disposition = self.part.header_value
        self.part.header_name, self.part.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.disposition)
        if b"filename" not in options:
            self.fields += 1  # a plain form field: counted, kept only if it is one Kiln reads
            if self.fields > self.max_fields:
                raise TooManyFields(f"at most {self.max_fields} form fields besides the files")
            name = options.get(b"name", b"").decode("utf-8", "replace")
            self.part.field_name = name if name in FORM_FIELDS else ""
            return
        if len(self.files) >= self.max_files:
            raise TooManyFiles(f"at most {self.max_files} files per upload")
        name = display_name(options[b"filename"].decode("utf-8", "replace"))
        path = self.storage.new_incoming()
        handle = path.open("xb")
        self.open_files.append(handle)
        self.part.file = handle
        self.writing.append(self.part)
        self.part.received = ReceivedFile(path=path, filename=name, size=0)
        self.files.append(self.part.received)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        part = self.part
        if part.received is None:
            part.field_bytes += n
            if part.field_bytes > MAX_FIELD_BYTES:
                raise MalformedUpload("a form field is too long")
            if part.field_name:
                part.field_value += data[start:end]
            return
        part.received.size += n
        if part.received.size > self.max_file_bytes:
            raise FileTooLarge(
                f"{part.received.filename} is larger than the limit of {self.max_file_bytes} bytes",
                file=part.received.filename,
            )
        part.pending.append(data[start:end])
        part.pending_bytes += n

    def on_part_end(self) -> None:
        if self.part.received is not None:
            self.finished.append(self.part)
        elif self.part.field_name:
            self.form[self.part.field_name] = self.part.field_value.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.complete = True

    async def flush(self, final: bool = False) -> None:
        """Write buffered bytes (a megabyte at a time, in a thread unless the file is small) and
        close finished files."""
        for part in self.writing:
            done = part in self.finished
            small = part.received is not None and part.received.size <= INLINE_DISK_BYTES
            if part.pending_bytes >= FLUSH_BYTES or done or final:
                chunk = b"".join(part.pending)
                part.pending.clear()
                part.pending_bytes = 0
                if chunk and part.file is not None and part.received is not None:
                    await disk_work(small, _hash_and_write, part.received, part.file, chunk)
            if done and part.file is not None:
                await disk_work(small, part.file.close)
                part.file = None
        self.writing = [p for p in self.writing if p.file is not None]
        self.finished.clear()

    def discard(self) -> None:
        for handle in self.open_files:
            with contextlib.suppress(OSError):
                handle.close()
        for received in self.files:
            received.path.unlink(missing_ok=True)


def _hash_and_write(received: ReceivedFile, file: IO[bytes], chunk: bytes) -> None:
    received.digest.update(chunk)
    file.write(chunk)


async def paced(chunks: AsyncIterator[bytes], min_rate: int, grace: float
                ) -> AsyncIterator[bytes]:
    """`chunks`, cut with UploadTooSlow once they fall `grace` seconds behind `min_rate` bytes/s.

    Each byte buys 1/min_rate seconds; the credit starts at `grace` and never exceeds it, so a
    stalled body is cut after `grace`, one at half the rate after twice that, and a fast start
    cannot pay for a long stall later. Time the consumer spends between chunks is not charged.
    """
    if min_rate <= 0:
        async for chunk in chunks:
            yield chunk
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadTooSlow(
                f"the upload was slower than {min_rate} bytes/s for more than {grace:g} s"
            ) from None
        now = loop.time()
        deadline = min(deadline + len(chunk) / min_rate, now + grace)
        yield chunk
        deadline += loop.time() - now


async def receive_files(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    storage: Storage,
    *,
    max_file_bytes: int,
    max_files: int,
    max_fields: int = 100,
    min_rate: int = 0,
    rate_grace: float = 30.0,
    form: dict[str, str] | None = None,
) -> list[ReceivedFile]:
    """Stream every file part of the body to `storage.incoming`; all of them, or none (a body
    slower than `min_rate` bytes/s for `rate_grace` seconds is cut: see `paced`). The values of
    the plain fields Kiln reads (`FORM_FIELDS`) go into `form`."""
    chunks = paced(chunks, min_rate, rate_grace)
    receiver = _Receiver(storage, max_file_bytes, max_files, max_fields)
    parser = MultipartParser(
        boundary_of(content_type),
        callbacks={
            "on_part_begin": receiver.on_part_begin,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
            "on_end": receiver.on_end,
        },
    )
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            try:
                parser.write(chunk)
            except UploadRefused:
                raise
            except Exception as exc:  # the parser's own errors: the body is not valid multipart
                raise MalformedUpload("the multipart body is malformed") from exc
            await receiver.flush()
        parser.finalize()
        if not receiver.complete:
            raise MalformedUpload("the multipart body ended early")
        await receiver.flush(final=True)
        if not receiver.files:
            raise MalformedUpload("no file in the upload: send each file as a part with a filename")
        if form is not None:
            form.update(receiver.form)
        return receiver.files
    except BaseException:
        receiver.discard()
        raise
