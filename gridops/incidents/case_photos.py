"""Photos on cases: taken with the report (the inspector's) or with a transition (the handler's
after-photo, the checker's on-site photo), and shown only to those who see the case in full.

Order of work for a request with photos, so that bad input leaves nothing behind:

1. ``prepare_photos`` validates and re-encodes every upload in memory (``photos.process_photo``):
   a count over the limit, an oversize file or a bad image is refused (413/422, naming
   ``photos[i]``) before anything is written to disk or to the database.
2. The case row (intake) or the transition is written in the request's transaction; a replay
   of a known report stops here, so it stores no new files.
3. ``attach_photos`` writes the files and inserts their ``incident_photo`` rows in that same
   transaction. The files are written inside a ``PhotoWrites`` block, which deletes them again
   if the block ends with an error before the commit: a failed transaction leaves no files
   behind. A commit that itself fails (the connection died in it) may have taken effect on
   the server, so its files are kept rather than risk a case row without its photos. Those,
   and the files of a process killed between the write and the commit, have no row, so
   nobody can be served them; ``sweep_orphans`` (the nightly ``photo_sweep`` job) removes
   them once they are a day old. A store that cannot be written is a 503 problem, a full one
   a 507 (``PhotoStorageError``): the transaction fails with it.

The image bytes are never trusted (see ``gridops.incidents.photos``); this module only decides
where they belong and who may see them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gridops.auth.actor import Actor
from gridops.errors import NO_ROOM, FieldError, GridopsError, InvalidInput, NotFound
from gridops.incidents import photos
from gridops.incidents.intake import intake
from gridops.incidents.photos import (
    PhotoLimits,
    PhotoTooLarge,
    StoredPhoto,
    check_photo_count,
    delete_stored,
    open_stored,
    process_photo,
)

log = logging.getLogger(__name__)

FIELD = "photos"  # the multipart field of the files; errors name photos[0], photos[1] …
SIZES = ("full", "thumb")


@dataclass(frozen=True)
class PhotoStore:
    """Where photos live and how big they may be (from GRIDOPS_PHOTO_* settings)."""

    root: Path
    limits: PhotoLimits = field(default_factory=PhotoLimits)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PhotoStore:
        limits = PhotoLimits(
            max_bytes=int(config["PHOTO_MAX_BYTES"]), max_count=int(config["PHOTO_MAX_COUNT"])
        )
        return cls(Path(config["PHOTO_DIR"]), limits)


@dataclass(frozen=True)
class PreparedPhoto:
    """An upload that passed every check, re-encoded, not yet written anywhere."""

    photo: bytes
    thumb: bytes
    meta: dict[str, Any]
    upload_sha256: str  # of the bytes as uploaded: what makes a replay the same report


def prepare_photos(uploads: Sequence[bytes], limits: PhotoLimits) -> list[PreparedPhoto]:
    """Validate and re-encode every upload; nothing is written.

    Raises InvalidInput (422) for too many photos or any bad image, PhotoTooLarge (413) when
    one is too large; every bad photo is named (``photos[i]``) in one answer.
    """
    check_photo_count(len(uploads), limits, field=FIELD)
    prepared: list[PreparedPhoto] = []
    errors: list[FieldError] = []
    too_large = False
    for index, data in enumerate(uploads):
        try:
            photo, thumb, meta = process_photo(data, limits, field=f"{FIELD}[{index}]")
        except InvalidInput as exc:
            too_large = too_large or isinstance(exc, PhotoTooLarge)
            errors.extend(exc.errors)
            continue
        prepared.append(PreparedPhoto(photo, thumb, meta, hashlib.sha256(data).hexdigest()))
    if errors:
        # One oversize file makes the whole request "too large": the client must shrink it
        # before anything else about the request matters.
        error_type = PhotoTooLarge if too_large else InvalidInput
        noun = "photo was" if len(errors) == 1 else "photos were"
        raise error_type(f"{len(errors)} {noun} not accepted", errors=errors)
    return prepared


@dataclass
class PhotoStorageError(GridopsError):
    """The photo files cannot be written (503; 507 when the storage is full). Transient for
    the client: nothing of the request is stored, and a retry with the same report is safe."""

    status: int = 503
    title: str = "Photo storage unavailable"
    type_slug: str = "photo-storage-unavailable"


def storage_error(exc: OSError) -> PhotoStorageError:
    """The problem to answer for an OSError of the photo store. The path is logged for the
    operator, not told to the client; the system's reason is told to both."""
    log.error("photo storage failed: %s", exc)
    reason = os.strerror(exc.errno) if exc.errno else "input/output error"
    if exc.errno in NO_ROOM:
        return PhotoStorageError(
            f"The photo storage is full ({reason}); nothing was stored. Retry later.",
            status=507,
            title="Insufficient storage",
            type_slug="photo-storage-full",
            headers={"Retry-After": "300"},
        )
    return PhotoStorageError(
        f"The photo storage cannot be written ({reason}); nothing was stored. Retry later.",
        headers={"Retry-After": "60"},
    )


