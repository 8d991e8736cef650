"""Incident photos: validate untrusted uploads, re-encode them clean, store them safely.

An inspector's photo is evidence, but the uploaded file is untrusted input from a tablet in the
field. Everything here follows from that:

* The type is sniffed from the bytes by Pillow, restricted to the formats we accept, so that no
  other decoder (EPS would start Ghostscript, TIFF/PSD are large attack surfaces) ever runs.
  The filename and the client's content type are never consulted.
* Size limits are checked before decoding: the byte count before Pillow sees the data, the
  declared width and height right after ``Image.open`` (which only parses the header), so a
  few-KB PNG that declares 30000x30000 pixels is refused without allocating the pixels.
* What is stored is never the upload: the pixels are decoded, turned upright (EXIF orientation),
  converted to sRGB, downscaled, and written as a fresh baseline JPEG without EXIF, XMP, ICC,
  comments or any other metadata, so GPS tags and device serials cannot leak to whoever views
  the photo later. The incident has its own, checked, location.
* Animated images (APNG, animated WebP) are refused rather than silently cut to one frame: the
  house rule is a clear 4xx, never a silent fix-up, and an animation is not a field photo.
  Multi-picture JPEGs (MPO) are the exception: phones write the photo plus depth maps or
  previews that way, and the first image *is* the photo, so it is accepted.
* Files get server-made names under a root outside ``static/`` (they are served only through an
  authorised route), are written atomically with mode 0640, and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import struct
import tempfile
import uuid
import warnings
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, ImageCms, ImageFile, ImageOps

from gridops import config
from gridops.errors import FieldError, InvalidInput, NotFound

log = logging.getLogger(__name__)

MB = 1024 * 1024

CONTENT_TYPE = "image/jpeg"
FILE_MODE = 0o640
DIR_MODE = 0o750

# Pillow format names we decode. MPO is what Pillow calls a JPEG that carries extra pictures.
_BASE_FORMATS = ("JPEG", "PNG", "WEBP")
# HEIC is accepted only when a Pillow plugin for it is installed by someone else; we add none.
_OPTIONAL_FORMATS = ("HEIF",)

# What Pillow's parsers raise on malformed input (besides UnidentifiedImageError, an OSError).
# Listed rather than ``Exception`` so that a bug of ours still surfaces as a 500, not a 422.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError)

# Stored names are made here, so anything else handed to open_stored is refused outright.
_STORED_NAME = re.compile(
    r"\d{4}/\d{2}/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}(_thumb)?\.jpg"
)


@dataclass(frozen=True)
class PhotoLimits:
    """Limits for one photo; ``max_count`` is per incident (see ``check_photo_count``)."""

    max_bytes: int = 10 * MB
    max_pixels: int = 40_000_000
    max_side: int = 8000
    max_count: int = 6
    out_max_side: int = 2048
    thumb_side: int = 320
    jpeg_quality: int = 85


@dataclass(frozen=True)
class StoredPhoto:
    """A photo written by ``store_photo``; paths are POSIX and relative to the photo root."""

    id: str
    sha256: str
    width: int
    height: int
    bytes: int
    content_type: str
    path: str
    thumb_path: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PhotoTooLarge(InvalidInput):
    """The upload is bigger than allowed: 413, still an InvalidInput for callers that group."""

    status: int = 413
    title: str = "Content too large"
    type_slug: str = "content-too-large"


def accepted_formats() -> tuple[str, ...]:
    """Pillow format names accepted now (HEIF only if a plugin registered it)."""
    Image.init()
    return _BASE_FORMATS + tuple(f for f in _OPTIONAL_FORMATS if f in Image.OPEN)


def _accepted_label() -> str:
    names = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "HEIF": "HEIC"}
    return ", ".join(names[f] for f in accepted_formats())


def check_photo_count(count: int, limits: PhotoLimits, *, field: str = "photos") -> None:
    """Refuse more photos per incident than ``limits.max_count`` (422)."""
    if count > limits.max_count:
        raise InvalidInput(
            "Too many photos.",
            errors=[FieldError(field, f"at most {limits.max_count} photos, got {count}")],
        )


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput("The photo was not accepted.", errors=[FieldError(field, message)])


def _open_checked(data: bytes, limits: PhotoLimits, field: str) -> ImageFile.ImageFile:
    """Open lazily (header only) and enforce type and dimension limits before any decoding."""
    formats = accepted_formats()
    try:
        # Pillow's own bomb guard warns above MAX_IMAGE_PIXELS and raises above twice that. We
        # leave the process-wide MAX_IMAGE_PIXELS alone (other code uses Pillow) and instead turn
        # the warning into an error here; our own, stricter check below is the real limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _invalid(
            field,
            f"the image declares too many pixels (at most {limits.max_pixels:,} allowed)",
        ) from None
    except _DECODE_ERRORS:
        raise _invalid(
            field, f"not a readable image; accepted types are {_accepted_label()}"
        ) from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise _invalid(field, "the image has no pixels")
    if width > limits.max_side or height > limits.max_side:
        raise _invalid(
            field,
            f"the image is {width}x{height} pixels; each side must be at most {limits.max_side}",
        )
    if width * height > limits.max_pixels:
        raise _invalid(
            field,
            f"the image is {width}x{height} pixels ({width * height:,}); "
            f"at most {limits.max_pixels:,} pixels allowed",
        )
    if image.format != "MPO" and getattr(image, "is_animated", False):
        raise _invalid(field, "animated images are not accepted; send a single photo")
    return image


def _to_srgb(image: Image.Image) -> Image.Image:
    """Flatten alpha onto white and convert to 8-bit sRGB, honouring an embedded ICC profile."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        image = image.convert("I")
    if image.mode == "I":
        # 16-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        image = image.point(lambda v: v * (1 / 256), "L")
    elif image.mode == "F":
        image = image.convert("L")

    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.info = dict(image.info)  # keep the ICC profile for the conversion below
        image = flat

    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "CMYK"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            # A broken profile does not make the pixels wrong; fall back to treating them as
            # sRGB, which is what a browser that ignores the profile would show anyway.
            log.info("ignoring an unusable ICC profile in an uploaded photo")
    return image.convert("RGB")


