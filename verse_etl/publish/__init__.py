"""What happens to a built dataset: URL builds staged then published, pruning, the dataset card, the
workspace lock, the build stamp, releases, remotes and the DVC pipeline."""
