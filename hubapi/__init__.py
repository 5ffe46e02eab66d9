"""The hub's MQTT API, version 1: what a backend needs to talk to hubs, without the daemon.

- :mod:`hubapi.topics`: the topic tree (``hubs/{hub}/v1/...``).
- :mod:`hubapi.models`: every payload as a pydantic model (command claims, answers, lock state, online,
  the hash-chained audit entries and range requests for them).
- :mod:`hubapi.signing`: Ed25519 keys and signing commands as compact JWS (alg ``Ed25519``).
- :mod:`hubapi.client`: an asyncio MQTT client that sends a signed command and yields its answers,
  and asks a hub for a range of its audit trail again.
"""
