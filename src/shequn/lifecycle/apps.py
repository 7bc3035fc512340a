from django.apps import AppConfig


class LifecycleConfig(AppConfig):
    name = "shequn.lifecycle"
    label = "lifecycle"

    def ready(self) -> None:
        from shequn.core import cache
        from shequn.core.services import WORKSPACE_INITIALIZERS

        from .models import LifecycleVersion
        from .services import VERSION_SOURCE, install_defaults

        cache.register(VERSION_SOURCE, LifecycleVersion)

        if install_defaults not in WORKSPACE_INITIALIZERS:
            WORKSPACE_INITIALIZERS.append(install_defaults)
