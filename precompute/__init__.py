"""Offline precompute for the galaxy explorer: readers, mock survey, preparation, models, bundle."""
