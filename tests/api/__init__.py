"""Tests of studio/api."""
