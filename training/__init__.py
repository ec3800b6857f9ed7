"""Training, evaluation, export and distillation of the topic and sentiment classifiers."""
