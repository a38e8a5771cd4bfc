"""Tests of studio/services."""
