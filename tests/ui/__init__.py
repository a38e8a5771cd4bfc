"""Tests of studio/ui."""
