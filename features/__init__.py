"""Data contract, validation, school aggregates and the model's feature transform."""
