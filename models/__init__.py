"""Topic and sentiment classifiers: artifacts on disk and the `Scorer` that serves them."""
