"""Conversations: the keyword auto-reply bot (C6)."""
