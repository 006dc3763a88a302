"""Evaluate what was trained (`lmforge eval`): tasks read from a task file or an inline form (tasks.py), each
run on a model loaded once with the chat template it was trained with (run.py), reported as a table and JSON."""
