"""hubd's retained presence after a reconnect: an ``online`` the last connection left
unacknowledged is not sent again after the new connection's (hubd/mqtt.py
HubMqtt._drop_stale_presence). Without it, auto's move back to broadband left the retained
online saying ``lte`` (hil_tests/test_uplink.py, under load): paho sends every unacknowledged
QoS 1 publish again after ``on_connect`` returns, so the old path's ``online`` came last.

The drop reaches into paho's private queue (``_out_messages``, ``_out_message_mutex``); these
tests fail if a paho release moves it, as tests/hubd/test_mqtt_paths.py does for the seam."""

from __future__ import annotations

import paho.mqtt.client as paho

from hubapi import topics
from hubd.config import MqttConfig
from hubd.mqtt import HubMqtt

HUB = "hub-presence"


def test_paho_sends_unacknowledged_publishes_again_after_on_connect_from_its_queue() -> None:
    # What the drop relies on: a QoS 1 publish paho could not send waits in _out_messages (keyed
    # by mid, each with its topic) under _out_message_mutex, to be sent after the next CONNACK.
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="probe", protocol=paho.MQTTv5)
    info = client.publish("a/topic", b"x", qos=1)
    with client._out_message_mutex:
        assert [(mid, m.topic) for mid, m in client._out_messages.items()] == [(info.mid, "a/topic")]


def test_a_stale_online_is_dropped_and_every_other_publish_kept() -> None:
    mqtt = HubMqtt(MqttConfig(host="127.0.0.1", port=1), hub_id=HUB, client_id=f"hubd-{HUB}")
    client = mqtt._client
    stale = client.publish(topics.online(HUB), b'{"status":"online","uplink":"lte"}', qos=1, retain=True)
    mqtt._register_ack(stale.mid, None)
    answer = client.publish(topics.answers(HUB), b"an answer", qos=1)
    mqtt._drop_stale_presence(client)
    with client._out_message_mutex:
        assert [(mid, m.topic) for mid, m in client._out_messages.items()] == [(answer.mid, topics.answers(HUB))]
    assert stale.mid not in mqtt._acks, "no ack is awaited for a publish that will never go"
