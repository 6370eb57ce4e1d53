"""Tests of meerkat_runtime.store."""
