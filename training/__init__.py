"""Baselines, Optuna tuning, MLflow tracking, evaluation and champion registration."""
