from ninja import NinjaAPI

api = NinjaAPI(title="Shequn API", version="1")
