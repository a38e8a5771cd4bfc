"""Tests of studio/db."""
