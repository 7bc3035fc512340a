"""Shequn (社群): community-marketing and social-CRM platform."""

__version__ = "0.1.0"
