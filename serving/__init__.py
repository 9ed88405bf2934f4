"""BentoML prediction service for the champion growth model."""
