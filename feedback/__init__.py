"""Analyst feedback: corrected labels on scored items, stored beside the model's answer."""
