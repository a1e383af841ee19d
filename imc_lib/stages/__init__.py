"""The pipeline's stages, one module each with a `main(conf, ...)` over paths and a `confs` dict."""
