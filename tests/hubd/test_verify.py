"""hubd.access.verify: every rejection reason from real signed tokens, and acceptance of a good one."""

from __future__ import annotations

import base64
import json
import time

import pytest
from joserfc import jws
from joserfc.jwk import OctKey, OKPKey
from joserfc.jws import JWSRegistry

from hubapi import signing
from hubapi.models import CommandClaims, RejectReason
from hubd.access.verify import MAX_COMMAND_BYTES, Rejection, Verified, Verifier
from tests.conftest import HUB, LOCKS


#: "front" can unlatch (the default test command), "keybox" cannot.
LOCK_KINDS = {LOCKS[0]: "in_cylinder", LOCKS[1]: "key_box"}


@pytest.fixture
def seen() -> set[str]:
    """The replay guard the verifier reads (the daemon's is the durable journal)."""
    return set()


@pytest.fixture
def verifier(backend_key, seen):
    return Verifier(
        hub_id=HUB,
        keys={backend_key.kid: backend_key.private.public_key()},
        locks=LOCK_KINDS,
        clock_skew_s=5,
        max_validity_s=300,
        seen=seen,
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, claims: dict, signature: bytes = b"x" * 64) -> bytes:
    """A token assembled by hand, for shapes no well-behaved signer produces."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}".encode()


def reason_of(result) -> RejectReason:
    assert isinstance(result, Rejection), f"expected a rejection, got {result}"
    return result.reason


def test_valid_command_verifies_until_its_id_is_recorded_as_used(verifier, seen, backend_key, make_claims):
    claims = make_claims()
    token = backend_key.sign(claims).encode()
    result = verifier.verify(token, retained=False)
    assert isinstance(result, Verified)
    assert result.claims == claims and result.kid == backend_key.kid
    seen.add(claims.id)  # what the pipeline does durably when it accepts the command
    replay = verifier.verify(token, retained=False)
    assert reason_of(replay) is RejectReason.REPLAYED
    assert replay.verified and replay.actor == "staff-7" and replay.kid == backend_key.kid


def test_tampered_payload_fails_signature(verifier, backend_key, make_claims):
    header, _, signature = backend_key.sign(make_claims()).split(".")
    other = make_claims(lock="keybox").model_dump_json(exclude_none=True).encode()
    result = verifier.verify(f"{header}.{b64(other)}.{signature}".encode(), retained=False)
    assert reason_of(result) is RejectReason.BAD_SIGNATURE


def test_signature_by_other_key_under_known_kid_fails(verifier, backend_key, make_claims):
    token = signing.sign(make_claims(), signing.generate_private_key(), backend_key.kid)
    assert reason_of(verifier.verify(token.encode(), retained=False)) is RejectReason.BAD_SIGNATURE


def test_unknown_kid_is_rejected(verifier, backend_key, make_claims):
    token = signing.sign(make_claims(), backend_key.private, "rotated-away")
    assert reason_of(verifier.verify(token.encode(), retained=False)) is RejectReason.UNKNOWN_KEY


def test_missing_kid_is_malformed(verifier, backend_key, make_claims):
    payload = make_claims().model_dump_json(exclude_none=True)
    token = jws.serialize_compact({"alg": "Ed25519"}, payload, OKPKey.import_key(backend_key.private), registry=signing.REGISTRY)
    assert reason_of(verifier.verify(token.encode(), retained=False)) is RejectReason.MALFORMED


def test_expired_command_is_rejected(verifier, backend_key, make_claims):
    token = backend_key.sign(make_claims(now=time.time() - 100, ttl_s=30)).encode()
    result = verifier.verify(token, retained=False)
    assert reason_of(result) is RejectReason.EXPIRED


def test_expiry_tolerates_clock_skew(verifier, backend_key, make_claims):
    claims = make_claims(now=1_000_000, ttl_s=30)
    assert isinstance(verifier.verify(backend_key.sign(claims).encode(), retained=False, now=1_000_033), Verified)


def test_not_yet_valid_command_is_rejected(verifier, backend_key, make_claims):
    token = backend_key.sign(make_claims(now=time.time() + 60)).encode()
    assert reason_of(verifier.verify(token, retained=False)) is RejectReason.NOT_YET_VALID


def test_overlong_validity_window_is_refused(verifier, backend_key, make_claims):
    token = backend_key.sign(make_claims(ttl_s=3600)).encode()
    assert reason_of(verifier.verify(token, retained=False)) is RejectReason.MALFORMED


def test_command_for_another_hub_is_rejected(verifier, backend_key, make_claims):
    token = backend_key.sign(make_claims(hub="hub-other")).encode()
    assert reason_of(verifier.verify(token, retained=False)) is RejectReason.WRONG_HUB


def test_unknown_lock_is_rejected(verifier, backend_key, make_claims):
    token = backend_key.sign(make_claims(lock="garage")).encode()
    assert reason_of(verifier.verify(token, retained=False)) is RejectReason.UNKNOWN_LOCK


def test_unknown_action_is_unsupported(verifier, backend_key, make_claims):
    claims = make_claims().model_dump(mode="json", exclude_none=True) | {"action": "self_destruct"}
    token = jws.serialize_compact(
        {"alg": "Ed25519", "kid": backend_key.kid}, json.dumps(claims), OKPKey.import_key(backend_key.private), registry=signing.REGISTRY
    )
    result = verifier.verify(token.encode(), retained=False)
    assert reason_of(result) is RejectReason.UNSUPPORTED_ACTION
    assert result.command_id == claims["id"]


@pytest.mark.parametrize(("kind", "action", "supported"), [
    ("inside_turner", "unlatch", False), ("inside_turner", "unlock", True),
    ("in_cylinder", "unlatch", True), ("key_box", "unlatch", False), ("key_box", "unlock", True),
    ("entrance_door", "unlock", False), ("entrance_door", "lock", False), ("entrance_door", "unlatch", True),
    ("entrance_door", "status", True),
])
def test_action_the_lock_kind_cannot_do_is_unsupported(backend_key, make_claims, kind, action, supported):
    verifier = Verifier(hub_id=HUB, keys={backend_key.kid: backend_key.private.public_key()},
                        locks={"front": kind}, clock_skew_s=5, max_validity_s=300)
    result = verifier.verify(backend_key.sign(make_claims(action=action)).encode(), retained=False)
    if supported:
        assert isinstance(result, Verified)
    else:
        assert reason_of(result) is RejectReason.UNSUPPORTED_ACTION
        assert result.verified and result.action == action and result.lock == "front"


@pytest.mark.parametrize(("action", "supported"), [
    ("unlatch", False), ("unlock", True), ("lock", True), ("status", True)])
def test_an_action_the_locks_protocol_cannot_do_is_unsupported(backend_key, make_claims, action,
                                                               supported):
    """A dKey is an in-cylinder lock whose protocol has no unlatch: refused before it is
    accepted, as a kind's missing action is (the protocols map is live, as hubd's drivers')."""
    protocols: dict[str, str] = {}
    verifier = Verifier(hub_id=HUB, keys={backend_key.kid: backend_key.private.public_key()},
                        locks={"front": "in_cylinder"}, clock_skew_s=5, max_validity_s=300,
                        protocols=protocols)
    assert isinstance(verifier.verify(backend_key.sign(make_claims(action=action)).encode(),
                                      retained=False), Verified)
    protocols["front"] = "dkey"  # paired since
    result = verifier.verify(backend_key.sign(make_claims(action=action)).encode(), retained=False)
    if supported:
        assert isinstance(result, Verified)
    else:
        assert reason_of(result) is RejectReason.UNSUPPORTED_ACTION
        assert "dkey" in result.detail