class PhotoWrites:
    """The photo files written for one transaction; deleted again if the transaction fails.

    Use as ``with PhotoWrites(store) as writes: …; writes.commit(session)``.
    """

    def __init__(self, store: PhotoStore) -> None:
        self.store = store
        self.written: list[StoredPhoto] = []
        self.committing = False

    def __enter__(self) -> PhotoWrites:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            return
        if self.committing and self.written:
            # A connection lost during COMMIT leaves its outcome unknown: the rows may be in.
            # Deleting the files could leave a case without its photos; keeping them costs
            # disk until the sweep finds they have no row.
            log.warning(
                "commit failed (%s); %d photo files kept for the orphan sweep",
                exc_type.__name__,
                len(self.written),
            )
            self.written.clear()
            return
        self.discard()

    def commit(self, session: Session) -> None:
        """Commit the transaction these files belong to."""
        self.committing = True
        session.commit()

    def discard(self) -> None:
        """Delete every file written so far (idempotent)."""
        for stored in self.written:
            with contextlib.suppress(OSError):
                delete_stored(self.store.root, stored)
        self.written.clear()

    def write(self, prepared: PreparedPhoto) -> StoredPhoto:
        """Write one prepared photo and its thumbnail, and keep it for ``discard``; raises
        PhotoStorageError (503/507) when the store cannot take them."""
        try:
            stored = _write_prepared(self.store.root, prepared)
        except OSError as exc:  # an unwritable folder, a full disk: not the client's fault
            raise storage_error(exc) from exc
        self.written.append(stored)
        return stored


def _write_prepared(root: Path, prepared: PreparedPhoto) -> StoredPhoto:
    # Already processed: writing only (store_photo would decode and re-encode again, about
    # 0.4 s per 12 MP photo).
    return photos.store_processed(root, prepared.photo, prepared.thumb, prepared.meta)


def attach_photos(
    session: Session,
    writes: PhotoWrites,
    case_id: int,
    prepared: Sequence[PreparedPhoto],
    *,
    event_version: int | None = None,
    uploaded_by: int | None = None,
) -> list[int]:
    """Write the files and insert their rows in the caller's transaction; returns photo ids.

    ``event_version`` ties the photos to the case event they came with (NULL: the report's
    own photos). The caller commits inside the ``writes`` block.
    """
    ids: list[int] = []
    for item in prepared:
        stored = writes.write(item)
        ids.append(
            session.execute(
                text(
                    "INSERT INTO incident_photo (incident_id, event_version, path, thumb_path, "
                    "sha256, width, height, bytes, content_type, uploaded_by) VALUES (:case, "
                    ":version, :path, :thumb, :sha, :width, :height, :bytes, :type, :by) "
                    "RETURNING id"
                ),
                {
                    "case": case_id,
                    "version": event_version,
                    "path": stored.path,
                    "thumb": stored.thumb_path,
                    "sha": stored.sha256,
                    "width": stored.width,
                    "height": stored.height,
                    "bytes": stored.bytes,
                    "type": stored.content_type,
                    "by": uploaded_by,
                },
            ).scalar_one()
        )
    return ids


def intake_with_photos(
    session: Session,
    actor: Actor,
    report: Mapping[str, Any],
    prepared: Sequence[PreparedPhoto],
    writes: PhotoWrites,
) -> tuple[dict[str, Any], bool]:
    """``intake`` plus the report's photos; returns (incident, created). The caller commits.

    The raw uploads' digests are part of the report's fingerprint: a replay with the same
    photos returns the stored incident (and writes nothing), other photos are a 409.
    """
    digests = [p.upload_sha256 for p in prepared]
    incident, created = intake(session, actor, report, photos=digests)
    if created and prepared:
        attach_photos(session, writes, incident["id"], prepared, uploaded_by=actor.user_id)
    return incident, created


# -- who sees them -------------------------------------------------------------------------


