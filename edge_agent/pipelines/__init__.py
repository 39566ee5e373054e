"""Pipelines: plain stages over driver readings, one package per profile."""
