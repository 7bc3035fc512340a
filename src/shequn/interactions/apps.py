from django.apps import AppConfig


class InteractionsConfig(AppConfig):
    name = "shequn.interactions"
    label = "interactions"