def _clean_jpeg(image: Image.Image, quality: int) -> bytes:
    """Encode pixels only: a fresh image carries no ``info``, so no metadata can ride along."""
    clean = Image.frombytes("RGB", image.size, image.tobytes())
    clean.info = {}
    out = io.BytesIO()
    clean.save(out, format="JPEG", quality=quality, optimize=True, exif=b"")
    data = out.getvalue()
    _assert_no_metadata(data)
    return data


_ALLOWED_JPEG_MARKERS = {
    0xE0,  # APP0 JFIF: version, density; nothing about the device or place
    0xDB,  # DQT
    0xC4,  # DHT
    0xDD,  # DRI
    0xC0,  # SOF0 baseline
    0xC1,
    0xC2,  # SOF2 progressive
}


def jpeg_segments(data: bytes) -> list[int]:
    """The marker bytes of the header segments of a JPEG, up to the start of scan."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    markers: list[int] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"bad JPEG marker at {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        markers.append(marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows, no more metadata
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return markers


def _assert_no_metadata(data: bytes) -> None:
    # A guard against a future Pillow that starts copying metadata by default: a leak of the
    # reporter's GPS position must be a loud failure, not a silent one.
    extra = [m for m in jpeg_segments(data) if m != 0xDA and m not in _ALLOWED_JPEG_MARKERS]
    if extra:
        raise RuntimeError(f"re-encoded JPEG carries unexpected segments {extra!r}")


def process_photo(
    data: bytes, limits: PhotoLimits, *, field: str = "photos[0]"
) -> tuple[bytes, bytes, dict[str, Any]]:
    """Validate an uploaded photo and re-encode it; returns (photo JPEG, thumbnail JPEG, meta).

    Raises PhotoTooLarge (413) above ``max_bytes`` and InvalidInput (422, naming ``field``) for
    an empty, unknown, corrupt, animated or oversized-in-pixels image. ``meta`` holds width,
    height, bytes, sha256 and content_type of the photo, the thumbnail's size, and the format
    that was detected.
    """
    if not data:
        raise _invalid(field, "the file is empty")
    if len(data) > limits.max_bytes:
        raise PhotoTooLarge(
            "The photo is too large.",
            errors=[
                FieldError(
                    field,
                    f"the file has {len(data):,} bytes; at most {limits.max_bytes:,} allowed",
                )
            ],
        )

    image = _open_checked(data, limits, field)
    source_format = "JPEG" if image.format == "MPO" else str(image.format)
    source_size = image.size
    try:
        # For JPEG, let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers the
        # output size: less memory and time, same result after the resize below.
        target = (limits.out_max_side, limits.out_max_side)
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", target)
        image.load()  # truncated or corrupt data fails here, not later
        upright = ImageOps.exif_transpose(image)
        rgb = _to_srgb(upright)
        if max(rgb.size) > limits.out_max_side:
            rgb.thumbnail(target, Image.Resampling.LANCZOS)
        thumb = rgb.copy()
        if max(thumb.size) > limits.thumb_side:
            thumb.thumbnail((limits.thumb_side, limits.thumb_side), Image.Resampling.LANCZOS)
    except Image.DecompressionBombError:
        raise _invalid(field, "the image declares too many pixels") from None
    except _DECODE_ERRORS:
        raise _invalid(
            field, f"the image is truncated or corrupt; accepted types are {_accepted_label()}"
        ) from None
    finally:
        image.close()

    photo_bytes = _clean_jpeg(rgb, limits.jpeg_quality)
    thumb_bytes = _clean_jpeg(thumb, limits.jpeg_quality)
    meta = {
        "width": rgb.width,
        "height": rgb.height,
        "bytes": len(photo_bytes),
        "sha256": hashlib.sha256(photo_bytes).hexdigest(),
        "content_type": CONTENT_TYPE,
        "thumb_width": thumb.width,
        "thumb_height": thumb.height,
        "thumb_bytes": len(thumb_bytes),
        "source_format": source_format,
        "source_width": source_size[0],
        "source_height": source_size[1],
    }
    return photo_bytes, thumb_bytes, meta


# -- storage -------------------------------------------------------------------------------


def _static_dir() -> Path:
    return (config.PROJECT_ROOT / "static").resolve()


def _check_root(root: Path) -> Path:
    resolved = Path(root).resolve()
    static = _static_dir()
    if resolved == static or static in resolved.parents:
        # Anything under static/ is served to anyone without a login; photos are not public.
        raise ValueError(f"the photo root {root} must not be inside {static}")
    return resolved


def fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(target: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), FILE_MODE)  # explicit: not subject to the process umask
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def store_photo(
    root: Path, data: bytes, limits: PhotoLimits, *, field: str = "photos[0]"
) -> StoredPhoto:
    """Process an upload and write the photo and its thumbnail under ``root/<yyyy>/<mm>/``.

    Names are server-made (``<uuid4>.jpg`` and ``<uuid4>_thumb.jpg``). Raises ValueError if
    ``root`` lies inside the project's ``static/`` folder, and the errors of ``process_photo``.
    On any failure neither file is left behind. If the database transaction that records the
    photo fails afterwards, call ``delete_stored``.
    """
    _check_root(root)
    photo_bytes, thumb_bytes, meta = process_photo(data, limits, field=field)
    return store_processed(root, photo_bytes, thumb_bytes, meta)


def store_processed(
    root: Path, photo_bytes: bytes, thumb_bytes: bytes, meta: dict[str, Any]
) -> StoredPhoto:
    """Write what ``process_photo`` returned under ``root/<yyyy>/<mm>/`` with server-made
    names, atomically; on any failure neither file is left behind. Callers that check a whole
    set of photos before writing any use this directly, so nothing is decoded twice."""
    resolved_root = _check_root(root)
    photo_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    folder = PurePosixPath(f"{now:%Y}", f"{now:%m}")
    rel_photo = folder / f"{photo_id}.jpg"
    rel_thumb = folder / f"{photo_id}_thumb.jpg"

    directory = resolved_root / folder
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for rel, payload in ((rel_photo, photo_bytes), (rel_thumb, thumb_bytes)):
            target = resolved_root / rel
            _write_atomic(target, payload)
            written.append(target)
        fsync_dir(directory)
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise

    return StoredPhoto(
        id=photo_id,
        sha256=meta["sha256"],
        width=meta["width"],
        height=meta["height"],
        bytes=meta["bytes"],
        content_type=CONTENT_TYPE,
        path=str(rel_photo),
        thumb_path=str(rel_thumb),
    )


def _safe_relative(relative_path: str) -> PurePosixPath:
    """Accept only names that store_photo makes; refuse everything else with NotFound."""
    if (
        not isinstance(relative_path, str)
        or "\x00" in relative_path
        or "\\" in relative_path
        or not _STORED_NAME.fullmatch(relative_path)
    ):
        log.warning("refused photo path %r", relative_path)
        raise NotFound("No such photo.")
    path = PurePosixPath(relative_path)
    if path.is_absolute() or ".." in path.parts:  # unreachable given the pattern; kept as a net
        raise NotFound("No such photo.")
    return path


def open_stored(root: Path, relative_path: str) -> Path:
    """The absolute path of a stored photo file, for an authorised download route.

    Refuses (NotFound, so a probe learns nothing) anything that is not a name store_photo
    makes, anything whose real path, after symlinks, lies outside ``root``, and missing files.
    """
    rel = _safe_relative(relative_path)
    real_root = Path(root).resolve()
    candidate = real_root.joinpath(*rel.parts)
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        raise NotFound("No such photo.") from None
    if real_root not in real.parents:
        log.warning("refused photo path %r: resolves outside the photo root", relative_path)
        raise NotFound("No such photo.")
    if not real.is_file():
        raise NotFound("No such photo.")
    return real


def delete_stored(root: Path, photo: StoredPhoto) -> None:
    """Remove a stored photo and its thumbnail; missing files are fine (idempotent)."""
    real_root = Path(root).resolve()
    for relative in (photo.path, photo.thumb_path):
        rel = _safe_relative(relative)
        target = real_root.joinpath(*rel.parts)
        try:
            parent = target.parent.resolve(strict=True)
        except (OSError, RuntimeError):
            continue  # the folder is gone, so is the file
        if parent != real_root and real_root not in parent.parents:
            log.warning("not deleting %r: its folder resolves outside the photo root", relative)
            continue
        # Unlink the name itself; a symlink is removed, never followed.
        with contextlib.suppress(FileNotFoundError):
            (parent / target.name).unlink()
