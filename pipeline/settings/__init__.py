"""What a run is asked to do: the CI it runs in, the config file, flags, and build secrets,
merged into one `Settings`."""
