"""Dispatch: routing, assignment and the dispatcher's side of cases."""
