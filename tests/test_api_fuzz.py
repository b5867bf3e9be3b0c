"""Schemathesis against the app's own OpenAPI document, in-process (WSGI), with a real
token, over the route matrix's seeded world.

Every operation of /api/v1/openapi.json is fuzzed three ways: valid data with ids drawn
freely (mostly unknown ones), valid data aimed at seeded ids, and invalid data. Every
response must be no 5xx, carry a documented status code and content type, and match
its documented schema. The run is bounded and derandomized (the same cases every run)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_route_matrix import World, build_world

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
NEGATIVE_CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES = {"free": 12, "seeded": 12, "invalid": 10}


def _seeded_ids(world: World, path: str) -> list[dict[str, Any]]:
    """Path parameters that name things which exist, for the operation at ``path``."""
    if "{id}" in path:
        if path.startswith("/findings/") or path.startswith("/public/"):
            ids = [world.findings["net"], world.findings["conf"], world.requests["rel"]]
        elif path.startswith("/review/requests/"):
            ids = list(world.requests.values())
        elif path.startswith("/review/flags/"):
            ids = list(world.flags.values())
        elif path.startswith("/review/affiliations/"):
            ids = [world.affiliation]
        else:
            ids = [1]
        return [{"id": i} for i in ids]
    if "{attachment_id}" in path:
        return [{"attachment_id": a} for a in list(world.attachments.values())[:3]]
    if "{slug}" in path:
        return [{"slug": world.orgs["east"]}]
    if "{key}" in path:
        return [{"key": "network-terms"}]
    return []


def _fuzz(strategy: Any, examples: int, headers: dict[str, str], checks: list[Any],
          cases: Counter[str], name: str) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        cases[name] += 1
        case.call_and_validate(headers=headers, checks=checks)

    run()


def test_api_fuzz(app: Flask, api_token: Callable[[Any], dict[str, str]]) -> None:
    world = World()
    people = build_world(world)
    headers = api_token(people["admin"])
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    cases: Counter[str] = Counter()
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        variants: list[tuple[str, GenerationMode, dict[str, Any] | None]] = [
            ("free", GenerationMode.POSITIVE, None),
            ("invalid", GenerationMode.NEGATIVE, None),
        ]
        variants += [("seeded", GenerationMode.POSITIVE, ids)
                     for ids in _seeded_ids(world, op.path)]
        for name, mode, ids in variants:
            strategy = op.as_strategy(generation_mode=mode, path_parameters=ids)
            checks = CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS

            try:
                _fuzz(strategy, EXAMPLES[name], headers, checks, cases, name)
            except BaseException as exc:  # schemathesis raises exception groups
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures[f"{op.method.upper()} {op.path} ({name}, {ids})"] = str(exc)[:3000]
    total = sum(cases.values())
    print(f"\nAPI fuzzing: {operations} operations, {total} cases "
          f"({', '.join(f'{k} {v}' for k, v in sorted(cases.items()))})")
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    # every documented operation but the document itself (schemathesis leaves it out)
    documented = sum(len(ops) for ops in schema.raw_schema["paths"].values())
    assert operations == documented - 1


def test_api_refuses_nul_characters(app: Flask,
                                    api_token: Callable[[Any], dict[str, str]]) -> None:
    """PostgreSQL cannot store NUL: the API refuses it up front (SQLite would accept it,
    so the fuzzing above cannot tell) and nothing is written."""
    world = World()
    people = build_world(world)
    headers = api_token(people["admin"])
    client = app.test_client()
    net = world.findings["net"]
    for method, url, body in (
        ("POST", f"/api/v1/findings/{net}/replies", {"body": "a\x00b"}),
        ("POST", f"/api/v1/findings/{net}/flags", {"reason": "x", "suggested_level": "\x00"}),
        ("POST", "/api/v1/admin/orgs", {"slug": "nul", "name": "N\x00", "ceiling": "network",
                                        "domains": ["nul.example"]}),
        ("POST", f"/api/v1/review/requests/{world.requests['pub']}/withdraw",
         {"reason": "\x00"}),
        ("POST", "/api/v1/review/affiliations", {"orgs": ["north", "east"], "note": "\x00"}),
        ("GET", "/api/v1/findings?q=a%00b", None),
        ("GET", "/api/v1/admin/audit?action=%00", None),
    ):
        response = client.open(url, method=method, json=body, headers=headers)
        assert response.status_code == 400, (url, response.status_code)
        assert response.get_json()["error"]["code"] == "nul_character"
    response = client.patch("/api/v1/admin/orgs/a%00b", json={"name": "x"}, headers=headers)
    assert response.status_code == 404
