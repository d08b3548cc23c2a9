"""Image corpora: sources (folders, CIFAR batches) -> patch grids -> DataModules."""
