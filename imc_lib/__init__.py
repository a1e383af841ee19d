"""imc_lib: from folders of unordered photos to camera poses and an IMC 2024 or 2025 submission.csv.

Stages, in pipeline order (each a module with `confs` and `main(conf, ...)`):
pairs -> features -> matching -> reconstruction -> submission; `metric` scores the result.
"""

__version__ = "0.1.0"
