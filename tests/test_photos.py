"""Incident photo intake: type sniffing, bomb and size limits, metadata stripping, safe storage.

No database: every image is generated in memory with Pillow, and some hostile files are crafted
byte by byte (a PNG header that declares 30000x30000 pixels over a few bytes of data).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile

from gridops import config
from gridops.errors import GridopsError, InvalidInput, NotFound
from gridops.incidents import photos
from gridops.incidents.photos import (
    PhotoLimits,
    PhotoTooLarge,
    StoredPhoto,
    check_photo_count,
    delete_stored,
    jpeg_segments,
    open_stored,
    process_photo,
    store_photo,
)

LIMITS = PhotoLimits()


# -- helpers -------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def noise(width: int, height: int) -> Image.Image:
    # Random pixels do not compress, so a cut anywhere lands inside the entropy-coded data.
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: shows where the raw pixel columns end up."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def crafted_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, followed by almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def rejected(data: bytes, field: str = "photos[0]", limits: PhotoLimits = LIMITS) -> GridopsError:
    with pytest.raises(InvalidInput) as info:
        process_photo(data, limits, field=field)
    return info.value


def exif_with_gps_and_orientation(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TabletCo"
    exif[ExifTags.Base.Model] = "Field-7 SN123456"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (23.0, 1.0, 30.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (113.0, 7.0, 15.0)
    return exif


# -- metadata and orientation --------------------------------------------------------------


def test_exif_gps_is_stripped_and_orientation_applied():
    raw = halves(400, 200)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    data = encode(
        raw,
        "JPEG",
        exif=exif_with_gps_and_orientation(6),
        icc_profile=icc,
        xmp=xmp,
        comment=b"taken at home",
    )
    # The fixture really carries what we claim to strip.
    with Image.open(io.BytesIO(data)) as src:
        assert src.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert src.getexif()[ExifTags.Base.Orientation] == 6

    photo, thumb, meta = process_photo(data, LIMITS)

    for out in (photo, thumb):
        assert b"Exif" not in out
        assert b"GPS" not in out
        assert b"xmpmeta" not in out and b"http://ns.adobe.com/xap" not in out
        assert b"ICC_PROFILE" not in out
        assert b"TabletCo" not in out and b"SN123456" not in out
        assert b"taken at home" not in out
        # Header segments: only JFIF, quantisation/huffman tables, frame, scan.
        assert set(jpeg_segments(out)) <= {0xE0, 0xDB, 0xC4, 0xC0, 0xC2, 0xDD, 0xDA}
        with Image.open(io.BytesIO(out)) as image:
            assert image.format == "JPEG"
            assert dict(image.getexif()) == {}
            assert "exif" not in image.info
            assert "icc_profile" not in image.info
            assert "xmp" not in image.info
            assert "comment" not in image.info

    # Orientation 6 means "rotate 90° clockwise to display": 400x200 raw becomes 200x400, and
    # the raw left (red) half ends up on top.
    assert raw.size == (400, 200)
    assert (meta["width"], meta["height"]) == (200, 400)
    with Image.open(io.BytesIO(photo)) as image:
        assert image.size == (200, 400)
        top = image.getpixel((100, 50))
        bottom = image.getpixel((100, 350))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_meta_describes_the_stored_bytes():
    photo, thumb, meta = process_photo(encode(halves(300, 200), "JPEG"), LIMITS)
    assert meta["sha256"] == hashlib.sha256(photo).hexdigest()
    assert meta["bytes"] == len(photo)
    assert meta["content_type"] == "image/jpeg"
    assert meta["source_format"] == "JPEG"
    assert meta["thumb_bytes"] == len(thumb)


# -- accepted types ------------------------------------------------------------------------


def test_png_is_accepted_and_reencoded_to_jpeg():
    photo, thumb, meta = process_photo(encode(halves(640, 480), "PNG"), LIMITS)
    assert meta["source_format"] == "PNG"
    assert photo[:3] == b"\xff\xd8\xff" and thumb[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(photo)) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (640, 480)


def test_transparent_png_is_flattened_on_white():
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    image.paste((0, 128, 0, 255), (0, 0, 50, 100))
    photo, _, _ = process_photo(encode(image, "PNG"), LIMITS)
    with Image.open(io.BytesIO(photo)) as out:
        assert all(c > 240 for c in out.getpixel((90, 50)))  # was transparent
        assert out.getpixel((10, 50))[1] > 100  # stays green


def test_webp_is_accepted():
    photo, _, meta = process_photo(encode(halves(300, 200), "WEBP"), LIMITS)
    assert meta["source_format"] == "WEBP"
    with Image.open(io.BytesIO(photo)) as out:
        assert out.format == "JPEG" and out.size == (300, 200)


def test_cmyk_and_greyscale_jpegs_become_rgb():
    for image in (Image.new("CMYK", (60, 40), (0, 255, 255, 0)), Image.new("L", (60, 40), 128)):
        photo, _, _ = process_photo(encode(image, "JPEG"), LIMITS)
        with Image.open(io.BytesIO(photo)) as out:
            assert out.mode == "RGB"


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped():
    image = Image.new("I;16", (40, 40), 32768)  # mid-grey in 16 bits
    photo, _, _ = process_photo(encode(image, "PNG"), LIMITS)
    with Image.open(io.BytesIO(photo)) as out:
        assert 110 < out.getpixel((20, 20))[0] < 145


def test_multi_picture_jpeg_from_a_phone_keeps_its_first_picture():
    first, second = halves(300, 200), Image.new("RGB", (80, 60), (0, 255, 0))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.format == "MPO"
    photo, _, meta = process_photo(data, LIMITS)
    assert meta["source_format"] == "JPEG"
    assert (meta["width"], meta["height"]) == (300, 200)
    with Image.open(io.BytesIO(photo)) as out:
        assert out.getpixel((50, 100))[0] > 200  # red left half of the first picture


# -- rejected input ------------------------------------------------------------------------


def test_empty_file_is_rejected():
    error = rejected(b"")
    assert error.status == 422
    assert error.errors[0].field == "photos[0]"
    assert "empty" in error.errors[0].message


def test_text_file_named_jpg_is_rejected_naming_the_field():
    # process_photo never sees a filename or client content type: only bytes decide.
    error = rejected(b"just some notes, saved as notes.jpg\n" * 20, field="photos[2]")
    assert error.status == 422
    assert error.errors[0].field == "photos[2]"
    message = error.errors[0].message
    for name in ("JPEG", "PNG", "WebP"):
        assert name in message


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("GIF", "P"), ("TIFF", "RGB"), ("BMP", "RGB"), ("EPS", "RGB"), ("ICO", "RGB")],
)
def test_real_images_of_other_types_are_rejected(fmt, mode):
    # Only the accepted decoders are ever tried: EPS would otherwise start Ghostscript.
    try:
        data = encode(Image.new(mode, (32, 32)), fmt)
    except OSError:  # e.g. no Ghostscript to write EPS: a header is enough to prove the point
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n"
    error = rejected(data)
    assert error.status == 422
    assert "accepted types" in error.errors[0].message


def test_svg_and_html_are_rejected():
    for data in (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"<html><body><img src=x onerror=alert(1)></body></html>",
    ):
        assert rejected(data).status == 422


def test_truncated_jpeg_is_rejected():
    data = encode(noise(400, 300), "JPEG", quality=90)
    error = rejected(data[: len(data) // 2])
    assert error.status == 422
    assert "truncated or corrupt" in error.errors[0].message


def test_jpeg_with_garbage_after_the_header_is_rejected():
    data = encode(noise(200, 200), "JPEG")
    header_end = data.index(b"\xff\xda")  # start of scan
    # Without 0xFF no marker (an EOI among them) can appear, so the scan never ends: truncated.
    garbage = random.Random(20).randbytes(2000).replace(b"\xff", b"\x00")
    assert rejected(data[: header_end + 20] + garbage).status == 422


def test_oversize_bytes_give_413():
    data = b"\xff\xd8\xff\xe0" + b"\x00" * LIMITS.max_bytes
    with pytest.raises(PhotoTooLarge) as info:
        process_photo(data, LIMITS, field="photos[1]")
    error = info.value
    assert error.status == 413
    assert isinstance(error, InvalidInput)  # callers may handle all photo rejections together
    assert error.errors[0].field == "photos[1]"


def test_byte_limit_is_configurable():
    data = encode(noise(100, 100), "PNG")
    with pytest.raises(PhotoTooLarge):
        process_photo(data, PhotoLimits(max_bytes=len(data) - 1))
    process_photo(data, PhotoLimits(max_bytes=len(data)))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    ("width", "height", "expect"),
    [
        (30000, 30000, "too many pixels"),  # Pillow's own guard fires inside Image.open
        (20000, 20000, "too many pixels"),
        (8000, 6000, "48,000,000"),  # within Pillow's default limit, over ours (40 MP)
        (9000, 100, "at most 8000"),  # few pixels, but one side too long
    ],
)
def test_pixel_bombs_are_refused_before_decoding(no_decoding, width, height, expect):
    data = crafted_png(width, height)
    assert len(data) < 200
    started = time.perf_counter()
    error = rejected(data, field="photos[3]")
    assert time.perf_counter() - started < 1.0
    assert error.status == 422
    assert error.errors[0].field == "photos[3]"
    assert expect in error.errors[0].message


def test_pixel_bomb_does_not_leak_a_pillow_warning(recwarn):
    rejected(crafted_png(10000, 9999))  # between Pillow's warning and error thresholds
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_animated_png_is_rejected():
    frames = [Image.new("RGB", (50, 50), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    error = rejected(data)
    assert error.status == 422
    assert "animated" in error.errors[0].message


def test_animated_webp_is_rejected():
    frames = [Image.new("RGB", (50, 50), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    assert "animated" in rejected(data).errors[0].message


def test_too_many_photos():
    check_photo_count(LIMITS.max_count, LIMITS)
    with pytest.raises(InvalidInput) as info:
        check_photo_count(LIMITS.max_count + 1, LIMITS)
    assert info.value.errors[0].field == "photos"


# -- sizes ---------------------------------------------------------------------------------


def test_large_photo_is_downscaled_to_out_max_side():
    photo, thumb, meta = process_photo(encode(halves(4000, 3000), "JPEG"), LIMITS)
    assert (meta["width"], meta["height"]) == (2048, 1536)
    with Image.open(io.BytesIO(photo)) as out:
        assert out.size == (2048, 1536)
    assert (meta["thumb_width"], meta["thumb_height"]) == (320, 240)
    with Image.open(io.BytesIO(thumb)) as out:
        assert out.size == (320, 240)


def test_portrait_png_downscales_on_the_long_side():
    _, _, meta = process_photo(encode(halves(1000, 5000), "PNG"), LIMITS)
    assert max(meta["width"], meta["height"]) == 2048
    assert meta["height"] == 2048
    assert max(meta["thumb_width"], meta["thumb_height"]) == 320


def test_small_photo_is_not_upscaled():
    _, _, meta = process_photo(encode(halves(200, 100), "JPEG"), LIMITS)
    assert (meta["width"], meta["height"]) == (200, 100)
    assert (meta["thumb_width"], meta["thumb_height"]) == (200, 100)


def test_custom_output_sizes():
    limits = PhotoLimits(out_max_side=500, thumb_side=64)
    _, _, meta = process_photo(encode(halves(1000, 800), "JPEG"), limits)
    assert (meta["width"], meta["height"]) == (500, 400)
    assert (meta["thumb_width"], meta["thumb_height"]) == (64, 51)


# -- storage -------------------------------------------------------------------------------


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_store_photo_writes_both_files_with_server_names(tmp_path):
    root = tmp_path / "photos"
    stored = store_photo(root, encode(halves(600, 400), "PNG"), LIMITS)

    assert isinstance(stored, StoredPhoto)
    assert stored.content_type == "image/jpeg"
    assert (stored.width, stored.height) == (600, 400)
    assert photos._STORED_NAME.fullmatch(stored.path)
    assert stored.path.endswith(f"/{stored.id}.jpg")
    assert stored.thumb_path == stored.path[: -len(".jpg")] + "_thumb.jpg"
    year, month, _ = stored.path.split("/")
    assert len(year) == 4 and len(month) == 2

    photo_file, thumb_file = root / stored.path, root / stored.thumb_path
    assert all_files(root) == sorted([photo_file, thumb_file])  # no temp files left over
    content = photo_file.read_bytes()
    assert hashlib.sha256(content).hexdigest() == stored.sha256
    assert len(content) == stored.bytes
    for path in (photo_file, thumb_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640

    other = store_photo(root, encode(halves(600, 400), "PNG"), LIMITS)
    assert other.id != stored.id


def test_store_photo_refuses_a_root_inside_static(tmp_path):
    static = config.PROJECT_ROOT / "static"
    target = static / "uploads-test-photos"
    assert not target.exists()
    with pytest.raises(ValueError, match="static"):
        store_photo(target, encode(halves(50, 50), "JPEG"), LIMITS)
    with pytest.raises(ValueError, match="static"):
        store_photo(static, encode(halves(50, 50), "JPEG"), LIMITS)
    assert not target.exists()

    # A symlink elsewhere that points into static/ is the same thing.
    link = tmp_path / "innocent"
    link.symlink_to(static, target_is_directory=True)
    with pytest.raises(ValueError, match="static"):
        store_photo(link / "photos", encode(halves(50, 50), "JPEG"), LIMITS)


def test_rejected_upload_leaves_nothing(tmp_path):
    root = tmp_path / "photos"
    with pytest.raises(InvalidInput):
        store_photo(root, b"not an image", LIMITS)
    assert not root.exists() or all_files(root) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    real_write = photos._write_atomic
    calls = []

    def flaky(target, data):
        calls.append(target)
        if len(calls) == 2:  # the thumbnail, after the photo is already in place
            raise OSError("disk full")
        real_write(target, data)

    monkeypatch.setattr(photos, "_write_atomic", flaky)
    with pytest.raises(OSError, match="disk full"):
        store_photo(root, encode(halves(100, 100), "JPEG"), LIMITS)
    assert len(calls) == 2
    assert all_files(root) == []


def test_atomic_write_removes_its_temp_file_on_failure(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(photos.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        photos._write_atomic(tmp_path / "x.jpg", b"data")
    assert list(tmp_path.iterdir()) == []


def test_delete_stored_removes_both_and_is_idempotent(tmp_path):
    root = tmp_path / "photos"
    stored = store_photo(root, encode(halves(100, 100), "JPEG"), LIMITS)
    keep = store_photo(root, encode(halves(100, 100), "JPEG"), LIMITS)
    delete_stored(root, stored)
    assert not (root / stored.path).exists() and not (root / stored.thumb_path).exists()
    assert (root / keep.path).exists() and (root / keep.thumb_path).exists()
    delete_stored(root, stored)  # already gone: fine


def test_delete_stored_refuses_foreign_paths(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    fake = StoredPhoto(
        id="x",
        sha256="0" * 64,
        width=1,
        height=1,
        bytes=1,
        content_type="image/jpeg",
        path="../precious.txt",
        thumb_path="../precious.txt",
    )
    with pytest.raises(NotFound):
        delete_stored(tmp_path / "photos", fake)
    assert outside.read_text() == "keep me"


# -- open_stored ---------------------------------------------------------------------------


def test_open_stored_returns_the_file(tmp_path):
    root = tmp_path / "photos"
    stored = store_photo(root, encode(halves(100, 100), "JPEG"), LIMITS)
    path = open_stored(root, stored.path)
    assert path == (root / stored.path).resolve()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stored.sha256
    assert open_stored(root, stored.thumb_path).is_file()


@pytest.mark.parametrize(
    "relative",
    [
        "../secret.jpg",
        "2026/01/../../../secret.jpg",
        "/etc/passwd",
        "//etc/passwd",
        "2026\\01\\..\\..\\secret.jpg",
        "2026/01/00000000-0000-4000-8000-000000000000.jpg\x00.png",
        "",
        ".",
        "2026/01",
        "2026/01/notes.txt",
        "2026/01/00000000-0000-4000-8000-000000000000.JPG",
    ],
)
def test_open_stored_refuses_traversal_and_foreign_names(tmp_path, relative):
    root = tmp_path / "photos"
    root.mkdir()
    (tmp_path / "secret.jpg").write_text("secret")
    with pytest.raises(NotFound):
        open_stored(root, relative)


def test_open_stored_refuses_symlinks_out_of_root(tmp_path):
    root = tmp_path / "photos"
    outside = tmp_path / "outside"
    (outside / "01").mkdir(parents=True)
    secret = outside / "secret.jpg"
    secret.write_text("secret")
    name = "00000000-0000-4000-8000-000000000000.jpg"

    # A file symlink that looks like a stored photo.
    (root / "2026" / "01").mkdir(parents=True)
    (root / "2026" / "01" / name).symlink_to(secret)
    with pytest.raises(NotFound):
        open_stored(root, f"2026/01/{name}")

    # A directory symlink in the middle of the path.
    (outside / "01" / name).write_text("secret too")
    (root / "2027").symlink_to(outside, target_is_directory=True)
    with pytest.raises(NotFound):
        open_stored(root, f"2027/01/{name}")


def test_open_stored_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        open_stored(tmp_path, "2026/01/00000000-0000-4000-8000-000000000000.jpg")
