from __future__ import annotations

from django.urls import path

from . import views

app_name = "portal"

urlpatterns = [
    path("<slug:slug>/login/", views.login, name="login"),
    path("<slug:slug>/login/code/", views.login_code, name="login_code"),
    path("<slug:slug>/logout/", views.logout, name="logout"),
    path("<slug:slug>/", views.home, name="home"),
    path("<slug:slug>/card.svg", views.card_qr, name="card_qr"),
    path("<slug:slug>/points/", views.points, name="points"),
    path("<slug:slug>/coupons/", views.coupons, name="coupons"),
    path("<slug:slug>/coupons/<int:coupon_id>.svg", views.coupon_qr, name="coupon_qr"),
    path("<slug:slug>/offers/", views.offers_page, name="offers"),
    path("<slug:slug>/offers/<int:offer_id>/clip/", views.offer_clip, name="offer_clip"),
    path("<slug:slug>/tasks/", views.tasks, name="tasks"),
    path("<slug:slug>/check-in/", views.check_in, name="check_in"),
    path("<slug:slug>/leaderboards/", views.leaderboards, name="leaderboards"),
    path("<slug:slug>/claim/<str:code>/", views.claim, name="claim"),
    path("<slug:slug>/share/<str:code>/", views.share, name="share"),
]
