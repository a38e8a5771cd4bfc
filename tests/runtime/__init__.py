"""Tests of studio/runtime."""
