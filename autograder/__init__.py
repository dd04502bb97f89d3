"""Instructor tooling around nbgrader: release, grade, feedback, export, demo.

Run ``python -m autograder --help``.
"""
