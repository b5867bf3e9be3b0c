"""Grants that lapse: clearance grants with an end date, NDA renewal, organizations'
re-vetting, and the warning e-mails before each lapses."""
