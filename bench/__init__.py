"""Benchmarks run by hand (bench/README.md); a package so that tests import ``bench.dimse_scu``.

The scripts insert the repository root into ``sys.path`` themselves. Never put ``bench/`` itself
on ``sys.path``: ``bench/mpps.py`` would shadow the project's ``mpps`` package.
"""
