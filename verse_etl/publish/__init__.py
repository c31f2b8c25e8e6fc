"""What happens to a built dataset: URL builds staged then published, pruning, the dataset card, the
workspace lock, releases, remotes and the DVC pipeline."""
