"""Shared bounded parameter types: an id or offset beyond 64 bits is a 422 here, never an overflow in the database."""
from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

INT64_MAX = 2 ** 63 - 1

RecordId = Annotated[int, Path(ge=1, le=INT64_MAX, description="a record id (1 to 2^63-1)")]
Offset = Annotated[int, Query(ge=0, le=INT64_MAX, description="how many to skip")]
Limit = Annotated[int, Query(ge=1, le=500, description="how many to return (at most 500)")]
