"""The web app for recipients and administrators (issue 13; docs/web.md)."""

from smdp.server.web.api import WebApp

__all__ = ["WebApp"]
