"""Offline text worlds behind one Gymnasium-style interface (``envs.text.base``)."""
