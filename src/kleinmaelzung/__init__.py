"""Kleinmaelzung: connect laboratory instruments to the people who use them."""

__version__ = "0.1.0"