def test_retained_command_is_rejected_even_if_valid(verifier, backend_key, make_claims):
    claims = make_claims()
    result = verifier.verify(backend_key.sign(claims).encode(), retained=True)
    assert reason_of(result) is RejectReason.RETAINED
    assert (result.command_id, result.reply_to) == (claims.id, claims.reply_to)
    # Refusing it did not use the id up: the same command sent properly still runs.
    assert isinstance(verifier.verify(backend_key.sign(claims).encode(), retained=False), Verified)


def test_alg_none_is_refused(verifier, backend_key, make_claims):
    claims = make_claims().model_dump(mode="json", exclude_none=True)
    token = raw_token({"alg": "none", "kid": backend_key.kid}, claims, b"")
    assert reason_of(verifier.verify(token, retained=False)) is RejectReason.BAD_SIGNATURE


def test_hs256_signed_with_the_public_key_is_refused(verifier, backend_key, make_claims):
    # The classic key-confusion attack: an HMAC "signed" with the verifier's public key bytes.
    secret = OctKey.import_key(signing.public_key_text(backend_key.private).encode())
    payload = make_claims().model_dump_json(exclude_none=True)
    token = jws.serialize_compact(
        {"alg": "HS256", "kid": backend_key.kid}, payload, secret, registry=JWSRegistry(algorithms=["HS256"])
    )
    assert reason_of(verifier.verify(token.encode(), retained=False)) is RejectReason.BAD_SIGNATURE


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_eddsa_alg_is_refused(verifier, backend_key, make_claims):
    payload = make_claims().model_dump_json(exclude_none=True)
    token = jws.serialize_compact(
        {"alg": "EdDSA", "kid": backend_key.kid}, payload, OKPKey.import_key(backend_key.private),
        registry=JWSRegistry(algorithms=["EdDSA"]),
    )
    assert reason_of(verifier.verify(token.encode(), retained=False)) is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "payload",
    [b"", b"hello", b"\xff\xfe\x00", b"a.b.c", b"{}", b"x" * (MAX_COMMAND_BYTES + 1), b"..", b"eyJhbGciOiJFZDI1NTE5In0.e30."],
    ids=["empty", "text", "binary", "garbage-segments", "json", "oversized", "dots", "empty-claims"],
)
def test_garbage_is_malformed(verifier, payload):
    result = verifier.verify(payload, retained=False)
    assert reason_of(result) is RejectReason.MALFORMED
    assert result.command_id is None


