"""Tests of hubapi/ (the layout of tests/ mirrors the packages)."""
