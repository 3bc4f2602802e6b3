"""Deciding: sliding event-time windows per rule and key, and the decisions they lead to."""
