"""Experiments: each a small module on the shared machinery in jobs.py and rundir.py."""
