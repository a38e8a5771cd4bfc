"""Who made a change, for audit records, when no signed-in person did (shared by every layer)."""
from __future__ import annotations

LOCAL_USER = "local"  # a person using a studio that runs without auth
SYSTEM_USER = "system"  # the studio itself (seeding the stored settings from registry.yaml)
