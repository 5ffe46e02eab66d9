"""Tests of wire/ (the layout of tests/ mirrors the packages)."""
