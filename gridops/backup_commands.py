"""``gridops backup [--out DIR]``, ``gridops backup verify DIR``, ``gridops restore DIR``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gridops.config import ConfigError, database_url, load_config


def _settings() -> tuple[str, Path]:
    """(database URL, photo folder) of the command's configuration (GRIDOPS_* variables)."""
    from gridops.commands import command_app

    try:
        app = command_app()
        config: dict[str, Any] = dict(app.config) if app is not None else load_config()
        return database_url(config), Path(config["PHOTO_DIR"])
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _megabytes(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.group("backup", invoke_without_command=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to create (default: var/backups/<UTC time>); must not exist.",
)
@click.option(
    "--lock-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for a table locked by a schema change before giving up.",
)
@click.pass_context
def backup_cli(ctx: click.Context, out: Path | None, lock_timeout: float) -> None:
    """Back up the database (pg_dump custom format) and the photo files, with a manifest of
    SHA-256 digests, row counts and geometry checksums taken in the dump's own snapshot.

    Safe while the app runs. All or nothing: an interrupted backup leaves no folder under the
    final name. Check a backup with `gridops backup verify DIR`.
    """
    if ctx.invoked_subcommand is not None:
        if out is not None:
            raise click.UsageError("--out belongs to `gridops backup` itself, not to a subcommand")
        return
    from gridops.backup import BackupError, create_backup

    url, photo_dir = _settings()
    try:
        result = create_backup(url, photo_dir, out, lock_timeout_s=lock_timeout, log=_log)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    tables = result.manifest["tables"]
    click.echo(
        f"backup written to {result.path}: {len(tables)} tables, "
        f"{sum(t['rows'] for t in tables.values())} rows, dump {_megabytes(result.dump_bytes)}, "
        f"{result.photo_count} photo files, {_megabytes(result.total_bytes)} in all, "
        f"{result.seconds:.1f} s"
    )
    if result.missing_photos:
        click.echo(
            f"warning: {len(result.missing_photos)} photo file(s) the database refers to are "
            f"not in {photo_dir} (first: {result.missing_photos[0]}); "
            "`gridops backup verify` will fail on this backup",
            err=True,
        )


@backup_cli.command("verify")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
def backup_verify(directory: Path) -> None:
    """Check DIRECTORY's digests, restore its dump into a scratch database on the configured
    server (dropped afterwards) and compare every table's rows and geometry with the manifest.

    Exits 1 on any mismatch.
    """
    from gridops.backup import BackupError, format_checks, verify_backup

    url, _ = _settings()
    try:
        report = verify_backup(directory, url, log=_log)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    database = report.manifest["database"]
    click.echo(
        f"backup of {database.get('name')} at {report.manifest.get('created_at')}, schema "
        f"{database.get('schema_revision')}, PostgreSQL {database.get('server_version')}, "
        f"PostGIS {database.get('postgis_version')}"
    )
    files = report.manifest["files"]
    click.echo(f"files: {len(files)} listed, {len(report.file_problems)} problem(s)")
    for problem in report.file_problems:
        click.echo(f"  BAD {problem}")
    if report.restored:
        click.echo(format_checks(report.tables))
        for path in report.photos_missing[:20]:
            click.echo(f"  MISSING photo file referenced by the database: {path}")
    else:
        click.echo("the dump was not restored: the dump or the manifest is damaged")
    verdict = "OK" if report.ok else "FAILED"
    click.echo(f"verify {verdict} in {report.seconds:.1f} s")
    if not report.ok:
        sys.exit(1)


@click.command("restore")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--yes", is_flag=True, help="Replace the contents of a database that has tables.")
def restore_command(directory: Path, yes: bool) -> None:
    """Restore the backup in DIRECTORY into the configured database and photo folder.

    Checks every digest first. Refuses a database that has tables unless --yes. Stop the app
    and the scheduler first. Exits 1 if the restored tables do not match the manifest.
    """
    from gridops.backup import BackupError, format_checks, restore_backup

    url, photo_dir = _settings()
    try:
        report = restore_backup(directory, url, photo_dir, replace=yes, log=_log)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(format_checks(report.tables))
    click.echo(
        f"photos: {report.photos_written} written, {report.photos_kept} already in place "
        f"({photo_dir})"
    )
    verdict = "OK" if report.ok else "FAILED: the restored tables differ from the manifest"
    click.echo(
        f"restore {verdict} in {report.seconds:.1f} s; schema revision "
        f"{report.schema_revision} (run `gridops db upgrade` if this gridops is newer)"
    )
    if not report.ok:
        sys.exit(1)


COMMANDS = (backup_cli, restore_command)
