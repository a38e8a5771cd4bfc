"""Schemathesis fuzzes the REST API from its own /openapi.json, in process: no input may answer a 500, and every
answer must match the document (status codes, content types, bodies), for valid and invalid inputs alike.

Driven per operation with Hypothesis (derandomized: the same cases every run): schemathesis' lazy pytest loader
reads `Function._nodeid`, which pytest 9 no longer has.
"""
from __future__ import annotations

import base64
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from tests.conftest import LOCAL

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# per operation and mode: the whole run takes about 20 s on 2 cores (FUZZ_EXAMPLES=300 for a deeper local run)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="module")
def api_schema(module_studio):
    # no model loaded: generation answers at once (409) instead of decoding audio for every example;
    # the hub is a closed local port: never the network
    _ctx, client = module_studio(hf_endpoint="http://127.0.0.1:9")
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, headers={"host": "127.0.0.1"})
    # the switch streams Server-Sent Events for as long as a download takes: tested in test_api.py
    return schema.exclude(path="/api/models/current", method="POST")


def _runs(schema):
    """(label, strategy): every operation with valid and invalid inputs; a model's routes also with a real model
    (random ids only ever reach the 404)."""
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        for mode in GenerationMode:
            yield f"{name} ({mode.value})", operation.as_strategy(generation_mode=mode)
        if "{model_id}" in operation.path:
            yield f"{name} (studio-tiny)", operation.as_strategy(path_parameters={"model_id": "studio-tiny"})


FUZZ_ADMIN = ("fuzz-admin-7f3a9c", "fuzz-password-51d2")  # a name no generated path parameter will hit


@pytest.fixture(scope="module")
def accounts_schema(module_studio):
    """The account routes of a studio with a login, fuzzed as its admin (HTTP Basic: a token could be revoked by
    a generated DELETE /api/tokens/{id}); the rest of the API is fuzzed without a login above."""
    from argon2 import PasswordHasher

    ctx, client = module_studio(auth=FUZZ_ADMIN, hf_endpoint="http://127.0.0.1:9")
    ctx.accounts.hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    headers = {"host": "127.0.0.1", "authorization": "Basic " + base64.b64encode(":".join(FUZZ_ADMIN).encode()).decode()}
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, headers=headers)
    return schema.include(path_regex=r"^/api/(me|users|tokens)"), headers


def test_rest_api_fuzz(api_schema):
    _fuzz(api_schema, minimum=30)


def test_account_routes_fuzz_with_a_login(accounts_schema):
    schema, headers = accounts_schema
    _fuzz(schema, minimum=8, headers=headers)


def _fuzz(schema, minimum: int, headers: dict | None = None) -> None:
    failures, ran = [], 0
    for label, strategy in _runs(schema):
        @given(case=strategy)
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(base_url=LOCAL, checks=CHECKS, headers=headers)

        try:
            run()
            ran += 1
        except Unsatisfiable:
            continue  # no invalid input exists (e.g. a free-text path parameter)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every failure, reported together
            ran += 1
            failures.append(f"{label}: {exc}")
    assert ran >= minimum, ran
    assert not failures, "\n\n".join(failures)
