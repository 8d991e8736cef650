"""Patrol tracks: GPS traces uploaded by tablets and the share of unit grids visited."""
