"""Who acts: the signed-in person's name and role, for permissions and audit records (shared by every layer)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LOCAL_USER = "local"  # a person using a studio that runs without auth
SYSTEM_USER = "system"  # the studio itself (seeding the stored settings from registry.yaml)

# admin: models, adapters, settings, training, datasets, evaluation runs, A/B tests, users, everyone's jobs.
# member: generate, rate, vote in A/B tests, see the queue, manage their own jobs.
Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")


@dataclass(frozen=True)
class Actor:
    """The person (or token) behind a request. Records keep `name`; permissions read `role`."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner: str) -> bool:
        """Whose records (jobs, uploads) this actor may see and manage: an admin everyone's, a member their own."""
        return self.is_admin or owner == self.name


# Without auth, the one person at the keyboard may do everything.
LOCAL_ACTOR = Actor(LOCAL_USER, "admin")
