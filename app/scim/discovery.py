"""The SCIM discovery documents (RFC 7644 section 4), built with scim2-models."""

from __future__ import annotations

from typing import Any

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    ETag,
    Filter,
    Patch,
    ResourceType,
    ServiceProviderConfig,
    Sort,
    User,
)

from app.scim.service import LIST_SCHEMA, MAX_COUNT

_CTX = Context.RESOURCE_QUERY_RESPONSE


def service_provider_config(base: str) -> dict[str, Any]:
    config = ServiceProviderConfig(
        patch=Patch(supported=True), bulk=Bulk(supported=False, max_operations=0,
                                              max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_COUNT),
        change_password=ChangePassword(supported=False), sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[AuthenticationScheme(
            type="oauthbearertoken", name="Bearer token",
            description="One token per organization: enclave org scim-token SLUG",
            primary=True)])
    body = config.model_dump(scim_ctx=_CTX)
    body["meta"] = {"resourceType": "ServiceProviderConfig",
                    "location": f"{base}/ServiceProviderConfig"}
    return body


def _user_type(base: str) -> dict[str, Any]:
    body = ResourceType.from_resource(User).model_dump(scim_ctx=_CTX)
    body["meta"] = {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/User"}
    return body


def resource_types(base: str) -> dict[str, Any]:
    return {"schemas": [LIST_SCHEMA], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1,
            "Resources": [_user_type(base)]}


def schemas(base: str) -> dict[str, Any]:
    schema = User.to_schema().model_dump(scim_ctx=_CTX)
    schema["meta"] = {"resourceType": "Schema", "location": f"{base}/Schemas/{schema['id']}"}
    return {"schemas": [LIST_SCHEMA], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1,
            "Resources": [schema]}