def sees_in_full(session: Session, actor: Actor, case_id: int) -> bool:
    """May ``actor`` see case ``case_id`` in full (reporter, point, photos)?

    Yes for roles with full access where the case lies, and for a department handler once the
    case is routed to their department (inside that department's area). Planners never.
    """
    scope = actor.scope()
    conditions = [scope.point_in_full("t.geom")]
    params: dict[str, Any] = {"id": case_id, **scope.params()}
    for n, assignment in enumerate(actor.assignments):
        if assignment.role == "department_handler" and assignment.department_id is not None:
            conditions.append(
                f"(t.department_id = :dept{n} AND EXISTS (SELECT 1 FROM admin_area a "
                f"WHERE a.code = :dept_area{n} AND ST_Covers(a.geom, t.geom)))"
            )
            params[f"dept{n}"] = assignment.department_id
            params[f"dept_area{n}"] = assignment.department_area
    where = " OR ".join(conditions)
    found = session.execute(
        text(f"SELECT EXISTS (SELECT 1 FROM incident t WHERE t.id = :id AND ({where}))"), params
    ).scalar()
    return bool(found)


def list_photos(session: Session, case_id: int) -> list[dict[str, Any]]:
    """The photos of a case, oldest first (the report's, then each event's)."""
    rows = session.execute(
        text(
            "SELECT id, event_version, width, height, created_at FROM incident_photo "
            "WHERE incident_id = :id ORDER BY id"
        ),
        {"id": case_id},
    ).all()
    return [
        {
            "id": r.id,
            "event_version": r.event_version,
            "width": r.width,
            "height": r.height,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]


@dataclass(frozen=True)
class PhotoFile:
    """A stored file ready to send: its absolute path and a strong ETag for this size."""

    path: Path
    etag: str


def photo_file(
    session: Session, actor: Actor, root: Path, case_id: int, photo_id: int, size: str = "full"
) -> PhotoFile:
    """The file of photo ``photo_id`` of case ``case_id`` for ``actor``; NotFound unless they
    see the case in full and the photo belongs to it. The caller has checked the jurisdiction
    (a case outside it is NotFound there already)."""
    if size not in SIZES:
        raise InvalidInput(
            f"size must be one of {', '.join(SIZES)}", [FieldError("size", "thumb, or leave out")]
        )
    if not sees_in_full(session, actor, case_id):
        raise NotFound("No such photo.")
    row = session.execute(
        text(
            "SELECT path, thumb_path, sha256 FROM incident_photo "
            "WHERE id = :photo AND incident_id = :case"
        ),
        {"photo": photo_id, "case": case_id},
    ).first()
    if row is None:
        raise NotFound("No such photo.")
    if size == "thumb":
        return PhotoFile(open_stored(root, row.thumb_path), f"{row.sha256}-thumb")
    return PhotoFile(open_stored(root, row.path), row.sha256)


__all__ = [
    "PhotoFile",
    "PhotoStorageError",
    "PhotoStore",
    "PhotoWrites",
    "PreparedPhoto",
    "attach_photos",
    "intake_with_photos",
    "list_photos",
    "photo_file",
    "prepare_photos",
    "sees_in_full",
    "storage_error",
]


ORPHAN_MIN_AGE = timedelta(days=1)


def sweep_orphans(
    session: Session, root: Path, *, older_than: timedelta = ORPHAN_MIN_AGE
) -> dict[str, int]:
    """Delete photo files (and upload temp files) that no ``incident_photo`` row names and
    that are older than ``older_than``; a younger file may belong to a request still in its
    transaction. Returns the counts of files kept and removed and the bytes freed."""
    root = Path(root)
    if not root.is_dir():
        return {"files": 0, "removed": 0, "bytes_freed": 0}
    cutoff = time.time() - older_than.total_seconds()
    seen = removed = freed = 0
    # Stored paths are "<yyyy>/<mm>/<name>"; one month's folder and its rows at a time.
    for year in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for month in sorted(p for p in year.iterdir() if p.is_dir() and not p.is_symlink()):
            prefix = f"{year.name}/{month.name}/"
            named = set()
            for pair in session.execute(
                text(
                    "SELECT path, thumb_path FROM incident_photo "
                    "WHERE path LIKE :p OR thumb_path LIKE :p"
                ),
                {"p": prefix.replace("%", r"\%").replace("_", r"\_") + "%"},
            ):
                named.update(pair)
            for entry in os.scandir(month):
                if not entry.is_file(follow_symlinks=False):
                    continue
                seen += 1
                info = entry.stat(follow_symlinks=False)
                if prefix + entry.name in named or info.st_mtime > cutoff:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
                    freed += info.st_size
    if removed:
        log.info("photo sweep: removed %d orphan files (%d bytes)", removed, freed)
    return {"files": seen, "removed": removed, "bytes_freed": freed}
