"""Open311 GeoReport v2 at ``/open311/v2/``: the public face of the case log.

``service`` holds the plain functions (a SQLAlchemy Session, no Flask); ``views`` the routes,
the api_key handling and the XML/JSON rendering. The privacy rules are in ``service``.
"""
