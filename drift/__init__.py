"""Drift watch: the stream's hourly class mix, confidence and input statistics against the
training data, by population stability index."""
