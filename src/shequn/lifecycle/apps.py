from django.apps import AppConfig


class LifecycleConfig(AppConfig):
    name = "shequn.lifecycle"
    label = "lifecycle"

    def ready(self) -> None:
        from shequn.core.services import WORKSPACE_INITIALIZERS

        from .services import install_defaults

        if install_defaults not in WORKSPACE_INITIALIZERS:
            WORKSPACE_INITIALIZERS.append(install_defaults)
