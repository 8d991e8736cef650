"""Scheduled work: the SLA sweep, notification delivery, inspection tasks, patrol coverage and
the nightly KPI snapshot, run by one ``gridops scheduler`` process (see ``runner``) from
importable, idempotent job functions (see ``jobs``)."""
