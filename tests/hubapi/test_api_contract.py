"""The checked-in API contract (docs/asyncapi.json, docs/schemas/, generated doc blocks) equals the code.

``jsonschema`` is not a dependency, so payloads are validated by a small validator for exactly the
JSON Schema keywords pydantic emits for our models; it fails on any keyword it does not know, so a
model change cannot slip past it unchecked.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from hubapi import schema, signing, topics
from hubapi.models import Answer, BatteryUnit, CommandClaims, Online, RejectReason, Status
from wire import messages

DOCS = schema.ROOT / "docs"


class SchemaError(AssertionError):
    """A value does not match a schema."""


_ANNOTATIONS = {"title", "description", "default", "$schema", "$id", "$defs"}


def validate(value: Any, node: dict[str, Any], defs: dict[str, Any], path: str = "$") -> None:
    """Raise SchemaError unless ``value`` matches ``node`` (the keyword subset pydantic emits)."""
    unknown = set(node) - _ANNOTATIONS - {"$ref", "anyOf", "type", "enum", "const", "pattern", "minLength",
                                          "maxLength", "minimum", "maximum", "properties", "required",
                                          "additionalProperties", "items", "propertyNames"}
    if unknown:
        raise NotImplementedError(f"{path}: teach this validator the keywords {sorted(unknown)}")
    if "$ref" in node:
        validate(value, defs[node["$ref"].rsplit("/", 1)[1]], defs, path)
    if "anyOf" in node:
        errors = []
        for option in node["anyOf"]:
            try:
                validate(value, option, defs, path)
                break
            except SchemaError as exc:
                errors.append(str(exc))
        else:
            raise SchemaError(f"{path}: matches no option: {errors}")
    types = {"string": str, "integer": int, "number": (int, float), "object": dict, "boolean": bool,
             "null": type(None), "array": list}
    if "type" in node and (not isinstance(value, types[node["type"]])
                           or (isinstance(value, bool) and node["type"] in ("integer", "number"))):
        raise SchemaError(f"{path}: {value!r} is not {node['type']}")
    if "enum" in node and value not in node["enum"]:
        raise SchemaError(f"{path}: {value!r} not in {node['enum']}")
    if "const" in node and value != node["const"]:
        raise SchemaError(f"{path}: {value!r} != {node['const']!r}")
    if "pattern" in node and not re.search(node["pattern"], value):
        raise SchemaError(f"{path}: {value!r} does not match {node['pattern']}")
    if "minLength" in node and len(value) < node["minLength"]:
        raise SchemaError(f"{path}: shorter than {node['minLength']}")
    if "maxLength" in node and len(value) > node["maxLength"]:
        raise SchemaError(f"{path}: longer than {node['maxLength']}")
    if "minimum" in node and value < node["minimum"]:
        raise SchemaError(f"{path}: below {node['minimum']}")
    if "maximum" in node and value > node["maximum"]:
        raise SchemaError(f"{path}: above {node['maximum']}")
    if "items" in node:
        for index, item in enumerate(value):
            validate(item, node["items"], defs, f"{path}[{index}]")
    if "propertyNames" in node:
        for key in value:
            validate(key, node["propertyNames"], defs, f"{path}[{key!r}] (a key)")
    if isinstance(node.get("additionalProperties"), dict):
        for key, item in value.items():
            if key not in node.get("properties", {}):
                validate(item, node["additionalProperties"], defs, f"{path}.{key}")
    if "properties" in node:
        missing = set(node.get("required", [])) - set(value)
        if missing:
            raise SchemaError(f"{path}: missing {sorted(missing)}")
        extra = set(value) - set(node["properties"])
        if extra and node.get("additionalProperties") is False:
            raise SchemaError(f"{path}: unexpected {sorted(extra)}")
        for key, item in value.items():
            if key in node["properties"]:
                validate(item, node["properties"][key], defs, f"{path}.{key}")


def checked_in_schema(model_name: str) -> dict[str, Any]:
    return json.loads((DOCS / "schemas" / f"{model_name}.json").read_text())


def examples() -> list[tuple[schema.Channel, str, Any]]:
    by_name = {channel.name: channel for channel in schema.CHANNELS}
    return [(by_name[name], title, model) for name, items in schema.EXAMPLES.items() for title, model in items]


def test_checked_in_contract_files_equal_what_the_models_generate():
    problems = schema.drift()
    assert not problems, "\n\n".join(problems) + "\n\nrun `python -m hubapi.schema --write` and commit"


def test_every_status_and_reason_has_a_documented_meaning():
    assert schema.meaning_mismatches() == []


def test_check_reports_a_drifted_file_and_write_repairs_it(tmp_path, capsys):
    shutil.copytree(DOCS, tmp_path / "docs")
    asyncapi = tmp_path / "docs" / "asyncapi.json"
    asyncapi.write_text(asyncapi.read_text().replace('"retain": true', '"retain": false'))
    (tmp_path / "docs" / "schemas" / "Removed.json").write_text("{}")

    assert schema.main(["--check", "--root", str(tmp_path)]) == 1
    report = capsys.readouterr().err
    assert "docs/asyncapi.json (checked in)" in report and re.search(r'\n-\s+"retain": false', report)
    assert "docs/schemas/Removed.json: no longer generated" in report

    assert schema.main(["--write", "--root", str(tmp_path)]) == 0
    assert schema.main(["--check", "--root", str(tmp_path)]) == 0
    assert asyncapi.read_text() == (DOCS / "asyncapi.json").read_text()


def test_check_reports_an_edited_generated_doc_block(tmp_path, capsys):
    shutil.copytree(DOCS, tmp_path / "docs")
    doc = tmp_path / "docs" / "mqtt-api.md"
    doc.write_text(doc.read_text().replace("| `replayed` |", "| `replayed_twice` |"))
    assert schema.main(["--check", "--root", str(tmp_path)]) == 1
    assert "-| `replayed_twice` |" in capsys.readouterr().err


@pytest.mark.parametrize("channel,title,model", examples(), ids=lambda v: v if isinstance(v, str) else None)
def test_example_payload_is_valid_for_its_model_and_its_generated_schema(channel, title, model):
    payload = schema.example_payload(channel, model)
    if channel.encoding == "jws":
        validate(payload, json.loads((DOCS / "asyncapi.json").read_text())["components"]["messages"][channel.name]["payload"], {})
        header, claims_bytes = schema.decode_compact(payload)
        assert header["alg"] == signing.ALGORITHM and header["kid"] == schema.EXAMPLE_KID
        assert model.__class__.model_validate_json(claims_bytes) == model
        payload = json.loads(claims_bytes)
    assert channel.model.model_validate_json(json.dumps(payload)) == model  # round trip through the wire form
    checked_in = checked_in_schema(channel.model.__name__)
    validate(payload, checked_in, checked_in.get("$defs", {}))


def test_example_command_token_verifies_with_the_example_key():
    token = schema.example_token(schema._EXAMPLE_CLAIMS)
    key = OKPKey.import_key(signing.public_key_pem(schema.EXAMPLE_KEY))
    verified = jws.deserialize_compact(token, key, registry=signing.REGISTRY)
    assert CommandClaims.model_validate_json(verified.payload) == schema._EXAMPLE_CLAIMS


@pytest.mark.parametrize("model_name,bad", [
    ("Answer", {"id": "c1", "status": "done", "at": 1.0}),  # unknown status
    ("Answer", {"id": "c1", "status": "accepted", "at": 1.0, "extra": 1}),  # unknown field
    ("Answer", {"id": "c1", "status": "accepted"}),  # at missing
    ("Answer", {"id": "c1", "status": "accepted", "battery": 101, "at": 1.0}),
    ("Online", {"hub": "hub/other", "status": "online"}),  # a topic separator in an id
    ("Online", {"v": 2, "hub": "hub-1", "status": "online"}),
    ("LockState", {"lock": "front", "state": "", "source": "poll", "at": 1.0}),
    ("AuditBatch", {"hub": "h", "last_seq": 1, "entries": [{"seq": 1}]}),  # an entry missing its fields
    ("AuditBatch", {"hub": "h", "last_seq": 1, "missing": ["one"]}),
    ("CommandClaims", {"id": "c1", "hub": "h", "lock": "l", "action": "open", "actor": {"id": "a", "role": "staff"},
                       "iat": 1, "nbf": 1, "exp": 2}),
    ("CommandClaims", {"id": "c1", "hub": "h", "lock": "l", "action": "lock", "actor": {"id": "a", "role": "boss"},
                       "iat": 1, "nbf": 1, "exp": 2}),
])
def test_schema_refuses_what_the_model_refuses(model_name, bad):
    model = next(m for m in schema.payload_models() if m.__name__ == model_name)
    with pytest.raises(ValueError):
        model.model_validate_json(json.dumps(bad))
    checked_in = checked_in_schema(model_name)
    with pytest.raises(SchemaError):
        validate(bad, checked_in, checked_in.get("$defs", {}))


@pytest.mark.parametrize("model", [
    Answer(id=None, status=Status.REJECTED, reason=RejectReason.MALFORMED, at=1.5),
    Online(hub="hub-1", status="offline"),
], ids=["unreadable-command-answer", "last-will"])
def test_payloads_with_null_fields_match_the_schema(model):
    # hubd may send null fields as null rather than leaving them out: both forms must validate.
    checked_in = checked_in_schema(type(model).__name__)
    validate(json.loads(model.model_dump_json()), checked_in, checked_in.get("$defs", {}))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_asyncapi_document_is_consistent_and_every_ref_resolves():
    document = json.loads((DOCS / "asyncapi.json").read_text())
    assert document["asyncapi"] == "3.0.0"
    refs = _refs(document)
    assert refs and all(_resolve(document, ref) is not None for ref in refs)
    channels = {channel.name: channel for channel in schema.CHANNELS}
    assert set(document["channels"]) == set(channels)
    for name, channel in channels.items():
        spec = document["channels"][name]
        params = re.findall(r"\{(\w+)\}", spec["address"])
        assert set(spec.get("parameters", {})) == set(params)
        concrete = {p: f"{p}-1" for p in params}
        assert spec["address"].format(**concrete) == channel.topic(**concrete)  # the address is the topic function's
    actions = {op["channel"]["$ref"].rsplit("/", 1)[1]: op["action"] for op in document["operations"].values()}
    assert actions == {name: channel.direction for name, channel in channels.items()}
    assert actions["commands"] == "receive" and actions["answers"] == "send"  # the hub's point of view


def test_asyncapi_command_message_is_a_jws_string_carrying_command_claims():
    document = json.loads((DOCS / "asyncapi.json").read_text())
    message = document["components"]["messages"]["commands"]
    assert message["contentType"] == "application/jose"
    assert message["payload"]["type"] == "string"
    assert _resolve(document, message["x-jws-payload"]["$ref"])["title"] == "CommandClaims"
    header, _ = schema.decode_compact(message["examples"][0]["payload"])
    validate(header, message["x-jws-header"], {})
    assert document["operations"]["receiveCommands"]["reply"]["channel"] == {"$ref": "#/channels/answers"}


def test_asyncapi_payload_schemas_are_the_models_schemas():
    document = json.loads((DOCS / "asyncapi.json").read_text())
    components = document["components"]["schemas"]
    for model in schema.payload_models():
        standalone = checked_in_schema(model.__name__)
        expected = {k: v for k, v in standalone.items() if k not in ("$schema", "$id", "$defs")}
        # Same schema, only the refs point into components instead of $defs.
        assert json.loads(json.dumps(components[model.__name__]).replace("#/components/schemas/", "#/$defs/")) == expected


def test_acl_confines_each_hub_to_its_own_subtree_in_the_channel_direction():
    root = schema.template(topics.root).format(hub="%u")
    commands = schema.template(topics.commands).format(hub="%u")
    for line in schema.acl().splitlines():
        if line.startswith("pattern "):
            _, access, path = line.split()
            assert path.startswith(root + "/") and access in ("read", "write"), line
    patterns = {tuple(line.split()[1:]) for line in schema.acl().splitlines() if line.startswith("pattern ")}
    assert ("read", commands) in patterns
    assert ("write", commands) not in patterns  # a hub never commands itself
    assert not any(path == f"{root}/#" for _, path in patterns)  # no blanket access, even to its own tree


def test_a_channel_outside_the_hubs_subtree_is_refused(monkeypatch):
    rogue = schema.Channel("rogue", lambda hub: f"other/{topics.root(hub)}", "send", Online, False, "not ours")
    monkeypatch.setattr(schema, "CHANNELS", (*schema.CHANNELS, rogue))
    with pytest.raises(ValueError, match="outside the hub's subtree"):
        schema.acl()


def test_an_undescribed_address_parameter_is_refused(monkeypatch):
    channel = schema.Channel("door", lambda hub, door: f"{topics.root(hub)}/doors/{door}", "send", Online, False, "x")
    monkeypatch.setattr(schema, "CHANNELS", (*schema.CHANNELS, channel))
    with pytest.raises(ValueError, match="PARAMETERS"):
        schema.asyncapi()


def test_generated_markdown_blocks_need_their_markers(tmp_path):
    with pytest.raises(ValueError, match="add the markers"):
        schema.fill_blocks("no markers here\n", {"topics": "x"}, "docs/x.md")


def test_acl_option_prints_the_acl_the_broker_docs_show(capsys):
    assert schema.main(["--acl"]) == 0
    printed = capsys.readouterr().out
    assert printed == schema.acl() and f"```\n{printed}```" in (DOCS / "broker-setup.md").read_text()


def test_the_battery_units_of_the_api_are_the_ones_the_bridge_reports_in():
    # hubd republishes what the bridge's `device` messages say: their units must be the API's, or
    # a valid report becomes an invalid retained state (the lock kinds: tests/hubd/test_battery.py).
    assert {unit.value for unit in BatteryUnit} == set(messages.UNITS)
