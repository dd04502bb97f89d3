# nbgrader configuration of this course: read by `nbgrader ...`, JupyterLab's Validate
# button and the formgrader. All settings live in autograder/config.py so that
# `python -m autograder` and plain nbgrader grade alike.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from autograder.config import apply  # noqa: E402

c = get_config()  # noqa: F821
apply(c, os.path.dirname(os.path.abspath(__file__)))
