"""Checkers by name. Each module registers its checkers in CHECKS."""
