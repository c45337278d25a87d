"""The web console: the engine and the review worklist in a browser, under logins and roles.

A Starlette app run by uvicorn (``crosswalk console``), pages rendered on the server with
Jinja2 and enhanced by htmx (vendored in ``static/`` with its licence; no build step). It reads
and writes the store through the engine's own functions, and records every page that shows
PHI and every action in the audit trail with the user and their address.
"""
