"""The alarm path: safety alarms from the bridge, stored durably and delivered to the alarm centre
(delivery)."""
