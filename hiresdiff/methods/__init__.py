"""One file per method: a config dataclass that validates itself and pure functions over denoisers."""
