"""Tests of the MPPS domain (mpps)."""
