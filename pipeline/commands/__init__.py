"""One module per command's work: `build` (a whole run), `prune`, and `publish`'s targets."""
