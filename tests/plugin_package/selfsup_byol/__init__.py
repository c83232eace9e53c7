"""An example plug-in package for selfsup: BYOL, registered through the ``selfsup.methods`` entry
point of its ``pyproject.toml``."""
