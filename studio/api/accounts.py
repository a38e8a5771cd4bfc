"""The /api/me, /api/users and /api/tokens routes: one's own account, the admins' user management, API tokens.

A studio without a login (no --auth, no accounts) answers /api/me as its local admin, and refuses the rest with
409 `accounts_off`, saying how to turn accounts on."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from studio.api.auth import current_actor, current_session
from studio.api.errors import error_responses
from studio.api.params import RecordId
from studio.context import AppContext
from studio.errors import Forbidden
from studio.services.accounts import (AccountCreate, AccountInfo, AccountUpdate, NewToken, PasswordChange,
                                      TokenCreate, TokenInfo)
from studio.users import Role

OFF = "accounts_off: this studio has no login (start it with STUDIO_AUTH=USER:PASS to turn accounts on)"
ADMIN = "forbidden: needs an admin"


class Me(BaseModel):
    name: str = Field(description="who the request acts as ('local' in a studio without a login)")
    role: Role
    auth: bool = Field(description="whether this studio asks for a login (accounts, roles and tokens are on)")


class LoggedOut(BaseModel):
    sessions_ended: int = Field(description="login sessions ended (browsers and gradio_client logins); API tokens "
                                            "stay valid: revoke them with DELETE /api/tokens/{token_id}")


def build_accounts_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["accounts"])
    service = ctx.accounts

    @router.get("/me", response_model=Me)
    def me(request: Request) -> Me:
        """Who you are here: your name, your role, and whether this studio asks for a login."""
        actor = current_actor(request)
        return Me(name=actor.name, role=actor.role, auth=service.required)

    @router.put("/me/password", response_model=AccountInfo, responses=error_responses({
        409: OFF, 422: "wrong_password: the current password is wrong; weak_password: too short, too long or the "
                       "user name; invalid_body"}))
    def change_password(body: PasswordChange, request: Request) -> AccountInfo:
        """Change your own password (the current one proves it is you). Your other login sessions end; this one
        stays. (A --auth user's password is set again from --auth at the next start.)"""
        service.check_on()
        return service.change_password(current_actor(request), body, keep_session=current_session(request))

    @router.post("/me/logout-everywhere", response_model=LoggedOut, responses=error_responses({409: OFF}))
    def logout_everywhere(request: Request) -> LoggedOut:
        """End every login session of yours: every browser and gradio_client login, this one included."""
        service.check_on()
        return LoggedOut(sessions_ended=service.close_all_sessions(current_actor(request)))

    # ---- users (admins) -----------------------------------------------------------------------------------------
    @router.get("/users", response_model=list[AccountInfo], responses=error_responses({403: ADMIN, 409: OFF}))
    def list_users(request: Request) -> list[AccountInfo]:
        """Every account, by name."""
        service.check_on()
        return service.list_accounts(current_actor(request))

    @router.post("/users", status_code=201, response_model=AccountInfo, responses=error_responses({
        403: ADMIN, 409: f"user_exists: the name is taken; {OFF}",
        422: "invalid_user_name, weak_password, invalid_body"}))
    def create_user(body: AccountCreate, request: Request) -> AccountInfo:
        """Create an account (a member unless `role` says admin). Give the person their password another way."""
        service.check_on()
        return service.create_account(current_actor(request), body)

    @router.patch("/users/{name}", response_model=AccountInfo, responses=error_responses({
        403: ADMIN, 404: "user_not_found: no such user",
        409: f"last_admin: the only enabled admin cannot be demoted or disabled; {OFF}",
        422: "weak_password, invalid_body"}))
    def update_user(name: str, body: AccountUpdate, request: Request) -> AccountInfo:
        """Change a user's role, disable or enable them, or set a new password. Disabling or a new password ends
        their login sessions at once; a disabled account's API tokens stop working too, and a role change applies
        to their sessions and tokens at their next request."""
        service.check_on()
        return service.update_account(current_actor(request), name, body)

    # ---- API tokens ---------------------------------------------------------------------------------------------
    @router.get("/tokens", response_model=list[TokenInfo], responses=error_responses({
        403: "forbidden: only an admin can list everyone's tokens (all=true)", 409: OFF}))
    def list_tokens(request: Request, all: bool = Query(False, description="everyone's tokens (admins)")
                    ) -> list[TokenInfo]:
        """Your API tokens, newest first: names, prefixes, last use and state; never the secret."""
        service.check_on()
        return service.list_tokens(current_actor(request), everyone=all)

    @router.post("/tokens", status_code=201, response_model=NewToken, responses=error_responses({
        403: "token_cannot_create_tokens: sent with an API token", 409: f"too_many_tokens: revoke some first; {OFF}",
        422: "invalid_token_name, invalid_body"}))
    def create_token(body: TokenCreate, request: Request) -> NewToken:
        """A new API token acting as you, with your role (now and after any change of it). The secret is in this
        answer only: send it as `Authorization: Bearer <token>` (REST, or gradio_client's `headers=`)."""
        service.check_on()
        if getattr(request.state, "by_token", False):  # a leaked token must not make itself a longer-lived heir
            raise Forbidden("An API token cannot create tokens: create them logged in (the page's Account tab, or "
                            "with your password over HTTP Basic).", code="token_cannot_create_tokens")
        return service.create_token(current_actor(request), body)

    @router.delete("/tokens/{token_id}", response_model=TokenInfo, responses=error_responses({
        404: "token_not_found: no such token of yours", 409: OFF}))
    def revoke_token(token_id: RecordId, request: Request) -> TokenInfo:
        """Revoke one of your tokens (an admin: anyone's); it is refused from the next request on. Revoking twice
        is fine."""
        service.check_on()
        return service.revoke_token(current_actor(request), token_id)

    return router
