"""Tests of hubctl/ (the layout of tests/ mirrors the packages)."""
