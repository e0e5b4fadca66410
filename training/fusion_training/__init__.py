"""fusion_training: the offline module (datasets, training, metrics, export) for fusion_perception."""
