"""Evaluation of trained models: FID, IS and precision/recall on classifier features, likelihood
bounds, latent-space metrics, plots and reports. Imports the harness, engine, models and losses."""
