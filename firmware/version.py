"""The firmware's version, reported to hubd in the link HELLO."""

VERSION = "0.1.0"
