"""What an upload must pass before anything analyses it.

* :func:`receive_upload` streams a ``multipart/form-data`` body straight into a file of the
  request's own temporary folder, never more than ``max_upload_bytes`` of it, within the request
  timeout; the form's other fields are small strings;
* :func:`sniff` tells the container by the file's first bytes (its magic number), never by the
  name the client gave: only known audio, video and image containers pass, so nothing else
  reaches the decoder (FFmpeg is never asked to follow a playlist or to guess);
* :func:`check_media` renames the file to the suffix its content deserves, probes its streams
  with PyAV (headers only) and refuses media longer than the limit.

Uploads are only ever decoded as media: never unpickled, executed or read as a transcript.
Each failure is a :class:`~emofuse.service.errors.ServiceError` with a 4xx status and one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emofuse.errors import InputError
from emofuse.service.errors import ServiceError

MiB = 1024 * 1024
DRAIN_BYTES = 32 * MiB
"""An upload over the limit by at most this much is read to its end (and dropped) before the
413 answer, so the client sees the answer instead of a reset connection."""
FIELD_BYTES = 1024
"""Largest form field other than the file."""
MAX_PARTS = 8

FIELDS = ("file", "model", "language")
"""The form fields an upload may have."""

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Upload:
    """A received upload: the file (in the request's folder), the client's name for it, fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Container:
    """A sniffed container: its family, the suffix it is analysed under, its kind."""

    name: str
    suffix: str
    kind: str  # "av" (audio or video: the streams decide) or "image"
    formats: tuple[str, ...]  # FFmpeg demuxer names that may read it


CONTAINERS = {
    "wav": Container("WAV", ".wav", "av", ("wav",)),
    "avi": Container("AVI", ".avi", "av", ("avi",)),
    "webp": Container("WebP", ".webp", "image", ("webp_pipe", "image2", "webp")),
    "mp4": Container("MP4/QuickTime", ".mp4", "av", ("mov,mp4,m4a,3gp,3g2,mj2",)),
    "mkv": Container("Matroska/WebM", ".mkv", "av", ("matroska,webm",)),
    "ogg": Container("Ogg", ".ogg", "av", ("ogg",)),
    "flac": Container("FLAC", ".flac", "av", ("flac",)),
    "mp3": Container("MP3", ".mp3", "av", ("mp3",)),
    "aac": Container("AAC (ADTS)", ".aac", "av", ("aac",)),
    "mpeg": Container("MPEG program stream", ".mpg", "av", ("mpeg",)),
    "asf": Container("ASF/WMA", ".wma", "av", ("asf",)),
    "png": Container("PNG", ".png", "image", ("png_pipe", "image2")),
    "jpeg": Container("JPEG", ".jpg", "image", ("jpeg_pipe", "image2")),
    "bmp": Container("BMP", ".bmp", "image", ("bmp_pipe", "image2")),
    "tiff": Container("TIFF", ".tif", "image", ("tiff_pipe", "image2")),
}


def sniff(head: bytes) -> Container | None:
    """The container whose magic number ``head`` (a file's first bytes, ≥ 12) starts with."""
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WAVE": CONTAINERS["wav"], b"AVI ": CONTAINERS["avi"]}.get(
            head[8:12], CONTAINERS["webp"] if head[8:12] == b"WEBP" else None
        )
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return CONTAINERS["mp4"]
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return CONTAINERS["mkv"]
    if head[:4] == b"OggS":
        return CONTAINERS["ogg"]
    if head[:4] == b"fLaC":
        return CONTAINERS["flac"]
    if head[:3] == b"ID3" or (
        len(head) >= 2 and head[0] == 0xFF and head[1] in (0xFB, 0xF3, 0xF2, 0xFA, 0xE3)
    ):
        return CONTAINERS["mp3"]
    if len(head) >= 2 and head[0] == 0xFF and head[1] in (0xF1, 0xF9):
        return CONTAINERS["aac"]
    if head[:4] == b"\x00\x00\x01\xba":
        return CONTAINERS["mpeg"]
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return CONTAINERS["asf"]
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return CONTAINERS["png"]
    if head[:3] == b"\xff\xd8\xff":
        return CONTAINERS["jpeg"]
    if head[:2] == b"BM" and len(head) >= 14:
        return CONTAINERS["bmp"]
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return CONTAINERS["tiff"]
    return None


