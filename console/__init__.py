"""The operator console: pages and actions served by the daemon at /console.

``main.create_app`` registers :func:`blueprint`; it answers 404 unless ``CONSOLE_TOKEN``
or ``CONSOLE_TRUSTED_PROXY`` is set (:func:`enabled`). Templates and static files are
in this package (no build step, nothing from a CDN). docs/console.md explains each page.
"""

from console.views import blueprint, enabled

__all__ = ["blueprint", "enabled"]
