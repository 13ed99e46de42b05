"""Measurement: timing (timer.py), memory (memory.py), speed cases (speed.py)."""
