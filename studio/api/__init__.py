"""REST API under /api: translates HTTP <-> service calls and domain errors -> status codes."""
