"""An example plug-in package for selfsup: NNCLR, registered through the ``selfsup.methods`` entry
point of its ``pyproject.toml``."""
