"""Measuring one case: run.py dispatches by mode to speed.py (fwd, fwdbwd) or decode.py (prefill, decode);
timer.py, memory.py, cost.py and measure.py are the shared measurement helpers; generate.py backs `ssmbench generate`.
"""
