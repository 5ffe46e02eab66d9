"""Devices: every device hubd hears of (registry), battery levels and warnings (battery), and the
hub's health snapshot (health)."""
