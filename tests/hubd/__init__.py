"""Tests of hubd/ (the layout of tests/ mirrors the packages)."""
