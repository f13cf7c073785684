"""Figures of every analysis' tables (matplotlib, written atomically as PNG)."""
