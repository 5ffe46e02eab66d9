"""Tests of firmware/ (the layout of tests/ mirrors the packages)."""
