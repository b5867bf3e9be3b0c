"""Watches, @mentions, the in-app notification list and e-mail delivery."""
