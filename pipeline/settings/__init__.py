"""What a run is asked to do: built-in defaults, what CI derives, the config file, the
environment and flags, merged into one `Settings` (`resolve`); and its build secrets,
from their references to the values read once per run (`secrets`)."""
