"""One module per command's work: `plan` (also the planning every command shares), `build`
(a whole run), `publish` (its targets), `prune`."""