def safe_name(filename: str | None, default: str = "upload") -> str:
    """The client's file name reduced to a safe base name (no folders, no odd characters)."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE.sub("_", base).strip("._")[:100]
    return base or default


def _described(head: bytes) -> str:
    """What the first bytes look like, for the message."""
    if not head:
        return "nothing"
    text = head[:16]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return f"text ({text.decode('ascii').split()[0][:12]!r}…)" if text.split() else "text"
    return "bytes " + text[:8].hex(" ")


def check_media(upload: Upload, max_seconds: float, too_long: str) -> tuple[Path, Any]:
    """Sniff, rename and probe an uploaded file.

    Args:
        upload: The received file.
        max_seconds: Longest media accepted.
        too_long: What to add to the 413 message when the media is longer (e.g. where to send it).

    Returns:
        The file's new path (its suffix from its content) and its
        :class:`~emofuse.features.media.MediaInfo`.

    Raises:
        ServiceError: 422 for an empty file; 415 for content that is no known audio, video or
            image container (whatever its name says); 422 for a container that cannot be
            decoded or has neither audio nor video; 413 for media longer than ``max_seconds``.
    """
    from emofuse.features.media import probe

    if upload.size == 0:
        raise ServiceError(422, f"{upload.filename}: the file is empty (0 bytes)")
    with upload.path.open("rb") as fh:
        head = fh.read(64)
    container = sniff(head)
    if container is None:
        raise ServiceError(
            415,
            f"{upload.filename}: not an audio, video or image file (its content starts with "
            f"{_described(head)}); send WAV, MP3, FLAC, Ogg, MP4/MOV, MKV/WebM, AVI, PNG, JPEG, "
            "BMP, TIFF or WebP",
        )
    path = upload.path.with_name("media" + container.suffix)
    upload.path.rename(path)
    upload.path = path
    try:
        info = probe(path)
    except InputError as e:
        raise ServiceError(
            422, f"{upload.filename}: cannot be read as {container.name}: {e.problem}"
        ) from None
    if info.format not in container.formats:
        raise ServiceError(
            415,
            f"{upload.filename}: starts like {container.name} but decodes as {info.format!r}",
        )
    if container.kind == "image":
        return path, info
    if not (info.has_audio or info.has_video):
        raise ServiceError(422, f"{upload.filename}: has neither an audio nor a video stream")
    if info.duration is not None and info.duration > max_seconds:
        raise ServiceError(
            413,
            f"{upload.filename}: the media lasts {info.duration:.0f} s, longer than the "
            f"{max_seconds:g} s accepted{too_long}",
        )
    return path, info


class _FormSink:
    """``python_multipart`` callbacks: the file part to disk (capped), other fields in memory."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.size = 0
        self.over = False
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self.problem: tuple[int, str] | None = None
        self.parts = 0
        self._file: Any = None
        self._name: str | None = None
        self._value = bytearray()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def _fail(self, status: int, message: str) -> None:
        if self.problem is None:
            self.problem = (status, message)

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self._fail(422, f"the form has more than {MAX_PARTS} parts")
        self._headers = {}
        self._name = None
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            self._fail(
                422, f"unknown form field {name[:40]!r}; the fields are: {', '.join(FIELDS)}"
            )
            return
        if name == "file":
            if self._file is not None or self.filename is not None:
                self._fail(422, "send one file per request (the form has two 'file' parts)")
                return
            self.filename = safe_name(options.get(b"filename", b"").decode("utf-8", "replace"))
            self._file = self.path.open("wb")
        elif name in self.fields:
            self._fail(422, f"form field {name!r} given twice")
            return
        self._name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.problem is not None or self._name is None:
            return
        n = end - start
        if self._name == "file":
            self.size += n
            if self.size > self.cap:
                self.over = True
                self._close()
                return
            if not self.over:
                self._file.write(data[start:end])
        else:
            self._value += data[start:end]
            if len(self._value) > FIELD_BYTES:
                self._fail(422, f"form field {self._name!r} is longer than {FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._name == "file":
            self._close()
        elif self._name is not None and self.problem is None:
            try:
                self.fields[self._name] = self._value.decode("utf-8").strip()
            except UnicodeDecodeError:
                self._fail(422, f"form field {self._name!r} is not UTF-8 text")
        self._name = None

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }


async def receive_upload(request: Any, folder: Path, max_bytes: int, timeout: float) -> Upload:
    """Stream a ``multipart/form-data`` request's ``file`` part into ``folder``.

    Args:
        request: The Starlette request (its body is read here, once).
        folder: The request's own temporary folder (the caller removes it, whatever happens).
        max_bytes: Largest file accepted.
        timeout: Seconds the whole body may take to arrive.

    Returns:
        The :class:`Upload` (fields ``model`` and ``language`` when given).

    Raises:
        ServiceError: 415 for a body that is not multipart; 413 for a file over ``max_bytes``
            (the announced length is checked before anything is read); 408 for a body that
            does not arrive within ``timeout``; 422 for a malformed form, unknown or repeated
            fields, or no ``file`` part.
        starlette.requests.ClientDisconnect: the client went away mid-upload.
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise ServiceError(
            415, "send the media as multipart/form-data with the file in a field named 'file'"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise ServiceError(422, "the multipart Content-Type has no boundary")
    announced = request.headers.get("content-length")
    limit = _mib(max_bytes)
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise ServiceError(400, "Content-Length is not a number") from None
        if length > max_bytes + DRAIN_BYTES:
            raise ServiceError(413, f"the upload ({_mib(length)}) is larger than {limit}")
    sink = _FormSink(folder / "upload.part", max_bytes)
    parser = MultipartParser(boundary, sink.callbacks())
    received = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes + DRAIN_BYTES:
                    raise ServiceError(413, f"the upload is larger than {limit}")
                if sink.over or sink.problem is not None:
                    continue  # drain: the client reads the answer instead of a reset
                try:
                    parser.write(chunk)
                except MultipartParseError as e:
                    sink._fail(422, f"malformed multipart body: {e}")
            if sink.problem is None and not sink.over:
                try:
                    parser.finalize()
                except MultipartParseError as e:
                    sink._fail(422, f"malformed multipart body: {e}")
    except TimeoutError:
        raise ServiceError(
            408, f"the upload did not arrive within {timeout:g} s; send it faster or smaller"
        ) from None
    finally:
        sink._close()
    if sink.over:
        raise ServiceError(413, f"{sink.filename}: the file is larger than {limit}")
    if sink.problem is not None:
        raise ServiceError(*sink.problem)
    if sink.filename is None:
        raise ServiceError(
            422, "the form has no 'file' part: send the media in a field named 'file'"
        )
    return Upload(sink.path, sink.filename, sink.size, sink.fields)


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n:.0f} bytes"


def remove_tree(folder: Path) -> None:
    """Remove a request's temporary folder and everything in it (missing: nothing to do)."""
    import shutil

    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)
    with contextlib.suppress(FileNotFoundError, OSError):
        os.rmdir(folder)


__all__ = [
    "CONTAINERS",
    "Container",
    "Upload",
    "check_media",
    "receive_upload",
    "remove_tree",
    "safe_name",
    "sniff",
]
