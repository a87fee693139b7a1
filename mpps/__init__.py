"""mpps."""
