"""Console scripts of the runtime package (fusion-init, fusion-info, fusion-infer)."""
