from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "shequn.console"
    label = "console"
