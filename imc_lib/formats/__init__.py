"""The competition's formats and the run's outputs: data layouts, submission, metric, export, report."""
