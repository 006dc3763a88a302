"""`lmforge plan`: validate a recipe in seconds and estimate its memory and speed per device, without training.

validate.py checks what can be checked, counts.py counts parameters on the meta device, memory.py and
speed.py estimate, report.py prints, run.py puts them together."""
