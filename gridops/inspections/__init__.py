"""Inspections of enterprises and service outlets: risk-based plans, the daily tasks placed
with the inspectors of the area by capacity, each inspector's day in route order, and the
results that feed back into the risk.

- ``risk``: the explainable risk score and frequency; ``refresh_plans(session, today)``.
- ``assign``: balanced assignment (min-cost flow), pure.
- ``routes``: the order of a day (OR-Tools routing on EPSG:4547 metres), pure.
- ``tasks``: ``create_due_tasks(session, day)``, the planner job.
- ``results``: ``record_result(...)``; ``queries``: what the API reads; ``views``: the API.
"""
