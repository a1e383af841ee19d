"""Developer tooling that runs from a checkout, not on Kaggle: `kaggle` assembles the upload folders
(`imc-lib kaggle build`). Left out of the Kaggle wheel, which carries only the runtime stages."""
