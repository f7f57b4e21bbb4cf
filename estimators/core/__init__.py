"""Base types and shared machinery: problems, estimators, the registry, random streams."""