def test_signed_claims_missing_fields_are_malformed(verifier, backend_key):
    token = jws.serialize_compact(
        {"alg": "Ed25519", "kid": backend_key.kid}, json.dumps({"id": "abc", "hub": HUB}),
        OKPKey.import_key(backend_key.private), registry=signing.REGISTRY,
    )
    result = verifier.verify(token.encode(), retained=False)
    assert reason_of(result) is RejectReason.MALFORMED
    assert result.command_id == "abc"


def test_staff_without_assignment_is_malformed(verifier, backend_key, make_claims):
    claims = make_claims().model_dump(mode="json", exclude_none=True)
    del claims["assignment"]
    token = jws.serialize_compact(
        {"alg": "Ed25519", "kid": backend_key.kid}, json.dumps(claims), OKPKey.import_key(backend_key.private),
        registry=signing.REGISTRY,
    )
    assert reason_of(verifier.verify(token.encode(), retained=False)) is RejectReason.MALFORMED


def test_rejected_command_keeps_unverified_reply_hint(verifier, backend_key, make_claims):
    claims = make_claims(hub="hub-other")
    result = verifier.verify(backend_key.sign(claims).encode(), retained=False)
    assert isinstance(result, Rejection)
    assert result.command_id == claims.id and result.reply_to == claims.reply_to and result.lock == "front"


def test_badly_signed_command_keeps_what_it_claims_marked_unverified(verifier, backend_key, make_claims):
    claims = make_claims()
    token = signing.sign(claims, signing.generate_private_key(), backend_key.kid)
    result = verifier.verify(token.encode(), retained=False)
    assert reason_of(result) is RejectReason.BAD_SIGNATURE
    assert not result.verified
    assert (result.command_id, result.lock, result.action, result.actor, result.role, result.assignment, result.kid) == (
        claims.id, "front", "unlatch", "staff-7", "staff", "visit-42", backend_key.kid)


def test_claims_round_trip_through_signing(backend_key, make_claims):
    claims = make_claims()
    token = backend_key.sign(claims)
    signed = jws.deserialize_compact(token, OKPKey.import_key(backend_key.private.public_key()), registry=signing.REGISTRY)
    assert signed.headers() == {"alg": "Ed25519", "kid": backend_key.kid, "typ": "hubcmd+jws"}
    assert CommandClaims.model_validate_json(signed.payload) == claims
