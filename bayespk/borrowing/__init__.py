"""Borrowing prior information (placeholder, filled below)."""
