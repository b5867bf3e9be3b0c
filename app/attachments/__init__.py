"""Encrypted file attachments of findings."""
