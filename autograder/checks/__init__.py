"""Hidden checks of the assignments, one file per assignment (loaded by autograder.trusted.load_checks)."""
