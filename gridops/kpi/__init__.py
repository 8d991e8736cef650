"""KPIs of case handling (GB/T 30428): filed, closed, closed on time, rework, extensions,
overdue, per period and per area, department or person."""
