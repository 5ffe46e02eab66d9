"""Tests of simulator/ (the layout of tests/ mirrors the packages)."""
