"""Engines nobody here wrote, run as their makers ship them, for the validator to measure.

Each subpackage holds what a test or a user needs to serve one such engine on loopback: where
its build is cached and a small random-weight model in its own format (issue #28).
"""
