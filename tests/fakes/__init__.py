"""Test doubles shared by the test tiers (e.g. ``transport``: a fake HTTP transport and clock)."""
