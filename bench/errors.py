"""The one exception type for bad input: printed as a single line, exit code 2."""


class ConfigError(ValueError):
    """A config value that is not allowed. The message names the key, the value and what is allowed."""


def bad(key: str, value, allowed: str) -> ConfigError:
    """Build the standard message: ``key=value: allowed``."""
    return ConfigError(f"{key}={value!r} is not allowed: {allowed}")
