from setuptools import find_packages, setup

setup(
    name="imc_lib",
    version="0.1.0",
    description="Image Matching Challenge 2024 pipeline: photos -> camera poses -> submission.csv",
    packages=find_packages(include=["imc_lib", "imc_lib.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "kornia>=0.8.1",
        "pycolmap>=3.12",
        "transformers>=4.40",
        "h5py>=3.8",
        "numpy>=1.24",
        "pandas>=2.0",
        "scipy>=1.10",
        "pillow>=10",
        "tqdm>=4.60",
    ],
    extras_require={
        "viz": ["matplotlib>=3.7", "plotly>=5.18"],
        "notebooks": ["matplotlib>=3.7", "plotly>=5.18", "jupytext>=1.16", "nbclient>=0.10", "nbconvert>=7",
                      "ipykernel>=6"],
        "app": ["streamlit>=1.35", "matplotlib>=3.7", "plotly>=5.18"],
        "test": ["pytest>=7", "scipy>=1.10", "matplotlib>=3.7", "plotly>=5.18", "jupytext>=1.16",
                 "nbclient>=0.10", "nbconvert>=7", "ipykernel>=6", "streamlit>=1.35", "selenium>=4.10",
                 "setuptools>=70.1"],
    },
    entry_points={"console_scripts": ["imc-lib=imc_lib.cli:main"]},
)
